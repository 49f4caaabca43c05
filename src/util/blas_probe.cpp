#include "anomalysd/util/blas_probe.h"

#include <dlfcn.h>
#include <link.h>

#include <climits>
#include <cstdlib>
#include <vector>

namespace anomalysd {

namespace {

int collect_blas(struct dl_phdr_info* info, size_t, void* out) {
  const std::string name = info->dlpi_name ? info->dlpi_name : "";
  const auto slash = name.rfind('/');
  const std::string base = slash == std::string::npos ? name : name.substr(slash + 1);
  if (base.find("blas") != std::string::npos || base.find("mkl_core") != std::string::npos ||
      base.find("mkl_rt") != std::string::npos) {
    char resolved[PATH_MAX];
    static_cast<std::vector<std::string>*>(out)->push_back(::realpath(name.c_str(), resolved) ? resolved : name);
  }
  return 0;
}

}  // namespace

std::string loaded_blas() {
  std::vector<std::string> libs;
  dl_iterate_phdr(collect_blas, &libs);
  std::string out;
  for (const auto& l : libs) out += (out.empty() ? "" : ", ") + l;
  // OpenBLAS describes its build (kernel, threading) through openblas_get_config.
  using ConfigFn = char* (*)();
  if (auto fn = reinterpret_cast<ConfigFn>(::dlsym(RTLD_DEFAULT, "openblas_get_config"))) out += std::string(" (") + fn() + ")";
  // Debian's reference BLAS lives in .../blas/libblas.so.3; optimised ones in their own folders.
  if (out.find("/blas/libblas.so") != std::string::npos)
    out += " [the reference BLAS: matmul ~30x slower; run scripts/install-deps.sh]";
  return out;
}

}  // namespace anomalysd

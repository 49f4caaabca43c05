#include "anomalysd/core/version.h"

#include <dlfcn.h>
#include <link.h>

#include <climits>
#include <cstdlib>
#include <sstream>
#include <vector>

#include <torch/torch.h>
#include <torch/version.h>

#include "anomalysd/models/attention_kernels.h"
#include "anomalysd/models/cpu_gemm.h"

#include "anomalysd/core/runtime.h"
#include "anomalysd/core/distributed.h"
#include "anomalysd_version.h"  // generated: ANOMALYSD_VERSION

namespace anomalysd {

const char* project_version() { return ANOMALYSD_VERSION; }

std::string libtorch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." + std::to_string(TORCH_VERSION_PATCH);
}

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

std::string version_report() {
  std::ostringstream s;
  s << "anomalysd " << project_version() << "\n";
  s << "LibTorch " << libtorch_version() << "\n";
  const std::string blas = loaded_blas();
  s << "BLAS: " << (blas.empty() ? "none loaded (or statically linked, e.g. MKL)" : blas) << "\n";
  s << "CPU threads: " << default_thread_count() << " cores (LibTorch default " << at::get_num_threads() << ")\n";
  // What a run with the default config (threads: 0, cpu_gemm: auto, attention: auto) uses.
  at::set_num_threads(default_thread_count());
  const GemmChoice gemm = choose_cpu_gemm("auto", default_thread_count());
  s << "CPU GEMM (cpu_gemm: auto): " << gemm_backend_name(gemm.backend) << " — " << gemm.reason << "\n";
  s << "Attention (attention: auto): "
    << (sdpa_available() ? "sdpa (LibTorch's scaled_dot_product_attention)"
                         : "fused CPU kernel for inference, chunked under autograd (LibTorch < 2.0 has no SDPA)")
    << "; chunked for bfloat16/float16 on the CPU\n";
  const std::string bf16 = cpu_native_bf16();
  s << "CPU bfloat16: " << (bf16.empty() ? "emulated (no AVX512-BF16 / AMX-BF16): dtype bfloat16 is slower than float32 here"
                                          : "native (" + bf16 + "): dtype bfloat16 runs the SD parts on it") << "\n";
  s << "Distributed: " << distributed_support() << "\n";
  if (torch::cuda::is_available()) {
    s << "CUDA: available, " << torch::cuda::device_count() << " device(s)";
    s << (torch::cuda::cudnn_is_available() ? ", cuDNN available" : "") << "\n";
  } else {
    s << "CUDA: not available\n";
  }
  return s.str();
}

}  // namespace anomalysd

#include "anomalysd/core/version.h"

#include <cstdlib>
#include <sstream>
#include <vector>

#include <torch/torch.h>
#include <torch/version.h>

#include "anomalysd/models/attention_kernels.h"
#include "anomalysd/models/cpu_gemm.h"

#include "anomalysd/core/runtime.h"
#include "anomalysd/core/distributed.h"
#include "anomalysd/util/blas_probe.h"
#include "anomalysd_version.h"  // generated: ANOMALYSD_VERSION

namespace anomalysd {

const char* project_version() { return ANOMALYSD_VERSION; }

std::string libtorch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." + std::to_string(TORCH_VERSION_PATCH);
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
  const GemmChoice gemm = choose_cpu_gemm("auto");
  s << "CPU GEMM (cpu_gemm: auto): " << gemm_backend_name(gemm.backend) << " — " << gemm.reason << "\n";
  s << "Attention (attention: auto): "
    << (sdpa_available() ? "sdpa (LibTorch's scaled_dot_product_attention)"
                         : "fused CPU kernel for inference, chunked under autograd (LibTorch < 2.0 has no SDPA)")
    << "; chunked for bfloat16/float16 on the CPU\n";
  const std::string bf16 = cpu_native_bf16();
  RuntimeConfig automatic;
  automatic.device = "cpu";
  automatic.dtype = "auto";
  std::string why;
  const std::string chosen = resolved_dtype(automatic, &why);
  s << "CPU bfloat16: " << (bf16.empty() ? "no native instructions (no AVX512-BF16 / AMX-BF16): emulated, slower than float32" : "instructions " + bf16)
    << "\n";
  s << "dtype auto on the CPU: " << chosen << " — " << why << "\n";
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

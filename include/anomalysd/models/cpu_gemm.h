// Which GEMM runs the float32 Linear layers and the fused attention's products on the CPU: oneDNN
// (LibTorch's bundled mkldnn) or the BLAS that LibTorch links (OpenBLAS on Debian). Neither wins
// everywhere: Debian's OpenBLAS 0.3.21 does not know recent Xeons and falls back to its SSE3
// "Prescott" kernel (oneDNN ~3× faster there), while on AMD EPYC it runs its Zen kernel and matches
// oneDNN. So the choice is measured once per machine (CPU, BLAS build, LibTorch version; at the
// first run's thread count, then kept for every thread count) and kept in a cache file, written
// under a lock so that concurrent first runs agree; the config key `cpu_gemm` forces either. A
// cached choice keeps two runs on one machine identical.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

namespace anomalysd {

enum class GemmBackend { OneDnn, Blas };

std::string gemm_backend_name(GemmBackend backend);  // "oneDNN" | "BLAS"

// Makes `backend` the one linear() uses (process-wide).
void use_cpu_gemm(GemmBackend backend);
GemmBackend cpu_gemm();

// $ANOMALYSD_CACHE_DIR/cpu-gemm.json, else $XDG_CACHE_HOME/anomalysd/…, else ~/.cache/anomalysd/….
std::string gemm_cache_path();

// GFLOP/s of a UNet-shaped Linear (1024 tokens × 640 → 1280) through each backend, best of 5.
struct GemmMeasurement {
  double onednn_gflops = 0;
  double blas_gflops = 0;
};
GemmMeasurement measure_cpu_gemm();

struct GemmChoice {
  GemmBackend backend = GemmBackend::Blas;
  std::string reason;        // one line: forced by the config, measured now, or read from the cache
  GemmMeasurement measured;  // behind an `auto` choice (zeros: not measured)
};

// setting: auto | onednn | blas. `auto` reads the cache (gemm_cache_path()) or measures and writes
// it; a cache that cannot be written only costs a re-measurement next time. `onednn` on a LibTorch
// without mkldnn is an InputError.
GemmChoice choose_cpu_gemm(const std::string& setting);

// x · weightᵀ + bias through the chosen backend. oneDNN takes CPU float32 without autograd and at
// least 16 rows; everything else (training, CUDA, other dtypes, tiny products) uses LibTorch's own.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

}  // namespace anomalysd

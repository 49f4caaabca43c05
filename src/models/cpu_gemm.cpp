// The Linear layers' CPU GEMM switch (LibTorch only; the choice itself is cpu_gemm_choice.cpp).
#include "anomalysd/models/cpu_gemm.h"

#include <algorithm>
#include <atomic>

#include <torch/torch.h>

namespace anomalysd {

namespace {
std::atomic<bool> g_onednn{true};
}  // namespace

std::string gemm_backend_name(GemmBackend backend) { return backend == GemmBackend::OneDnn ? "oneDNN" : "BLAS"; }

void use_cpu_gemm(GemmBackend backend) { g_onednn = backend == GemmBackend::OneDnn; }
GemmBackend cpu_gemm() { return g_onednn ? GemmBackend::OneDnn : GemmBackend::Blas; }

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const int64_t rows = x.numel() / std::max<int64_t>(1, x.size(-1));
  // oneDNN needs plain float32 CPU tensors and has no autograd here; tiny products are not worth
  // the layout conversions.
  if (g_onednn && at::hasMKLDNN() && !torch::GradMode::is_enabled() && x.device().is_cpu() && x.scalar_type() == torch::kFloat &&
      weight.scalar_type() == torch::kFloat && rows >= 16) {
    std::vector<int64_t> out_shape = x.sizes().vec();
    out_shape.back() = weight.size(0);
    const torch::Tensor x2 = x.reshape({rows, x.size(-1)}).contiguous();
    const c10::optional<torch::Tensor> b = bias.defined() ? c10::optional<torch::Tensor>(bias) : c10::nullopt;
    return at::mkldnn_linear(x2.to_mkldnn(), weight.contiguous(), b).to_dense().view(out_shape);
  }
  if (bias.defined() && x.dim() > 2 && x.size(-1) == weight.size(1)) {
    // The bias rides in the GEMM (addmm), as LibTorch ≥ 2 does for 3-D input; 1.13 runs matmul
    // and then a separate pass adding the bias.
    std::vector<int64_t> out_shape = x.sizes().vec();
    out_shape.back() = weight.size(0);
    return at::addmm(bias, x.reshape({rows, x.size(-1)}), weight.t()).view(out_shape);
  }
  return torch::nn::functional::linear(x, weight, bias);
}

}  // namespace anomalysd

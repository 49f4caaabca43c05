#include "anomalysd/models/norms.h"

#include <torch/version.h>

namespace anomalysd {

namespace F = torch::nn::functional;

namespace {

[[maybe_unused]] bool is_half(const torch::Tensor& t) { return t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kHalf; }
torch::Tensor as_float(const torch::Tensor& t) { return t.defined() ? t.to(torch::kFloat) : t; }

}  // namespace

torch::Tensor GroupNormImpl::forward(const torch::Tensor& x) {
  const bool mixed = weight.defined() && weight.scalar_type() != x.scalar_type();
#if TORCH_VERSION_MAJOR >= 2
  const bool upcast = mixed;  // its CPU kernels accumulate in float (measured right at every size)
#else
  const bool upcast = mixed || (x.is_cpu() && is_half(x));
#endif
  if (!upcast) return torch::nn::GroupNormImpl::forward(x);
  const auto& o = options;
  const torch::Tensor y =
      F::group_norm(x.to(torch::kFloat), F::GroupNormFuncOptions(o.num_groups()).weight(as_float(weight)).bias(as_float(bias)).eps(o.eps()));
  return mixed ? y : y.to(x.scalar_type());
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) {
  if (!weight.defined() || weight.scalar_type() == x.scalar_type()) return torch::nn::LayerNormImpl::forward(x);
  const auto& o = options;
  return F::layer_norm(x.to(torch::kFloat), F::LayerNormFuncOptions(o.normalized_shape()).weight(as_float(weight)).bias(as_float(bias)).eps(o.eps()));
}

}  // namespace anomalysd

// Normalisation layers with the state-dict names of torch::nn's, made safe for half precision on
// the CPU: statistics in float32 where a LibTorch CPU kernel would get them wrong (GroupNorm on
// 1.13) or refuse mixed dtypes (autocast: bfloat16 activations, float32 weights).
#pragma once

#include <torch/torch.h>

namespace anomalysd {

// torch::nn::GroupNorm (same parameters, same state-dict names) whose statistics are float32 on the
// CPU in half precision: LibTorch 1.13's CPU GroupNorm on channels-last bfloat16 input accumulates
// in bfloat16 and, from 1,024 positions per group on (the demo VAE's 32² and 64² levels, every
// real-size UNet and VAE level), is wrong by whole units, not by rounding (README, "Half
// precision"), so there it runs on a float32 copy. LibTorch 2's CPU kernels and CUDA's accumulate
// in float and run as they are. Mixed dtypes (autocast) run in float32 and return float32, as
// CUDA's autocast does for normalisations.
struct GroupNormImpl : torch::nn::GroupNormImpl {
  using torch::nn::GroupNormImpl::GroupNormImpl;
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(GroupNorm);

// torch::nn::LayerNorm that takes input in another dtype than its weights (CPU autocast: LibTorch
// 1.13's CPU kernel refuses bfloat16 input with float32 weights): computed in float32, returned in
// float32, as autocast's float32 list does on CUDA.
struct LayerNormImpl : torch::nn::LayerNormImpl {
  using torch::nn::LayerNormImpl::LayerNormImpl;
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(LayerNorm);

}  // namespace anomalysd

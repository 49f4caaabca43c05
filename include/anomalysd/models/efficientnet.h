// EfficientNet — port of torchvision 0.14 models/efficientnet.py (B0–B7), used as the frozen feature
// extractor of the prototype-guided mask (paper §4.3, eq. 12–13). State-dict names are
// torchvision's: features.0 … features.8 (stem, 7 MBConv stages, head), classifier.1.
//
// Legend: B batch, C channels, H×W image size (features.i has stride 2, 2, 4, 8, 16, 16, 32, 32, 32).
#pragma once

#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace anomalysd {

struct EfficientNetConfig {
  std::string name = "efficientnet_b6";
  double width_mult = 1.8;
  double depth_mult = 2.6;
  double bn_eps = 1e-3;  // torchvision uses 1e-3 for B5–B7, 1e-5 for B0–B4
  int64_t num_classes = 1000;

  static EfficientNetConfig b(int variant);  // 0..7, torchvision's settings
};

// torchvision's _make_divisible(v, 8).
int64_t make_divisible(double value, int64_t divisor = 8);

struct SqueezeExcitationImpl : torch::nn::Module {
  SqueezeExcitationImpl(int64_t channels, int64_t squeeze);
  torch::Tensor forward(const torch::Tensor& x);  // x · σ(fc2(silu(fc1(avgpool(x)))))
  torch::nn::Conv2d fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(SqueezeExcitation);

struct MBConvImpl : torch::nn::Module {
  MBConvImpl(int64_t expand_ratio, int64_t kernel, int64_t stride, int64_t in_channels, int64_t out_channels, double bn_eps);
  torch::Tensor forward(const torch::Tensor& x);  // stochastic depth is the identity at inference
  bool use_residual;
  torch::nn::Sequential block;
};
TORCH_MODULE(MBConv);

struct EfficientNetImpl : torch::nn::Module {
  explicit EfficientNetImpl(EfficientNetConfig config);

  // Outputs of features[i] for each requested i (applied in sequence up to the largest).
  std::map<int64_t, torch::Tensor> features_at(const torch::Tensor& x, const std::vector<int64_t>& taps);
  torch::Tensor forward(const torch::Tensor& x);  // logits [B, num_classes]

  EfficientNetConfig config;
  torch::nn::ModuleList features;
  torch::nn::Sequential classifier{nullptr};
};
TORCH_MODULE(EfficientNet);

// Random weights as torchvision initialises them (conv kaiming-normal fan_out, BN γ = 1, β = 0),
// then BatchNorm statistics calibrated on smooth noise images so that every stage's activations
// stay O(1) in eval mode (with LibTorch's default statistics they vanish through the stages).
// For tests and demos without downloadable weights (`anomalysd init-weights`). Seeds nothing:
// call torch::manual_seed first.
void init_random_efficientnet(EfficientNetImpl& net);

// ImageNet normalisation of images in [0, 1], as torchvision's weights expect.
torch::Tensor imagenet_normalize(const torch::Tensor& images);

// Builds the network and loads a safetensors file with torchvision's key names
// (scripts/convert_torchvision_weights.py writes one). `classifier.*` may be absent.
EfficientNet load_efficientnet(const std::string& weights, int variant = 6);

}  // namespace anomalysd

// AlexNet trunk (torchvision 0.14 `features.*`) and LPIPS v0.1 (richzhang/PerceptualSimilarity) —
// the perceptual distance of the anomaly score (paper eq. 16–17) and of the decoder's
// fine-tuning loss (eq. 9–10). Differentiable.
//
// Legend: B batch, H×W image size; the five taps are the ReLU outputs after features 1, 4, 7, 9, 11
// (64, 192, 384, 256, 256 channels).
#pragma once

#include <array>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace anomalysd {

struct AlexNetFeaturesImpl : torch::nn::Module {
  AlexNetFeaturesImpl();
  // The five LPIPS taps of x (ImageNet-style input, already scaled).
  std::vector<torch::Tensor> forward(const torch::Tensor& x);
  torch::nn::Sequential features{nullptr};  // torchvision's indices: conv at 0, 3, 6, 8, 10
};
TORCH_MODULE(AlexNetFeatures);

struct LpipsLinImpl : torch::nn::Module {  // NetLinLayer: Dropout (index 0, identity here), 1×1 conv without bias
  explicit LpipsLinImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Sequential model{nullptr};
};
TORCH_MODULE(LpipsLin);

struct LpipsOutput {
  std::array<torch::Tensor, 5> layer_maps;  // per-layer w·(φ̂(x) − φ̂(x̂))² at each tap's resolution, [B, 1, h, w]
  torch::Tensor value;                      // Σ_l spatial mean, [B, 1, 1, 1] (the LPIPS distance)
};

// φ̂ of images: the five taps unit-normalised over channels (float32), and the input size.
struct LpipsFeatures {
  std::array<torch::Tensor, 5> taps;
  int64_t height = 0, width = 0;
};

struct LpipsImpl : torch::nn::Module {
  LpipsImpl();
  // Images in [-1, 1] (or [0, 1] with normalize = true).
  LpipsOutput forward(const torch::Tensor& x0, const torch::Tensor& x1, bool normalize = false);
  // Eq. (16–17): Σ_l bilinear-upsampled per-layer maps at the input size, [B, 1, H, W].
  torch::Tensor distance_map(const torch::Tensor& x0, const torch::Tensor& x1, bool normalize = false);
  // The training loss (eq. 10): the LPIPS value per image, [B].
  torch::Tensor loss(const torch::Tensor& x0, const torch::Tensor& x1, bool normalize = false);
  // φ̂(x) alone, computed once for a test image that is compared with many inpaintings.
  LpipsFeatures features(const torch::Tensor& x, bool normalize = false);
  // distance_map(x, x1) with φ̂(x) given (reference: features of one image, [1, …]), x1 [B, 3, H, W]
  // -> [B, 1, H, W] float32.
  torch::Tensor distance_map_from(const LpipsFeatures& reference, const torch::Tensor& x1, bool normalize = false);
  // Layer l's w · (f0 − f1)², [B, 1, h, w] float32.
  torch::Tensor weighted_difference(int layer, const torch::Tensor& f0, const torch::Tensor& f1);

  AlexNetFeatures net{nullptr};
  LpipsLin lin0{nullptr}, lin1{nullptr}, lin2{nullptr}, lin3{nullptr}, lin4{nullptr};
};
TORCH_MODULE(Lpips);

// LPIPS's ScalingLayer, (x − shift) / scale, on images in [−1, 1] (or [0, 1] with normalize): the
// AlexNet trunk's input.
torch::Tensor lpips_scale_input(const torch::Tensor& x, bool normalize = false);

// φ̂: each feature vector of a tap [B, C, h, w] divided by its norm over channels (+1e-10), in
// float32 whatever the tap's dtype (an all-zero vector stays 0, never 0/0).
torch::Tensor unit_normalize(const torch::Tensor& tap);

// Loads the AlexNet trunk from `alexnet_weights` (torchvision names; `classifier.*` is ignored) and
// the five lins from `lin_weights` (lin{0..4}.model.1.weight; lpips' duplicate `lins.N.*` ignored).
Lpips load_lpips(const std::string& alexnet_weights, const std::string& lin_weights);
AlexNetFeatures load_alexnet(const std::string& alexnet_weights);

}  // namespace anomalysd

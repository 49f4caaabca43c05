// The distance D(x, x̂) between a test image and its inpaintings (paper §4.3, eq. 16–17): the
// LPIPS-style AlexNet map, and the interfaces the detector runs on, so that tests can plug in a
// hand-written distance.
//
// Legend: M inpaintings, H×W image size (model resolution).
#pragma once

#include <cstdint>
#include <functional>
#include <utility>

#include <torch/torch.h>

#include "anomalysd/models/alexnet_lpips.h"

namespace anomalysd {

// Eq. (16–17) for a batch of pairs: x, x̂ [M, 3, H, W] in [0, 1] -> D [M, 1, H, W].
using DistanceFn = std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& x_hat)>;

// The distance D(x, x̂) of one test image x to many inpaintings x̂: what depends on x alone
// (φ(x), the normalised AlexNet features of eq. 17) is computed once per image, in begin_image().
class ImageDistance {
 public:
  virtual ~ImageDistance() = default;
  // x [1, 3, H, W] in [0, 1], float32, on the device its inpaintings will come on.
  virtual void begin_image(const torch::Tensor& x) = 0;
  // x̂ [M, 3, H, W] in [0, 1] -> D [M, 1, H, W] float32, on x̂'s device.
  virtual torch::Tensor distance(const torch::Tensor& x_hat) = 0;
};

// A DistanceFn as an ImageDistance (x expanded to the batch at every call): for tests and
// distances without a per-image part.
class PairDistance : public ImageDistance {
 public:
  explicit PairDistance(DistanceFn fn) : fn_(std::move(fn)) {}
  void begin_image(const torch::Tensor& x) override { x_ = x; }
  torch::Tensor distance(const torch::Tensor& x_hat) override;

 private:
  DistanceFn fn_;
  torch::Tensor x_;
};

// Eq. (16–17): D = Σ_l ‖w_l ⊙ (φ̂_l(x) − φ̂_l(x̂))‖² upsampled to H×W, with φ̂(x) of the test image
// computed once per image, not once per mask. In float32 whatever the SD models' dtype: in half
// precision LPIPS's normalisation guard and its squared differences lose their digits.
//
// With `size` > 0 both images are bilinearly resized to size × size for AlexNet and the map is
// area-resized back: AlexNet's first layer has stride 4, so at a small model resolution (the
// demo's 64 px: a 15 × 15 first tap) the map is coarser than the defects.
class LpipsDistance : public ImageDistance {
 public:
  LpipsDistance(Lpips lpips, int64_t size) : lpips_(std::move(lpips)), size_(size) {}
  void begin_image(const torch::Tensor& x) override;
  torch::Tensor distance(const torch::Tensor& x_hat) override;

 private:
  torch::Tensor resized(const torch::Tensor& x) const;

  Lpips lpips_;
  int64_t size_ = 0, height_ = 0, width_ = 0;
  LpipsFeatures reference_;
};

}  // namespace anomalysd

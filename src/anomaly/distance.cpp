#include "anomalysd/anomaly/distance.h"

namespace anomalysd {

namespace F = torch::nn::functional;

torch::Tensor PairDistance::distance(const torch::Tensor& x_hat) {
  return fn_(x_.expand({x_hat.size(0), x_.size(1), x_.size(2), x_.size(3)}), x_hat);
}

void LpipsDistance::begin_image(const torch::Tensor& x) {
  height_ = x.size(2);
  width_ = x.size(3);
  reference_ = lpips_->features(resized(x.to(torch::kFloat)), /*normalize=*/true);  // φ̂(x), eq. (17)
}

torch::Tensor LpipsDistance::distance(const torch::Tensor& x_hat) {
  const torch::Tensor map = lpips_->distance_map_from(reference_, resized(x_hat.to(torch::kFloat)), /*normalize=*/true);  // eq. (16)
  if (map.size(2) == height_ && map.size(3) == width_) return map;
  return torch::adaptive_avg_pool2d(map, {height_, width_});
}

torch::Tensor LpipsDistance::resized(const torch::Tensor& x) const {
  if (size_ <= 0 || (x.size(2) == size_ && x.size(3) == size_)) return x;
  return F::interpolate(x, F::InterpolateFuncOptions().size(std::vector<int64_t>{size_, size_}).mode(torch::kBilinear).align_corners(false));
}

}  // namespace anomalysd

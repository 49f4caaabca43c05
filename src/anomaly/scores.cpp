#include "anomalysd/anomaly/scores.h"

#include <cmath>

#include "anomalysd/io/errors.h"

namespace anomalysd {

namespace F = torch::nn::functional;

torch::Tensor masked_score_map(const torch::Tensor& masks, const torch::Tensor& distances) {
  if (masks.dim() != 4 || masks.size(1) != 1 || masks.sizes() != distances.sizes())
    throw ShapeError("score map: masks and distances must both be [M, 1, H, W]");
  return (masks * distances).sum(0)[0];  // eq. (18)
}

torch::Tensor harmonic_mean(const std::vector<torch::Tensor>& maps, double eps) {
  if (maps.empty()) throw ShapeError("harmonic mean of no maps");
  torch::Tensor inverse_sum = torch::zeros_like(maps[0]);
  for (const auto& m : maps) {
    if (m.sizes() != maps[0].sizes()) throw ShapeError("harmonic mean: maps of different sizes");
    inverse_sum.add_(m.clamp_min(eps).reciprocal());
  }
  return static_cast<double>(maps.size()) / inverse_sum;  // eq. (19)
}

torch::Tensor fuse_scores(const torch::Tensor& s_ms, const torch::Tensor& s_pg, double alpha) {
  if (s_ms.sizes() != s_pg.sizes()) throw ShapeError("fuse scores: S_ms and S_pg differ in size");
  return (1.0 - alpha) * s_ms + alpha * s_pg;  // eq. (21)
}

torch::Tensor gaussian_blur(const torch::Tensor& map, double sigma) {
  if (map.dim() != 2) throw ShapeError("gaussian blur: the map must be [H, W]");
  if (sigma <= 0) return map;
  const int64_t h = map.size(0), w = map.size(1);
  // Reflection needs the pad to be smaller than the side.
  const int64_t radius = std::min<int64_t>(static_cast<int64_t>(4.0 * sigma + 0.5), std::min(h, w) - 1);
  if (radius < 1) return map;
  const auto opts = map.options().dtype(torch::kDouble);
  torch::Tensor x = torch::arange(-radius, radius + 1, opts);
  torch::Tensor kernel = (-(x * x) / (2.0 * sigma * sigma)).exp();
  kernel = (kernel / kernel.sum()).to(map.scalar_type());
  const int64_t n = 2 * radius + 1;
  torch::Tensor img = map.view({1, 1, h, w});
  img = F::pad(img, F::PadFuncOptions({radius, radius, radius, radius}).mode(torch::kReflect));
  img = F::conv2d(img, kernel.view({1, 1, 1, n}));  // along rows
  img = F::conv2d(img, kernel.view({1, 1, n, 1}));  // along columns
  return img.view({h, w});
}

double image_score(const torch::Tensor& map) { return map.max().item<double>(); }

}  // namespace anomalysd

#include "anomalysd/anomaly/prototype.h"

#include <cmath>
#include <limits>
#include <sstream>

#include "anomalysd/io/errors.h"
#include "anomalysd/io/safetensors.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/models/blocks.h"

namespace anomalysd {

namespace F = torch::nn::functional;

torch::Tensor prototype_features(EfficientNet& net, const torch::Tensor& images, const PrototypeOptions& options) {
  if (options.taps.size() != 2) throw InputError("prototype features need exactly two EfficientNet taps");
  auto feats = net->features_at(imagenet_normalize(images), options.taps);
  const torch::Tensor& f2 = feats.at(options.taps[0]);
  const torch::Tensor f3 = F::interpolate(feats.at(options.taps[1]), F::InterpolateFuncOptions()
                                                                         .size(std::vector<int64_t>{f2.size(2), f2.size(3)})
                                                                         .mode(torch::kBilinear)
                                                                         .align_corners(false));
  return torch::cat({f2, f3}, 1);  // eq. (13)
}

torch::Tensor rotate_images(const torch::Tensor& images, double degrees) {
  const double turns = degrees / 90.0;
  if (std::abs(turns - std::round(turns)) < 1e-9) {
    const int64_t k = ((static_cast<int64_t>(std::llround(turns)) % 4) + 4) % 4;
    return k == 0 ? images : torch::rot90(images, k, {2, 3});  // counter-clockwise, like torchvision
  }
  const double a = degrees * M_PI / 180.0;
  // Inverse rotation in normalised coordinates for grid_sample (counter-clockwise image rotation).
  const torch::Tensor theta = torch::tensor({{std::cos(a), std::sin(a), 0.0}, {-std::sin(a), std::cos(a), 0.0}}, images.options())
                                  .unsqueeze(0)
                                  .expand({images.size(0), 2, 3});
  const torch::Tensor grid = F::affine_grid(theta, images.sizes().vec(), /*align_corners=*/false);
  return F::grid_sample(images, grid, F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kZeros).align_corners(false));
}

torch::Tensor build_prototype_bank(EfficientNet& net, const torch::Tensor& shots, const PrototypeOptions& options) {
  if (shots.dim() != 4 || shots.size(1) != 3) throw ShapeError("prototype bank: shots must be [K, 3, H, W]");
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  // One image at a time: EfficientNet's expanded activations at 512² are hundreds of MiB per image,
  // and batching them only thrashes the caches (measured 3× slower for 4 shots on 2 cores).
  for (double angle : options.rotations) {
    const torch::Tensor rotated = rotate_images(shots, angle).contiguous();
    for (int64_t k = 0; k < rotated.size(0); ++k) {
      const torch::Tensor psi = prototype_features(net, rotated.narrow(0, k, 1), options);  // [1, C, h, w]
      parts.push_back(psi[0].permute({1, 2, 0}).reshape({-1, psi.size(1)}));
    }
  }
  return torch::cat(parts, 0).contiguous();  // [M, C]
}

torch::Tensor nearest_neighbour_distance(const torch::Tensor& queries, const torch::Tensor& bank, int64_t max_block_bytes) {
  if (queries.dim() != 2 || bank.dim() != 2 || queries.size(1) != bank.size(1))
    throw ShapeError("nearest neighbour: queries [n, C] and bank [M, C] must share C");
  if (bank.size(0) == 0) throw InputError("nearest neighbour: the prototype bank is empty");
  const int64_t n = queries.size(0), m = bank.size(0);
  const int64_t elem = static_cast<int64_t>(queries.element_size());
  // A block of qn × bn distances; bank chunks first, so that a big bank never needs a big block.
  // Half the budget per block: the oneDNN product and its dense copy coexist for a moment.
  const int64_t max_elems = std::max<int64_t>(1, max_block_bytes / elem / 2);
  const int64_t bn = std::min(m, std::max<int64_t>(1, max_elems / std::min<int64_t>(n, 1024)));
  const int64_t qn = std::min(n, std::max<int64_t>(1, max_elems / bn));
  const torch::Tensor bank_sq = bank.pow(2).sum(1);  // [M]
  torch::Tensor best = torch::full({n}, std::numeric_limits<float>::infinity(), queries.options());
  for (int64_t q0 = 0; q0 < n; q0 += qn) {
    const torch::Tensor q = queries.narrow(0, q0, std::min(qn, n - q0));
    const torch::Tensor q_sq = q.pow(2).sum(1, true);  // [qn, 1]
    torch::Tensor q_best = best.narrow(0, q0, q.size(0));
    for (int64_t b0 = 0; b0 < m; b0 += bn) {
      const int64_t nb = std::min(bn, m - b0);
      // ‖a‖² + ‖b‖² − 2ab, in place on the one [qn, nb] block
      const torch::Tensor d = anomalysd::linear(q, bank.narrow(0, b0, nb)).mul_(-2.0).add_(q_sq).add_(bank_sq.narrow(0, b0, nb).unsqueeze(0));
      q_best.copy_(torch::minimum(q_best, std::get<0>(d.min(1))));
    }
  }
  return best.clamp_min_(0.0);
}

torch::Tensor prototype_error_map(const torch::Tensor& features, const torch::Tensor& bank) {
  if (features.dim() != 4 || features.size(0) != 1) throw ShapeError("prototype error map: features must be [1, C, h, w]");
  const int64_t c = features.size(1), h = features.size(2), w = features.size(3);
  // In float32 whatever the network's dtype: ‖a‖² + ‖b‖² − 2ab cancels most of its digits.
  return nearest_neighbour_distance(features[0].reshape({c, h * w}).t().to(torch::kFloat).contiguous(), bank.to(torch::kFloat)).view({h, w});
}

torch::Tensor prototype_error(EfficientNet& net, const torch::Tensor& image, const torch::Tensor& bank,
                              const PrototypeOptions& options) {
  torch::NoGradGuard no_grad;
  const torch::Tensor w = net->parameters().front();
  const torch::Tensor features = prototype_features(net, image.to(w.device(), w.scalar_type()), options);
  return prototype_error_map(features, bank.to(w.device(), w.scalar_type())).to(torch::kCPU, torch::kFloat);
}

double variance_split_threshold(const torch::Tensor& values) {
  const torch::Tensor sorted = std::get<0>(values.detach().flatten().to(torch::kCPU, torch::kDouble).sort());
  const int64_t n = sorted.numel();
  const double* v = sorted.data_ptr<double>();
  // Prefix sums of x and x² give each side's variance in O(1): Var = E[x²] − E[x]².
  std::vector<double> s1(n + 1, 0.0), s2(n + 1, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    s1[i + 1] = s1[i] + v[i];
    s2[i + 1] = s2[i] + v[i] * v[i];
  }
  auto var = [&](int64_t lo, int64_t hi) {  // population variance of v[lo, hi)
    const double k = static_cast<double>(hi - lo);
    const double mean = (s1[hi] - s1[lo]) / k;
    return std::max(0.0, (s2[hi] - s2[lo]) / k - mean * mean);
  };
  double best = std::numeric_limits<double>::infinity(), threshold = std::numeric_limits<double>::infinity();
  for (int64_t i = 1; i < n; ++i) {
    if (v[i] == v[i - 1]) continue;  // r = v[i] puts all copies of v[i] on the upper side
    const double cost = var(0, i) + var(i, n);
    if (cost < best) {
      best = cost;
      threshold = v[i];
    }
  }
  return threshold;
}

torch::Tensor prototype_mask(const torch::Tensor& error_map, int64_t height, int64_t width) {
  const double r = variance_split_threshold(error_map);
  // E ≥ r where eq. (15) writes E > r: r is one of the error values (the lowest of the upper group
  // of the split), so ≥ keeps that group whole; with > a one-cell anomaly would give an empty mask.
  const torch::Tensor binary = (error_map >= r).to(torch::kFloat).view({1, 1, error_map.size(-2), error_map.size(-1)});
  return F::interpolate(binary, F::InterpolateFuncOptions().size(std::vector<int64_t>{height, width}).mode(torch::kNearest))[0][0];
}

}  // namespace anomalysd

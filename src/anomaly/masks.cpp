#include "anomalysd/anomaly/masks.h"

#include <cmath>

#include "anomalysd/io/errors.h"

namespace anomalysd {

std::vector<int64_t> grid_edges(int64_t size, int64_t k, int64_t unit) {
  if (k < 1 || unit < 1 || size % unit != 0)
    throw InputError("mask grid: side " + std::to_string(size) + " is not a multiple of the latent cell " + std::to_string(unit));
  const int64_t cells = size / unit;
  if (cells < k)
    throw InputError("mask grid: a " + std::to_string(k) + "x" + std::to_string(k) + " grid needs at least " + std::to_string(k) +
                     " latent cells per side, the image has " + std::to_string(cells) + " (raise resolution or drop the scale)");
  std::vector<int64_t> edges(k + 1);
  for (int64_t i = 0; i <= k; ++i) edges[i] = (i * cells / k) * unit;  // floor keeps cells within one latent cell of even
  return edges;
}

torch::Tensor grid_masks(int64_t height, int64_t width, int64_t k, int64_t unit) {
  const auto rows = grid_edges(height, k, unit), cols = grid_edges(width, k, unit);
  torch::Tensor masks = torch::zeros({k * k, 1, height, width});
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j)
      masks[i * k + j][0].narrow(0, rows[i], rows[i + 1] - rows[i]).narrow(1, cols[j], cols[j + 1] - cols[j]).fill_(1.0f);
  return masks;
}

torch::Tensor packed_grid_masks(int64_t height, int64_t width, int64_t k, int64_t unit) {
  const torch::Tensor cells = grid_masks(height, width, k, unit);
  const int64_t p = std::min<int64_t>(k, 2);
  torch::Tensor masks = torch::zeros({p * p, 1, height, width});
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) masks[(i % 2) * p + (j % 2)].add_(cells[i * k + j]);
  return masks;
}

MaskPacking parse_mask_packing(const std::string& name) {
  if (name == "none") return MaskPacking::kNone;
  if (name == "grid2x2") return MaskPacking::kGrid2x2;
  throw InputError("mask packing '" + name + "' is not one of: none, grid2x2");
}

MaskSet multiscale_masks(int64_t height, int64_t width, const std::vector<int64_t>& scales, int64_t unit, MaskPacking packing) {
  MaskSet set;
  std::vector<torch::Tensor> parts;
  for (std::size_t s = 0; s < scales.size(); ++s) {
    const torch::Tensor m = packing == MaskPacking::kGrid2x2 ? packed_grid_masks(height, width, scales[s], unit)
                                                             : grid_masks(height, width, scales[s], unit);
    parts.push_back(m);
    set.scale_index.insert(set.scale_index.end(), m.size(0), static_cast<int64_t>(s));
  }
  set.masks = parts.empty() ? torch::zeros({0, 1, height, width}) : torch::cat(parts, 0);
  return set;
}

int64_t masks_per_image(const std::vector<int64_t>& scales, MaskPacking packing, bool prototype_mask) {
  int64_t n = prototype_mask ? 1 : 0;
  for (int64_t k : scales) n += packing == MaskPacking::kGrid2x2 ? std::min<int64_t>(k, 2) * std::min<int64_t>(k, 2) : k * k;
  return n;
}

}  // namespace anomalysd

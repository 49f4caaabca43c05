// Multi-scale inpainting masks (paper §4.2): the image split into k×k cells for every k in 𝒦,
// one mask per cell, so that at each scale every pixel is masked exactly once. Cells are aligned
// to the latent grid (`unit` pixels per latent cell), so that the downsampled mask m↓ is exact.
//
// Legend: M masks, H×W image size (model resolution), k cells per side.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace anomalysd {

// Cell boundaries along one side: k + 1 pixel positions 0 = e_0 < … < e_k = size, each a multiple
// of `unit`, as even as the latent grid allows. Throws InputError when size/unit < k.
std::vector<int64_t> grid_edges(int64_t size, int64_t k, int64_t unit);

// The k² masks M_{i,j}^{(k)} of one scale, row-major over cells: [k², 1, H, W], float 0/1.
torch::Tensor grid_masks(int64_t height, int64_t width, int64_t k, int64_t unit);

// `grid2x2` packing (beyond the paper, for CPUs): the cells with equal (row mod 2, column mod 2)
// masked in one run, so that each masked cell keeps its 8 neighbours visible: min(k, 2)² masks
// per scale instead of k². Each pixel is still masked exactly once per scale.
torch::Tensor packed_grid_masks(int64_t height, int64_t width, int64_t k, int64_t unit);

enum class MaskPacking { kNone, kGrid2x2 };
MaskPacking parse_mask_packing(const std::string& name);  // none | grid2x2

// Every scale's masks, concatenated: masks [M, 1, H, W] and, per mask, the index of its scale
// in `scales`.
struct MaskSet {
  torch::Tensor masks;
  std::vector<int64_t> scale_index;
};
MaskSet multiscale_masks(int64_t height, int64_t width, const std::vector<int64_t>& scales, int64_t unit,
                         MaskPacking packing = MaskPacking::kNone);

// Masks per image for a setting: Σ_k k² (none) or Σ_k min(k, 2)² (grid2x2), + 1 with the
// prototype mask. 85 + 1 at the paper's 𝒦 = {1, 2, 4, 8}.
int64_t masks_per_image(const std::vector<int64_t>& scales, MaskPacking packing, bool prototype_mask);

}  // namespace anomalysd

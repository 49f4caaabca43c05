// Prototype-guided mask (paper §4.3, eq. 12–15): EfficientNet features of the few normal shots
// under rotation form a per-class bank; a test image's nearest-neighbour distance to the bank is
// thresholded into one binary inpainting mask.
//
// Legend: N images, C = C2 + C3 feature channels, h×w feature grid (stride 8), H×W image size,
// M bank vectors.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "anomalysd/models/efficientnet.h"

namespace anomalysd {

struct PrototypeOptions {
  // The paper's "layers 2 and 3" are ambiguous; we take the stride-8 and stride-16 stage outputs
  // (torchvision features[3], 72 ch, and features[5], 200 ch, for B6 — timm's out_indices 2 and 3).
  std::vector<int64_t> taps{3, 5};
  std::vector<double> rotations{0, 90, 180, 270};  // degrees; bank augmentation (eq. 13)
};

// Eq. (13): ψ(x) = [φ2(x); up(φ3(x))], images in [0, 1] -> [N, C, h, w] (bilinear up-sampling of the
// deeper tap to the first tap's grid).
torch::Tensor prototype_features(EfficientNet& net, const torch::Tensor& images, const PrototypeOptions& options);

// Rotates images [N, 3, H, W] by `degrees` about the centre (exact for multiples of 90; bilinear,
// zero-padded otherwise).
torch::Tensor rotate_images(const torch::Tensor& images, double degrees);

// The class's bank: ψ of every shot under every rotation, flattened to [M, C].
torch::Tensor build_prototype_bank(EfficientNet& net, const torch::Tensor& shots, const PrototypeOptions& options);

// Eq. (14): for each query vector the minimum squared L2 distance to the bank, exact, computed as
// ‖a‖² + ‖b‖² − 2ab in chunks whose distance block stays under `max_block_bytes`, clamped at 0.
torch::Tensor nearest_neighbour_distance(const torch::Tensor& queries, const torch::Tensor& bank,
                                         int64_t max_block_bytes = int64_t(256) << 20);

// Eq. (14) on a feature map: [1, C, h, w] -> [h, w].
torch::Tensor prototype_error_map(const torch::Tensor& features, const torch::Tensor& bank);

// Eq. (12–14) for one test image [1, 3, H, W] in [0, 1]: ψ(x) against the class's bank -> [h, w].
torch::Tensor prototype_error(EfficientNet& net, const torch::Tensor& image, const torch::Tensor& bank,
                              const PrototypeOptions& options);

// Eq. (15): the r minimising Var({E ≥ r}) + Var({E < r}) (population variances, unweighted sum —
// not Otsu's weighted one), exactly over every split between distinct values, O(n log n).
// With fewer than two distinct values there is no split: returns +inf (an empty mask).
double variance_split_threshold(const torch::Tensor& values);

// Binary mask [H, W] (float 0/1): E ≥ r, nearest-upsampled to the image size.
torch::Tensor prototype_mask(const torch::Tensor& error_map, int64_t height, int64_t width);

}  // namespace anomalysd

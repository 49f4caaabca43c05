// Anomaly scores (paper §4.3, eq. 18–21): per-scale maps from the masked distance maps, their
// harmonic mean, the fusion with the prototype-guided map, the Gaussian smoothing and the image
// score. Tensors in, tensors out.
//
// Legend: M masks, H×W image size (model resolution).
#pragma once

#include <vector>

#include <torch/torch.h>

namespace anomalysd {

// Eq. (18) / (20): S = Σ_i M_i ⊙ D(x, x̂_i); masks and distances [M, 1, H, W] -> [H, W].
torch::Tensor masked_score_map(const torch::Tensor& masks, const torch::Tensor& distances);

// Eq. (19): S_ms = |𝒦| / Σ_k 1 / S^{(k)}, pixelwise over maps [H, W]. Zeros are guarded: each
// map is clamped at `eps` first, so a pixel that any scale scores 0 gets ~0, never NaN.
torch::Tensor harmonic_mean(const std::vector<torch::Tensor>& maps, double eps = 1e-12);

// Eq. (21): S_map = (1 − α) S_ms + α S_pg.
torch::Tensor fuse_scores(const torch::Tensor& s_ms, const torch::Tensor& s_pg, double alpha);

// Gaussian smoothing of a map [H, W] with standard deviation σ pixels: a separable kernel of
// radius ⌊4σ + 0.5⌋ (scipy's gaussian_filter truncation), reflected borders. σ = 0 returns the map.
torch::Tensor gaussian_blur(const torch::Tensor& map, double sigma);

// The image-level score S_I: the maximum of the map.
double image_score(const torch::Tensor& map);

}  // namespace anomalysd

// AnomalySD at inference for one class (paper §4.2–4.3): the masks (multi-scale grids and the
// prototype-guided mask), their inpainting, the LPIPS-style distances and the fused, smoothed
// anomaly map with its image score. Tensors in, tensors out: the inpainter and the distance are
// plugged in, so tests can run the method with an oracle and hand-made images.
//
// Legend: M masks, H×W image size (model resolution), h×w prototype feature grid.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "anomalysd/anomaly/inpaint.h"
#include "anomalysd/anomaly/masks.h"

namespace anomalysd {

struct DetectorSettings {
  std::vector<int64_t> scales{1, 2, 4, 8};  // 𝒦
  bool multiscale = true;                   // S_ms (eq. 18–19)
  bool prototype_mask = true;               // S_pg (eq. 20), when an error map is given
  double alpha = 0.1;                       // eq. (21)
  double blur_sigma = 4.0;                  // pixels at the model resolution
  MaskPacking packing = MaskPacking::kNone;
  int64_t mask_batch = 8;                   // masks per inpainter call
  bool keep_inpainted = false;              // fill Detection::inpainted
};

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

struct Detection {
  torch::Tensor map;                      // S_map after smoothing, [H, W] float32 (CPU)
  double score = 0;                       // S_I = max of the map
  std::vector<torch::Tensor> scale_maps;  // S^{(k)} per scale (eq. 18), [H, W]; empty without multi-scale masks
  torch::Tensor s_ms, s_pg;               // eq. (19), eq. (20); undefined when not computed
  torch::Tensor prototype_mask;           // M^{(p)} [H, W] (eq. 15); undefined without one
  // With keep_inpainted: per scale, Σ_i M_i ⊙ x̂_i — every cell as its own run inpainted it
  // ([3, H, W], the paper's Fig. 3) — then the prototype-guided inpainting x̂^{(p)} if any.
  std::vector<torch::Tensor> inpainted;
  int64_t masks = 0;                      // masks inpainted
  int64_t unet_calls = 0;                 // the inpainter's UNet evaluations for this image
};

class AnomalyDetector {
 public:
  AnomalyDetector(Inpainter& inpainter, std::shared_ptr<ImageDistance> distance, DetectorSettings settings);
  AnomalyDetector(Inpainter& inpainter, DistanceFn distance, DetectorSettings settings);

  // image [1, 3, H, W] in [0, 1]; `seed` fixes the start noise (derive it from the image's
  // identity: see noise_seed()); prototype_error = eq. (14)'s map [h, w], or undefined at 0 shots.
  // The maps are computed on the device the inpainter returns x̂ on; only the results come back.
  Detection detect(const torch::Tensor& image, uint64_t seed, const torch::Tensor& prototype_error = {});

  const DetectorSettings& settings() const { return settings_; }

 private:
  // The multi-scale masks of an image size: the same for every image of that size.
  const MaskSet& grid_masks_for(int64_t height, int64_t width);

  Inpainter& inpainter_;
  std::shared_ptr<ImageDistance> distance_;
  DetectorSettings settings_;
  std::map<std::pair<int64_t, int64_t>, MaskSet> mask_cache_;
};

// The start-noise seed of an image: a hash of the run's seed and the image's identity (e.g. a
// hash of its pixels), so that an image gets the same map whatever its position in a batch, a
// folder or a shard.
uint64_t noise_seed(uint64_t run_seed, uint64_t image_identity);

}  // namespace anomalysd

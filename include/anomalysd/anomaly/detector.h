// AnomalySD at inference for one class (paper §4.2–4.3): the masks (multi-scale grids and the
// prototype-guided mask), their inpainting, the LPIPS-style distances and the fused, smoothed
// anomaly map with its image score. Tensors in, tensors out: the inpainter and the distance are
// plugged in, so tests can run the method with an oracle and hand-made images.
//
// Legend: M masks, H×W image size (model resolution), h×w prototype feature grid.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "anomalysd/anomaly/distance.h"
#include "anomalysd/anomaly/inference_settings.h"
#include "anomalysd/anomaly/inpaint.h"
#include "anomalysd/anomaly/masks.h"
#include "anomalysd/anomaly/prototype.h"

namespace anomalysd {

// What the method needs of one class, set once before its images (§4.2).
struct ClassContext {
  PromptConditioning conditioning;  // τ: the average embedding of the class's prompts
  torch::Tensor prototype_bank;     // eq. (13) [N, C] from prototype_bank(); undefined at 0 shots
  double strength = 0.4;            // the class's λ (InferenceSettings::strength_for)
};

// The prototype-guided mask's feature network (eq. 12–15): EfficientNet and its taps and rotations.
struct PrototypeFeatures {
  EfficientNet network{nullptr};    // float32 whatever the SD models' dtype
  PrototypeOptions options;
};

struct Detection {
  torch::Tensor map;                      // S_map after smoothing, [H, W] float32 (CPU)
  double score = 0;                       // S_I = max of the map
  std::vector<torch::Tensor> scale_maps;  // S^{(k)} per scale (eq. 18), [H, W]; empty without multi-scale masks
  torch::Tensor s_ms, s_pg;               // eq. (19), eq. (20); undefined when not computed
  torch::Tensor prototype_mask;           // M^{(p)} [H, W] (eq. 15); undefined without one
  // With save_inpainted: per scale, Σ_i M_i ⊙ x̂_i — every cell as its own run inpainted it
  // ([3, H, W], the paper's Fig. 3) — then the prototype-guided inpainting x̂^{(p)} if any.
  std::vector<torch::Tensor> inpainted;
  int64_t masks = 0;                      // masks inpainted
  int64_t unet_calls = 0;                 // the inpainter's UNet evaluations for this image
};

class AnomalyDetector {
 public:
  // `settings`: the `inference:` section; `prototype`: the feature network of the prototype-guided
  // mask, or none (then S_pg needs an error map given to detect()).
  AnomalyDetector(Inpainter& inpainter, std::shared_ptr<ImageDistance> distance, InferenceSettings settings,
                  PrototypeFeatures prototype = {});
  AnomalyDetector(Inpainter& inpainter, DistanceFn distance, InferenceSettings settings, PrototypeFeatures prototype = {});

  // Eq. (13): the prototype bank of a class's shots [K, 3, H, W] in [0, 1] under the rotations.
  torch::Tensor prototype_bank(const torch::Tensor& shots) const;
  // Per class, before its images: the conditioning and λ go to the inpainter, the bank is kept.
  void set_class(ClassContext context);
  int64_t bank_size() const { return bank_.defined() ? bank_.size(0) : 0; }

  // image [1, 3, H, W] in [0, 1]; `seed` fixes the start noise (derive it from the image's
  // identity: see noise_seed()). With the class's prototype bank, eq. (14)'s error map is computed
  // here; the second form takes it given ([h, w], or undefined: no prototype mask).
  // The maps are computed on the device the inpainter returns x̂ on; only the results come back.
  Detection detect(const torch::Tensor& image, uint64_t seed);
  Detection detect(const torch::Tensor& image, uint64_t seed, const torch::Tensor& prototype_error);

  const InferenceSettings& settings() const { return settings_; }

 private:
  // The multi-scale masks of an image size: the same for every image of that size.
  const MaskSet& grid_masks_for(int64_t height, int64_t width);

  Inpainter& inpainter_;
  std::shared_ptr<ImageDistance> distance_;
  InferenceSettings settings_;
  MaskPacking packing_ = MaskPacking::kNone;
  PrototypeFeatures prototype_;
  torch::Tensor bank_;
  std::map<std::pair<int64_t, int64_t>, MaskSet> mask_cache_;
};

// The start-noise seed of an image: a hash of the run's seed and the image's identity (e.g. a
// hash of its pixels), so that an image gets the same map whatever its position in a batch, a
// folder or a shard.
uint64_t noise_seed(uint64_t run_seed, uint64_t image_identity);

}  // namespace anomalysd

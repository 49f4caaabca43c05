// `inference:` — the method at test time (paper §4.2–4.3, §5.1), field for field as the config's
// section spells it. The defaults are written here once; configs/default.yaml repeats them for the
// reader, and a test checks that the two agree. A plain struct (no torch): core/app_config reads
// it from YAML, the detector (anomaly/detector.h) and the inpainter run on it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace anomalysd {

struct InferenceSettings {
  int64_t steps = 50;                           // DDIM steps of the full schedule; ⌊λ·steps⌋ of them run
  double strength = 0.4;                        // λ: denoising starts at λ·T
  std::map<std::string, double> class_strength; // per-class λ, overriding `strength`
  double guidance_scale = 1.0;                  // classifier-free guidance; 1 = none (half the UNet calls)
  std::string negative_prompt;                  // used only when guidance_scale > 1
  std::vector<int64_t> scales{1, 2, 4, 8};      // 𝒦: k of the k×k mask grids
  bool multiscale = true;                       // S_ms (eq. 18–19)
  bool prototype_mask = true;                   // S_pg (eq. 12–15, 20); needs shots
  double alpha = 0.1;                           // eq. (21)
  double blur_sigma = 4.0;                      // Gaussian σ in pixels at the model resolution; 0 = none
  int64_t mask_batch = 8;                       // masks per UNet call
  std::string mask_packing = "none";            // none | grid2x2
  int64_t distance_size = 0;                    // LPIPS at size × size (resized), 0 = the model resolution
  bool save_inpainted = false;                  // keep the inpainted images per scale (Detection::inpainted)

  // λ of a class: class_strength's entry, else `strength`.
  double strength_for(const std::string& cls) const {
    const auto it = class_strength.find(cls);
    return it == class_strength.end() ? strength : it->second;
  }
};

inline bool operator==(const InferenceSettings& a, const InferenceSettings& b) {
  return a.steps == b.steps && a.strength == b.strength && a.class_strength == b.class_strength && a.guidance_scale == b.guidance_scale &&
         a.negative_prompt == b.negative_prompt && a.scales == b.scales && a.multiscale == b.multiscale &&
         a.prototype_mask == b.prototype_mask && a.alpha == b.alpha && a.blur_sigma == b.blur_sigma && a.mask_batch == b.mask_batch &&
         a.mask_packing == b.mask_packing && a.distance_size == b.distance_size && a.save_inpainted == b.save_inpainted;
}
inline bool operator!=(const InferenceSettings& a, const InferenceSettings& b) { return !(a == b); }

}  // namespace anomalysd

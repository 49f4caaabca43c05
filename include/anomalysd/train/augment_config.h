// `train.augment:` — §5.1's augmentations of the few shots. A plain settings struct (no torch):
// the config layer (core/app_config) reads it from YAML, train/training_data applies it.
#pragma once

#include <vector>

namespace anomalysd {

struct AugmentConfig {
  double brightness = 0.1;            // ± additive, images in [0, 1]
  double contrast = 0.1;              // ± relative
  std::vector<double> scale{0.9, 1.1};  // [min, max] zoom
  double rotation = 10.0;             // ± degrees
  double probability = 0.8;           // chance that a sample is augmented at all
};

}  // namespace anomalysd

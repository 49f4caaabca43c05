// A synthetic few-shot anomaly detection benchmark in the MVTec-AD layout, for trying the whole
// method without downloads: textures and objects with natural variation among normal images
// (position, rotation, lighting, noise) and several defect types with pixel-exact masks.
// Deterministic by seed. Defects are painted with the class's own colours, so that colour or
// brightness alone does not give them away. Torch-free (OpenCV).
//
// <output>/<class>/train/good/NNN.png, test/good/NNN.png, test/<defect>/NNN.png,
//           ground_truth/<defect>/NNN_mask.png
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace anomalysd {

struct SyntheticOptions {
  std::string output;
  uint64_t seed = 0;
  std::vector<std::string> classes;  // empty = synthetic_classes()
  int size = 64;                     // pixels per side
  int train = 10;                    // normal training images per class
  int test_good = 20;                // normal test images per class
  int test_bad = 20;                 // anomalous test images per class, spread over its defect types
};

// The evaluation classes: two textures (weave, marble) and two objects (washer, pill).
const std::vector<std::string>& synthetic_classes();
// Two more (tiles, nut) that only the demo's bootstrap (pre-training) sees.
const std::vector<std::string>& synthetic_extra_classes();
// "texture" or "object".
std::string synthetic_class_kind(const std::string& cls);
// The defect types of a class, e.g. {"scratch", "hole", "stain", "thread"}.
std::vector<std::string> synthetic_defects(const std::string& cls);

// One normal image (RGB8) of a class; `index` selects the variation within the seed's stream.
cv::Mat synthetic_normal(const std::string& cls, uint64_t seed, int64_t index, int size);
// The same with one defect painted in; `mask` receives its pixel-exact CV_8U 0/255 mask.
cv::Mat synthetic_defective(const std::string& cls, const std::string& defect, uint64_t seed, int64_t index, int size, cv::Mat& mask);

struct SyntheticSummary {
  int64_t images = 0;
  int64_t classes = 0;
};

SyntheticSummary make_synthetic(const SyntheticOptions& options);

}  // namespace anomalysd

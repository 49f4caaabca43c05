// `anomalysd infer`: AnomalySD on a folder (or one file) of images of one class — an anomaly map,
// an overlay and a score per image. Every file is written atomically; a file that cannot be read
// is reported by name and skipped, the rest go on.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace anomalysd {

struct InferOptions {
  std::string config;                  // YAML file ("" = embedded default)
  std::vector<std::string> overrides;  // --set key=value
  std::string model;                   // pipeline folder (overrides model.path)
  std::string input;                   // folder or file
  std::string cls;                     // class name: prompts and λ
  std::string shots;                   // folder (or file) of normal images; "" = 0-shot
  std::string output;
  bool overwrite = false;
  double threshold = std::numeric_limits<double>::quiet_NaN();  // label images with score ≥ threshold
};

struct InferSummary {
  int64_t images = 0;     // scored
  int64_t failures = 0;   // unreadable, skipped
  std::vector<std::string> failed;  // "path: reason"
  double seconds = 0;
  double seconds_per_image = 0;
  int64_t masks_per_image = 0;
  double unet_calls_per_image = 0;
  std::string output;
};

// Image files of a folder (PNG, JPEG, BMP, TIFF by extension, sorted), or the one file given.
std::vector<std::string> list_images(const std::string& folder_or_file);

InferSummary run_infer(const InferOptions& options);

}  // namespace anomalysd

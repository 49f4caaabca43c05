// A held-out benchmark of real photographs in the MVTec-AD layout (`anomalysd make-photo-benchmark`):
// each class is one of GIMP's photographic patterns (configs/photos.yaml, role heldout — no
// training set of this project reads them), normal images are crops of it under small changes of
// position, scale, rotation, lighting and sensor noise, and defective ones carry one planted defect
// with its pixel-exact mask:
//   foreign  — a blob of another held-out photograph (foreign material)
//   scratch  — a thin lighter or darker line or polyline
//   smudge   — a blob of the texture smeared (blurred and greyed)
//   stain    — a blob tinted a brownish colour, translucent
// Deterministic by seed. Torch-free (OpenCV).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "anomalysd/data/photos.h"

namespace anomalysd {

struct PhotoBenchmarkOptions {
  std::string output;
  uint64_t seed = 0;
  int size = 64;
  int train = 40;      // normal training images per class
  int test_good = 20;
  int test_bad = 20;   // spread over the four defect types
  std::vector<std::string> classes;  // "" = every held-out class of the photo list
  std::string photo_root;            // prefix of the photo files (tests); "" = /
};

const std::vector<std::string>& photo_benchmark_defects();

struct PhotoBenchmarkSummary {
  int64_t images = 0;
  std::vector<std::string> classes;
};

PhotoBenchmarkSummary make_photo_benchmark(const PhotoBenchmarkOptions& options, const std::vector<PhotoSource>& list = embedded_photo_list());

// One normal image (RGB8) of a photograph; and one with a defect, its mask in `mask` (CV_8U 0/255).
cv::Mat photo_normal(const cv::Mat& photo_rgb8, uint64_t stream, int size);
cv::Mat photo_defective(const cv::Mat& photo_rgb8, const std::vector<cv::Mat>& foreign_rgb8, const std::string& defect, uint64_t stream,
                        int size, cv::Mat& mask);

}  // namespace anomalysd

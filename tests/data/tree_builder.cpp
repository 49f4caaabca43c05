#include "data/tree_builder.h"

#include <cstdio>

#include <opencv2/imgcodecs.hpp>

namespace anomalysd::test {

void write_image(const std::filesystem::path& path, int height, int width, bool mask) {
  std::filesystem::create_directories(path.parent_path());
  cv::Mat img;
  if (mask) {
    img = cv::Mat::zeros(height, width, CV_8U);
    img(cv::Rect(2, 2, 4, 4)).setTo(255);
  } else {
    img = cv::Mat(height, width, CV_8UC3, cv::Scalar(40, 90, 140));
  }
  cv::imwrite(path.string(), img);
}

void make_mvtec_class(const std::filesystem::path& root, const std::string& cls, int train,
                      const std::vector<std::pair<std::string, int>>& test, const std::string& mask_suffix) {
  char name[16];
  for (int i = 0; i < train; ++i) {
    std::snprintf(name, sizeof name, "%03d.png", i);
    write_image(root / cls / "train/good" / name, 16, 20, false);
  }
  for (const auto& [defect, count] : test) {
    for (int i = 0; i < count; ++i) {
      std::snprintf(name, sizeof name, "%03d", i);
      write_image(root / cls / "test" / defect / (std::string(name) + ".png"), 16, 20, false);
      if (defect != "good") write_image(root / cls / "ground_truth" / defect / (std::string(name) + mask_suffix + ".png"), 16, 20, true);
    }
  }
}

}  // namespace anomalysd::test

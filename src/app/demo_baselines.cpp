// The demo's baselines: what the method is compared with.
#include <filesystem>

#include <opencv2/core.hpp>

#include "anomalysd/app/demo.h"
#include "anomalysd/data/dataset.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/metrics/eval_maps.h"

namespace anomalysd {

namespace fs = std::filesystem;

RunResults mean_image_baseline(const std::string& dataset_root, const std::string& maps_dir) {
  const Dataset dataset = load_dataset("folder", dataset_root);
  for (const ClassData& c : dataset.classes) {
    cv::Mat mean;
    for (const auto& p : c.train_good) {
      const cv::Mat img = read_rgb_float(p);
      if (mean.empty()) mean = cv::Mat::zeros(img.size(), CV_32FC3);
      mean += img / static_cast<double>(c.train_good.size());
    }
    for (const TestSample& s : c.test) {
      const cv::Mat img = read_rgb_float(s.image);
      cv::Mat diff = img - mean, sq;
      cv::multiply(diff, diff, sq);
      std::vector<cv::Mat> ch;
      cv::split(sq, ch);
      const cv::Mat map = ch[0] + ch[1] + ch[2];
      const fs::path out = fs::path(maps_dir) / s.cls / "test" / s.defect / (s.id + ".tiff");
      fs::create_directories(out.parent_path());
      write_map_tiff(out.string(), map);
    }
  }
  EvalMapsOptions m;
  m.dataset = "folder";
  m.root = dataset_root;
  m.maps = maps_dir;
  m.method = "Baseline: distance to the mean training image";
  m.setup = "all train images";
  return evaluate_maps(m);
}

}  // namespace anomalysd

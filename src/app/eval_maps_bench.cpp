// `anomalysd bench eval-maps`: the metric pass of `eval-maps` timed on a synthetic class.
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include <opencv2/imgcodecs.hpp>
#include <spdlog/spdlog.h>

#include "anomalysd/app/eval_maps.h"
#include "anomalysd/tools/components.h"

namespace anomalysd {

// A synthetic class of `images` test images at size², ~30% anomalous with three rectangular regions
// each, maps = mask + noise, written in the MVTec layout; then eval-maps on it.
BenchFigures bench_eval_maps(int64_t images, int64_t size, int64_t repeats) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("anomalysd-bench-eval-" + std::to_string(::getpid()));
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } cleanup{root};
  const int s = static_cast<int>(size);
  cv::RNG rng(1);
  cv::Mat image(s, s, CV_8UC3, cv::Scalar(90, 90, 90));
  const fs::path cls = root / "data" / "synthetic";
  fs::create_directories(cls / "train" / "good");
  cv::imwrite((cls / "train" / "good" / "000.png").string(), image);
  for (int64_t i = 0; i < images; ++i) {
    const bool anomalous = i % 10 < 3;
    const std::string defect = anomalous ? "defect" : "good";
    char id[24];
    std::snprintf(id, sizeof id, "%03lld", static_cast<long long>(i));
    fs::create_directories(cls / "test" / defect);
    cv::imwrite((cls / "test" / defect / (std::string(id) + ".png")).string(), image);
    cv::Mat mask = cv::Mat::zeros(s, s, CV_8U);
    if (anomalous) {
      for (int r = 0; r < 3; ++r) {
        const int w = rng.uniform(s / 32, s / 8), h = rng.uniform(s / 32, s / 8);
        mask(cv::Rect(rng.uniform(0, s - w), rng.uniform(0, s - h), w, h)).setTo(255);
      }
      fs::create_directories(cls / "ground_truth" / defect);
      cv::imwrite((cls / "ground_truth" / defect / (std::string(id) + "_mask.png")).string(), mask);
    }
    cv::Mat map(s, s, CV_32F);
    rng.fill(map, cv::RNG::NORMAL, 0.0, 1.0);
    cv::Mat m;
    mask.convertTo(m, CV_32F, 1.5 / 255.0);
    map += m;
    fs::create_directories(root / "maps" / "synthetic" / "test" / defect);
    cv::imwrite((root / "maps" / "synthetic" / "test" / defect / (std::string(id) + ".tiff")).string(), map);
  }
  EvalMapsOptions options;
  options.dataset = "folder";
  options.root = (root / "data").string();
  options.maps = (root / "maps").string();
  BenchFigures f;
  f.what = "eval-maps";
  f.batch = images;
  spdlog::info("bench eval-maps: {} test images at {}x{}", images, size, size);
  time_runs(f, [&] { evaluate_maps(options); }, repeats);
  return f;
}

}  // namespace anomalysd

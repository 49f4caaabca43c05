#include "app/app_fixtures.h"

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <gtest/gtest.h>

#include "anomalysd/tools/components.h"

namespace anomalysd::test {

cv::Mat smooth_image(int h, int w, int seed, int type) {
  cv::RNG rng(seed);
  cv::Mat small(4, 4, CV_32FC3);
  rng.fill(small, cv::RNG::UNIFORM, 0.2, 0.8);
  cv::Mat big;
  cv::resize(small, big, cv::Size(w, h), 0, 0, cv::INTER_LINEAR);
  cv::Mat out;
  const double scale = CV_MAT_DEPTH(type) == CV_16U ? 65535.0 : 255.0;
  big.convertTo(out, CV_MAT_DEPTH(type), scale);
  if (CV_MAT_CN(type) == 1) cv::cvtColor(out, out, cv::COLOR_BGR2GRAY);
  if (CV_MAT_CN(type) == 4) cv::cvtColor(out, out, cv::COLOR_BGR2BGRA);
  return out;
}

std::vector<std::string> small_run_overrides(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  const std::string alexnet = (dir / "alexnet.safetensors").string(), lpips = (dir / "lpips.safetensors").string(),
                    eff = (dir / "efficientnet_b0.safetensors").string();
  if (!fs::exists(alexnet)) init_feature_weights("alexnet", 0, alexnet);
  if (!fs::exists(lpips)) init_feature_weights("lpips", 0, lpips);
  if (!fs::exists(eff)) init_feature_weights("efficientnet_b0", 0, eff);
  return {"features.alexnet=" + alexnet, "features.lpips=" + lpips, "features.efficientnet=" + eff,
          "features.efficientnet_variant=0", "resolution=32", "inference.steps=10", "inference.scales=[1,2]",
          "inference.blur_sigma=1", "threads=1", "device=cpu"};
}

void make_textured_dataset(const std::filesystem::path& root, const std::vector<std::string>& classes, int train, int good, int bad,
                           int size) {
  namespace fs = std::filesystem;
  int seed = 1;
  auto texture = [&](int s) {
    cv::RNG rng(static_cast<uint64_t>(s));
    cv::Mat small(4, 4, CV_32FC3);
    rng.fill(small, cv::RNG::UNIFORM, 0.3, 0.7);
    cv::Mat big, out;
    cv::resize(small, big, cv::Size(size, size), 0, 0, cv::INTER_LINEAR);
    big.convertTo(out, CV_8U, 255.0);
    return out;
  };
  char name[32];
  for (const auto& cls : classes) {
    fs::create_directories(root / cls / "train/good");
    fs::create_directories(root / cls / "test/good");
    fs::create_directories(root / cls / "test/square");
    fs::create_directories(root / cls / "ground_truth/square");
    for (int i = 0; i < train; ++i) {
      std::snprintf(name, sizeof name, "%03d.png", i);
      cv::imwrite((root / cls / "train/good" / name).string(), texture(seed++));
    }
    for (int i = 0; i < good; ++i) {
      std::snprintf(name, sizeof name, "%03d.png", i);
      cv::imwrite((root / cls / "test/good" / name).string(), texture(seed++));
    }
    for (int i = 0; i < bad; ++i) {
      cv::Mat img = texture(seed++);
      cv::Mat mask = cv::Mat::zeros(size, size, CV_8U);
      const int s = size / 4, r = (i * 7) % (size - s), c = (i * 11 + 3) % (size - s);
      img(cv::Rect(c, r, s, s)).setTo(cv::Scalar(250, 250, 250));
      mask(cv::Rect(c, r, s, s)).setTo(255);
      std::snprintf(name, sizeof name, "%03d", i);
      cv::imwrite((root / cls / "test/square" / (std::string(name) + ".png")).string(), img);
      cv::imwrite((root / cls / "ground_truth/square" / (std::string(name) + "_mask.png")).string(), mask);
    }
  }
}

int run_cli(const std::string& args, std::string* log) {
  namespace fs = std::filesystem;
  const fs::path out = fs::temp_directory_path() / ("anomalysd-cli-" + std::to_string(::getpid()) + ".log");
  const std::string cmd = std::string(ANOMALYSD_CLI) + " " + args + " > " + out.string() + " 2>&1";
  const int status = std::system(cmd.c_str());
  if (log) {
    std::ifstream in(out);
    std::stringstream s;
    s << in.rdbuf();
    *log = s.str();
  }
  fs::remove(out);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void expect_same_metrics(const RunResults& a, const RunResults& b) {
  ASSERT_EQ(a.classes.size(), b.classes.size());
  for (std::size_t i = 0; i < a.classes.size(); ++i) {
    EXPECT_EQ(a.classes[i].name, b.classes[i].name);
    EXPECT_EQ(a.classes[i].image_auroc, b.classes[i].image_auroc);
    EXPECT_EQ(a.classes[i].image_ap, b.classes[i].image_ap);
    EXPECT_EQ(a.classes[i].image_f1_max, b.classes[i].image_f1_max);
    EXPECT_EQ(a.classes[i].pixel_auroc, b.classes[i].pixel_auroc);
    EXPECT_EQ(a.classes[i].pixel_pro, b.classes[i].pixel_pro);
    EXPECT_EQ(a.classes[i].test_images, b.classes[i].test_images);
  }
}

}  // namespace anomalysd::test

// The demo's baselines: what the method is compared with.
#include <filesystem>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "anomalysd/anomaly/prototype.h"
#include "anomalysd/anomaly/scores.h"
#include "anomalysd/app/demo.h"
#include "anomalysd/app/eval.h"
#include "anomalysd/app/method.h"
#include "anomalysd/data/dataset.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/app/eval_maps.h"

namespace anomalysd {

namespace fs = std::filesystem;
namespace F = torch::nn::functional;

namespace {

void write_map(const std::string& maps_dir, const TestSample& s, const cv::Mat& map) {
  const fs::path out = fs::path(maps_dir) / s.cls / "test" / s.defect / (s.id + ".tiff");
  fs::create_directories(out.parent_path());
  write_map_tiff(out.string(), map);
}

}  // namespace

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
      write_map(maps_dir, s, ch[0] + ch[1] + ch[2]);
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

RunResults patch_nn_baseline(const PatchNnBaselineOptions& options) {
  const Dataset dataset = load_dataset("folder", options.dataset_root);
  const ShotSelection shots = read_shots_file(options.shots_file, dataset);
  EfficientNet net = load_efficientnet(options.efficientnet, options.efficientnet_variant);
  net->eval();
  PrototypeOptions prototype;
  prototype.taps = options.taps;
  prototype.rotations = options.rotations;
  for (const ClassData& c : dataset.classes) {
    const auto it = shots.shots.find(c.name);
    if (it == shots.shots.end() || it->second.empty()) throw InputError(options.shots_file + ": no shots for class '" + c.name + "'");
    std::vector<torch::Tensor> shot_images;
    for (const auto& p : it->second) shot_images.push_back(read_model_image(p, options.resolution).tensor);
    // The same bank the prototype mask builds (eq. 13): every shot under every rotation.
    const torch::Tensor bank = build_prototype_bank(net, torch::cat(shot_images, 0), prototype);
    for (const TestSample& s : c.test) {
      const ModelImage image = read_model_image(s.image, options.resolution);
      const torch::Tensor error = prototype_error(net, image.tensor, bank, prototype);  // eq. (14), [h, w]
      torch::Tensor map = F::interpolate(error.view({1, 1, error.size(0), error.size(1)}),
                                         F::InterpolateFuncOptions()
                                             .size(std::vector<int64_t>{options.resolution, options.resolution})
                                             .mode(torch::kBilinear)
                                             .align_corners(false));
      map = gaussian_blur(map.view({options.resolution, options.resolution}), options.blur_sigma);
      write_map(options.maps_dir, s, map_to_size(map, image.original.rows, image.original.cols));
    }
  }
  EvalMapsOptions m;
  m.dataset = "folder";
  m.root = options.dataset_root;
  m.maps = options.maps_dir;
  m.method = "Baseline: patch nearest neighbour (PatchCore-style, EfficientNet-B6 bank)";
  m.setup = std::to_string(shots.k) + "-shot";
  return evaluate_maps(m);
}

RunResults raw_patch_nn_baseline(const std::string& dataset_root, const std::string& shots_file, const std::string& maps_dir, int64_t patch,
                                 double blur_sigma) {
  torch::NoGradGuard no_grad;
  const Dataset dataset = load_dataset("folder", dataset_root);
  const ShotSelection shots = read_shots_file(shots_file, dataset);
  // Every patch × patch RGB window of an image, one row each (reflect-padded: a row per pixel).
  auto windows = [patch](const cv::Mat& rgb_float) {
    const torch::Tensor t = torch::from_blob(rgb_float.data, {rgb_float.rows, rgb_float.cols, 3}, torch::kFloat32).permute({2, 0, 1}).unsqueeze(0).clone();
    const int64_t pad = patch / 2;
    const torch::Tensor padded = F::pad(t, F::PadFuncOptions({pad, pad, pad, pad}).mode(torch::kReflect));
    return F::unfold(padded, F::UnfoldFuncOptions({patch, patch})).squeeze(0).t().contiguous();  // [H·W, 3·patch²]
  };
  for (const ClassData& c : dataset.classes) {
    const auto it = shots.shots.find(c.name);
    if (it == shots.shots.end() || it->second.empty()) throw InputError(shots_file + ": no shots for class '" + c.name + "'");
    // The shots' windows as they are (no rotations: this is the plainest baseline, and four times
    // the bank would make it the demo's slowest row).
    std::vector<torch::Tensor> bank;
    for (const auto& p : it->second) bank.push_back(windows(read_rgb_float(p)));
    const torch::Tensor memory = torch::cat(bank, 0);
    for (const TestSample& s : c.test) {
      const cv::Mat img = read_rgb_float(s.image);
      const torch::Tensor query = windows(img);
      std::vector<torch::Tensor> nearest;
      for (int64_t i = 0; i < query.size(0); i += 1024)  // bounded memory: 1024 queries at a time
        nearest.push_back(torch::cdist(query.narrow(0, i, std::min<int64_t>(1024, query.size(0) - i)), memory).amin(1));
      const torch::Tensor map = gaussian_blur(torch::cat(nearest).view({img.rows, img.cols}), blur_sigma);
      write_map(maps_dir, s, map_to_size(map, img.rows, img.cols));
    }
  }
  EvalMapsOptions m;
  m.dataset = "folder";
  m.root = dataset_root;
  m.maps = maps_dir;
  m.method = "Baseline: raw-patch nearest neighbour (" + std::to_string(patch) + "x" + std::to_string(patch) + " RGB patches of the shots)";
  m.setup = std::to_string(shots.k) + "-shot";
  return evaluate_maps(m);
}

}  // namespace anomalysd

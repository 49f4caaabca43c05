// The parts of `anomalysd demo` (app/demo.h), shared by its files: the scale and the run
// (demo.cpp), the bootstrap of a small SD inpainting pipeline on other data (demo_bootstrap.cpp),
// the baselines it is compared with (demo_baselines.cpp). Private to the library.
#pragma once

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <torch/torch.h>

#include "anomalysd/app/bootstrap.h"
#include "anomalysd/app/demo.h"
#include "anomalysd/core/app_config.h"

namespace anomalysd::demo_detail {

// The demo's scale: what runs in minutes on two cores. `quick` is CI's reduced version; any field
// can be changed with --plan key=value (the bootstrap's keys: app/bootstrap.h).
struct Plan : BootstrapPlan {
  int train = 10, test_good = 20, test_bad = 20;  // benchmark images per class
  int finetune_unet = 0, finetune_decoder = 0;    // 0 = the config's
  int limit_per_class = 0;
};

// The bootstrap's feature networks (pretrain_features.cpp).
struct LabelledImages {
  torch::Tensor images;              // [N, 3, H, W] float32 in [0, 1]
  torch::Tensor labels;              // [N] int64, indices into classes
  std::vector<std::string> classes;
  std::set<int64_t> texture_classes;   // classes whose images are textures (photographs, weave, ...)
  std::string source;                  // where the images come from (the weight files' metadata)
};
struct FeatureTrainPlan {
  int64_t steps = 300, batch = 32;
  double lr = 1e-3;
  bool deep = false;  // EfficientNet: also train the stages after the method's taps
};
using FeatureNetReport = PretrainedFeatureNet;  // app/demo.h
struct FeaturePaths {
  std::string alexnet, efficientnet, lpips;
};
// Trains AlexNet with the LPIPS lins, and EfficientNet-B6, from scratch on `data` (foreign regions +
// class; pretrain_features.cpp) and writes them to `out`, each file's metadata saying how it was made.
std::vector<FeatureNetReport> pretrain_feature_networks(const LabelledImages& data, const FeatureTrainPlan& alexnet_plan,
                                                        const FeatureTrainPlan& efficientnet_plan, uint64_t seed, const FeaturePaths& out);

// A folder of photographs (`pretrain-features --photos DIR`): every PNG/JPEG in `dir`, sorted by name.
std::vector<std::filesystem::path> list_photos(const std::filesystem::path& dir);
// `count` random square crops of a photograph, area-resized to size × size (RGB float32 [0, 1]).
std::vector<cv::Mat> photo_crops(const std::filesystem::path& photo, int count, int size, uint64_t seed);

// The plan of a run: the full demo, or CI's `quick` one, with --plan key=value changes.
Plan plan_for(bool quick, const std::vector<std::string>& changes);

// Where the bootstrap's time went (seconds; all 0 and cached = true when the cache was used).
struct BootstrapTimes {
  bool cached = false;
  double data = 0, features = 0, vae = 0, unet = 0, total = 0;
  int64_t images = 0, photo_images = 0;
};

// The bootstrap (`anomalysd bootstrap` on synthetic images of other seeds and classes, and the real
// photographs): the feature networks (to <cache>/bootstrap/features) and a pre-trained SD
// inpainting pipeline; returns the pipeline folder, from the cache when it matches.
std::string bootstrap(const std::filesystem::path& cache, const Plan& plan, const AppConfig& config, const std::string& config_text_file,
                      bool rebuild, BootstrapTimes* times);

}  // namespace anomalysd::demo_detail

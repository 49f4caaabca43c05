// The parts of `anomalysd demo` (app/demo.h), shared by its files: the scale and the run
// (demo.cpp), the bootstrap of a small SD inpainting pipeline on other data (demo_bootstrap.cpp),
// the baselines it is compared with (demo_baselines.cpp). Private to the library.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "anomalysd/core/app_config.h"

namespace anomalysd::demo_detail {

// The demo's scale: what runs in minutes on two cores. `quick` is CI's reduced version; any field
// can be changed with --plan key=value.
struct Plan {
  int size = 64;
  int train = 10, test_good = 20, test_bad = 20;  // benchmark images per class
  int bootstrap_images = 80;                      // normal images per class for pre-training (6 classes)
  int vae_steps = 400, vae_batch = 16;
  double vae_lr = 2e-3;
  int unet_steps = 700, unet_batch = 8;
  double unet_lr = 1e-3;
  int finetune_unet = 0, finetune_decoder = 0;    // 0 = the config's
  int limit_per_class = 0;
  std::vector<int64_t> vae_channels{16, 32, 64};  // 2^(n−1) pixels per latent cell
  std::vector<int64_t> unet_channels{32, 64};
};

// The plan of a run: the full demo, or CI's `quick` one, with --plan key=value changes.
Plan plan_for(bool quick, const std::vector<std::string>& changes);

// The bootstrap: returns the pre-trained pipeline folder, from the cache when it matches.
std::string bootstrap(const std::filesystem::path& cache, const Plan& plan, const AppConfig& config, const std::string& config_text_file,
                      bool rebuild, double* seconds);

}  // namespace anomalysd::demo_detail

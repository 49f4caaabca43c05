// The demo's bootstrap: `anomalysd bootstrap` (app/bootstrap.cpp) on normal images of other seeds
// and classes than the benchmark's, and the real photographs; cached under <cache>/bootstrap.
#include "app/demo_internal.h"

#include <chrono>
#include <filesystem>

#include "anomalysd/app/bootstrap.h"
#include "anomalysd/data/synthetic.h"

namespace anomalysd::demo_detail {

namespace fs = std::filesystem;

std::string bootstrap(const fs::path& cache, const Plan& plan, const AppConfig& config, const std::string& config_text_file, bool rebuild,
                      BootstrapTimes* times) {
  const auto start = std::chrono::steady_clock::now();
  *times = BootstrapTimes{};
  // 1. normal images of other seeds and classes than the benchmark's (two of the six classes are
  //    never evaluated); `anomalysd bootstrap` adds the real photographs' crops as one more class
  SyntheticOptions so;
  so.output = (cache / "bootstrap-data").string();
  so.seed = static_cast<uint64_t>(config.runtime.seed) + 7919;  // never the benchmark's seed
  so.classes = synthetic_classes();
  so.classes.insert(so.classes.end(), synthetic_extra_classes().begin(), synthetic_extra_classes().end());
  so.size = plan.size;
  so.train = plan.bootstrap_images;
  so.test_good = 1;  // the folder layout needs a test image; the bootstrap never reads it
  so.test_bad = 0;
  fs::remove_all(so.output);
  make_synthetic(so);
  BootstrapOptions b;
  b.dataset = "folder";
  b.root = so.output;
  b.output = (cache / "bootstrap").string();
  b.config = config_text_file;
  b.overrides = {"seed=" + std::to_string(config.runtime.seed), "threads=" + std::to_string(config.runtime.threads),
                 "device=" + config.runtime.device};
  b.overwrite = rebuild;
  b.photos = plan.photo_images > 0;
  for (const auto& cls : so.classes)
    if (synthetic_class_kind(cls) == "texture") b.texture_classes.push_back(cls);
  const BootstrapSummary s = run_bootstrap(b, plan);
  fs::remove_all(so.output);
  times->cached = s.already_done;
  if (!s.already_done) {
    times->total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    times->data = times->total - s.seconds + s.data_seconds;
    times->vae = s.vae_seconds;
    times->unet = s.unet_seconds;
    times->features = std::max(0.0, s.seconds - s.data_seconds - s.vae_seconds - s.unet_seconds);
    times->images = s.images;
    times->photo_images = s.photo_images;
  }
  return s.model;
}

}  // namespace anomalysd::demo_detail

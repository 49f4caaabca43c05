// What `infer`, `eval`, `calibrate` and the demo share: the models loaded once from the config (the
// inpainting pipeline, AlexNet/LPIPS, EfficientNet when shots are given), the prompt files and the
// shots read per class, handed to the method (anomaly/detector.h) as tensors.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "anomalysd/anomaly/detector.h"
#include "anomalysd/core/app_config.h"
#include "anomalysd/data/model_image.h"
#include "anomalysd/data/prompts.h"
#include "anomalysd/models/alexnet_lpips.h"
#include "anomalysd/models/efficientnet.h"
#include "anomalysd/models/sd_pipeline.h"
#include "anomalysd/core/runtime.h"

namespace anomalysd {

// Checks that a features.* weight file exists, naming the key and the commands that make it.
std::string require_feature_weights(const AppConfig& config, const std::string& key, const std::string& path);

class MethodRunner {
 public:
  // Loads the pipeline (`model_dir`, else model.path), LPIPS, and EfficientNet when
  // `with_prototype` (shots given and inference.prototype_mask on). Applies the runtime config.
  MethodRunner(const AppConfig& config, const std::string& model_dir, bool with_prototype);
  ~MethodRunner();

  // Per class, once: the averaged prompt embedding (§4.2), the class's λ, and with shots the
  // prototype bank of their rotations (eq. 13). `shots`: image files (may be empty: 0-shot).
  void set_class(const std::string& cls, const std::vector<std::string>& shots);
  int64_t bank_size() const;

  // The anomaly map and score of one image (model resolution).
  Detection detect(const ModelImage& image);

  const AppConfig& config() const { return config_; }
  const Runtime& runtime() const { return runtime_; }
  const std::string& model_dir() const { return model_dir_; }
  SdPipeline& pipeline() { return pipe_; }
  // The feature networks (float32 whatever `dtype` says); efficientnet() is null without a prototype bank.
  const Lpips& lpips() const { return lpips_; }
  const EfficientNet& efficientnet() const { return efficientnet_; }
  // Feature weight files written by `anomalysd init-weights` (random, for tests and demos).
  const std::vector<std::string>& random_weight_files() const { return random_weights_; }
  // UNet evaluations and masks per image at this config (for the summaries), before running.
  int64_t masks_per_image(bool with_bank) const;

 private:
  AppConfig config_;
  Runtime runtime_;
  std::string model_dir_;
  SdPipeline pipe_;
  Lpips lpips_{nullptr};
  EfficientNet efficientnet_{nullptr};
  PromptBook prompts_;
  std::unique_ptr<SdInpainter> inpainter_;
  std::unique_ptr<AnomalyDetector> detector_;
  std::map<std::string, PromptConditioning> conditioning_cache_;
  std::vector<std::string> random_weights_;
};

}  // namespace anomalysd

// What `infer`, `eval` and the demo share: the models loaded once from the config (the inpainting
// pipeline, AlexNet/LPIPS, EfficientNet when shots are given), per class the conditioning and the
// prototype bank, and images read, resized to the model resolution and scored.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <torch/torch.h>

#include "anomalysd/anomaly/detector.h"
#include "anomalysd/core/app_config.h"
#include "anomalysd/data/prompts.h"
#include "anomalysd/models/alexnet_lpips.h"
#include "anomalysd/models/efficientnet.h"
#include "anomalysd/models/sd_pipeline.h"
#include "anomalysd/core/runtime.h"

namespace anomalysd {

// An image as the method sees it.
struct ModelImage {
  torch::Tensor tensor;  // [1, 3, R, R] float32 in [0, 1], R = config resolution
  cv::Mat original;      // RGB float32 [0, 1] at the file's size
  uint64_t identity = 0; // pixel_hash(original): fixes the start noise
};

// Reads an image file (PNG/JPEG/BMP/TIFF, gray/RGB/RGBA, 8/16-bit, any size) for a model of
// side `resolution` (area-averaged when shrinking, bilinear when enlarging).
ModelImage read_model_image(const std::string& path, int64_t resolution);
torch::Tensor to_model_tensor(const cv::Mat& rgb_float, int64_t resolution);

// A map [H, W] (tensor, model resolution) resized to height × width, float32.
cv::Mat map_to_size(const torch::Tensor& map, int height, int width);
// An RGB float image to RGB8.
cv::Mat to_rgb8(const cv::Mat& rgb_float);
cv::Mat tensor_to_rgb8(const torch::Tensor& image);  // [3, H, W] in [0, 1]

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
  const std::string& current_class() const { return class_; }
  int64_t bank_size() const { return bank_.defined() ? bank_.size(0) : 0; }

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
  std::string class_;
  torch::Tensor bank_;
  std::vector<std::string> random_weights_;
};

}  // namespace anomalysd

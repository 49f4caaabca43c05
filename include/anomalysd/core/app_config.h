// The whole YAML config of an anomalysd run. Sections are added by the stages that use them;
// any key not bound here is an error, so a typo never silently falls back to a default.
// Torch-free: the stages convert these plain values into their own settings.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "anomalysd/core/distributed_config.h"
#include "anomalysd/core/runtime.h"
#include "anomalysd/anomaly/inference_settings.h"
#include "anomalysd/train/train_settings.h"

namespace anomalysd {

// `model:` — the Stable Diffusion inpainting checkpoint (a diffusers pipeline folder).
struct ModelConfig {
  std::string path;     // "" = none given yet
  std::string variant;  // "" or e.g. "fp16": loads *.<variant>.safetensors

  static ModelConfig from_config(ConfigSection& section);
};

// `inference:` is anomaly/inference_settings.h's InferenceSettings, read by inference_settings_from().
InferenceSettings inference_settings_from(ConfigSection& section);

// `features:` — the frozen feature networks (weights from scripts/convert_torchvision_weights.py).
struct FeaturesConfig {
  std::string efficientnet = "models/efficientnet_b6.safetensors";
  std::string alexnet = "models/alexnet.safetensors";
  std::string lpips = "models/lpips_alex_v0.1.safetensors";
  int64_t efficientnet_variant = 6;              // B0..B7; the paper uses B6
  std::vector<int64_t> taps{3, 5};               // EfficientNet stages for ψ (eq. 12)
  std::vector<double> rotations{0, 90, 180, 270};  // bank augmentation (eq. 13)

  static FeaturesConfig from_config(ConfigSection& section);
};

// `train:` is train/train_settings.h's TrainSettings, read by train_settings_from().
TrainSettings train_settings_from(ConfigSection& section);

struct AppConfig {
  RuntimeConfig runtime;  // top-level keys: device, dtype, seed, threads
  ModelConfig model;
  int64_t resolution = 512;           // model input side: every image is resized to resolution²
  std::vector<std::string> prompts;   // prompt files (prompts/*.yaml); none = "A perfect [c]." only
  InferenceSettings inference;
  FeaturesConfig features;
  TrainSettings train;
  DistributedConfig distributed;      // several processes as one job (core/distributed.h); not part of any result's identity
  std::string source;                 // the config file, or "" for the embedded default

  static AppConfig from_source(const ConfigSource& source);
  std::string to_yaml() const;  // the resolved config, every key with its value
};

// The config compiled into the binary (configs/default.yaml at build time).
const std::string& embedded_default_config();
// The demo's config (configs/demo.yaml at build time): `anomalysd demo` runs on it.
const std::string& embedded_demo_config();

// Loads `path` (the embedded default when empty), applies `--set` overrides, binds and validates.
AppConfig load_app_config(const std::string& path, const std::vector<std::string>& overrides = {});

// A file named in the config (prompts, weights): as given if it exists (relative to the working
// directory), else relative to the config file's folder and its parent (so configs/x.yaml can name
// prompts/x.yaml). Returns the path as given when none exists: the reader's error then names it.
std::string resolve_config_path(const AppConfig& config, const std::string& path);

// The pipeline folder a command runs on: `--model` when given, else model.path; an InputError when
// neither names one. The one place that rule lives (finetune, eval, infer and calibrate call it).
std::string model_dir_of(const AppConfig& config, const std::string& model_option);

}  // namespace anomalysd

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
#include "anomalysd/train/augment_config.h"

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

// `train:` — fine-tuning (§4.1, §5.1).
struct TrainConfig {
  std::string parts = "both";        // none | decoder | unet | both (Table 3)
  // The length of each stage, as §5.1 gives it: epochs over the shots (1-shot MVTec-AD: 15 images,
  // batch 8: 4000 epochs = 7,500 steps). Optimizer steps, when > 0, win over epochs.
  int64_t unet_steps = 0;            // > 0: optimizer steps of the UNet stage (instead of epochs)
  int64_t decoder_steps = 0;         // > 0: optimizer steps of the decoder stage
  int64_t unet_epochs = 4000;        // epochs over the shots (paper §5.1)
  int64_t decoder_epochs = 200;
  int64_t batch_size = 8;
  int64_t grad_accumulation = 1;
  double lr = 1e-4;
  double grad_clip = 1.0;            // max global gradient norm; 0 = off
  double ema_decay = 0.0;            // 0 = off; e.g. 0.999
  bool gradient_checkpointing = false;
  std::string mixed_precision = "no";  // no | fp16 | bf16 (CUDA autocast)
  double decoder_lpips_weight = 0.1;   // β of eq. (9)
  std::string mask = "iou";            // iou (IoU(m_r, m_f) > γ) | random (Table 4's ablation)
  std::vector<double> iou_thresholds{0.0, 0.2, 0.5};  // γ, drawn with equal probability
  std::string prompt = "hierarchical";  // hierarchical | simple ("A photo of [c].") | none
  std::string foreground = "auto";      // auto (per class from the prompts file, else object) | object | texture
  int64_t save_every = 500;             // steps between checkpoints (0 = only at the end)
  int64_t keep = 2;                     // checkpoints kept
  int64_t log_every = 10;               // steps between log lines (train_log.csv gets every step)
  AugmentConfig augment;

  static TrainConfig from_config(ConfigSection& section);
};

struct AppConfig {
  RuntimeConfig runtime;  // top-level keys: device, dtype, seed, threads
  ModelConfig model;
  int64_t resolution = 512;           // model input side: every image is resized to resolution²
  std::vector<std::string> prompts;   // prompt files (prompts/*.yaml); none = "A perfect [c]." only
  InferenceSettings inference;
  FeaturesConfig features;
  TrainConfig train;
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

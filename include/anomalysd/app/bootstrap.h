// `anomalysd bootstrap`: a small Stable Diffusion inpainting pipeline of the real architectures
// (CLIP text encoder, kept random; AutoencoderKL; 9-channel UNet), its VAE and UNet trained from
// scratch on normal images — a user's own (a folder / MVTec-AD / VisA dataset's train/good
// images) and crops of the real photographs that Debian packages ship (configs/photos.yaml, role
// bootstrap) — plus seeded random EfficientNet-B6 / AlexNet / LPIPS weights. The demo's bootstrap
// is this on synthetic images.
//
// This is a CPU path without Stable Diffusion's pre-training, not the paper's setting: the paper
// fine-tunes SD 2 inpainting, trained on billions of images; this trains a few-million-parameter
// pipeline in minutes. `finetune`, `eval` and `infer` load what it writes unchanged:
//
// <output>/
//   model/                      the diffusers pipeline folder (--model)
//   features/                   alexnet / efficientnet_b6 / lpips .safetensors
//   anomalysd.yaml              configs/demo.yaml with features.* and resolution set (--config)
//   bootstrap.json              what it trained on, its settings, losses and times
//   work/                       while it runs: the training images and checkpoints (a killed run resumes)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace anomalysd {

// The bootstrap's scale (the demo's defaults); `--plan key=value` changes any of it.
struct BootstrapPlan {
  int size = 64;
  int bootstrap_images = 80;                      // normal images per class the VAE and the UNet see (repeated when fewer)
  int vae_steps = 800, vae_batch = 16;
  double vae_lr = 2e-3;
  bool vae_crop = true;                           // train the VAE on random half-size crops (a quarter of the cost)
  bool vae_cosine = true;                         // cosine learning-rate decay
  double vae_logvar_init = -6;                    // the posterior's initial log-variance (quant_conv bias)
  int unet_steps = 700, unet_batch = 8;
  double unet_lr = 1e-3;
  int photo_images = 80;                          // crops of the real photographs among the training images (class "photo"; 0: none)
  int alexnet_steps = 400, efficientnet_steps = 60, feature_batch = 32;
  bool efficientnet_deep = false;
  // false: the feature networks keep seeded random weights (`init-weights`); true: AlexNet, the
  // LPIPS lins and EfficientNet-B6 are pre-trained on the images (pretrain_features.cpp). Off by
  // default: measured, features pre-trained in a CPU minute score below random ones (README).
  bool pretrained_features = false;
  double feature_lr = 1e-3;
  std::vector<int64_t> vae_channels{16, 32, 64};  // 2^(n−1) pixels per latent cell
  std::vector<int64_t> unet_channels{32, 64};
};
// Applies one "key=value"; false when the key is not a bootstrap key (InputError on a bad value).
bool apply_bootstrap_plan(BootstrapPlan& plan, const std::string& key, const std::string& value);

struct BootstrapOptions {
  std::string dataset = "folder";   // folder | mvtec | visa
  std::string root;
  std::vector<std::string> classes; // default: every class
  std::string output;
  std::string config;               // "" = the embedded configs/demo.yaml
  std::vector<std::string> overrides;
  std::vector<std::string> plan;    // key=value (BootstrapPlan)
  bool photos = true;               // false: the user's images only (--no-photos)
  bool overwrite = false;           // discard a previous run (finished or not) in output
  int64_t stop_after = 0;           // > 0: run at most this many training steps, checkpoint, stop (a rerun resumes)
  double minutes = 0;               // > 0: a time budget (--minutes): the VAE and UNet steps scaled down to fit it
  std::vector<std::string> texture_classes;  // pretrained_features only: the classes that are textures
  std::string photo_root;           // prefix of the photo files (tests); "" = /
};

struct BootstrapSummary {
  std::string model;                // <output>/model ("" when stopped early)
  std::string config_file;          // <output>/anomalysd.yaml
  std::string features_dir;
  bool finished = false;
  bool already_done = false;        // the output held a finished bootstrap of the same settings
  int64_t images = 0;               // training images (user's + photo crops), after balancing
  int64_t photo_images = 0;
  int64_t vae_steps = 0, unet_steps = 0;   // as trained (under --minutes: the budget's)
  double budget_scale = 1;          // --minutes: the fraction of the plan's steps the budget allowed
  int64_t start_step = 0;           // > 0 when resumed
  double seconds = 0, data_seconds = 0, vae_seconds = 0, unet_seconds = 0;
  double vae_scaling_factor = 0;
};

// --minutes: the plan's VAE and UNet steps scaled by one factor (at most 1: a budget never trains
// longer than the plan) so that the steps fit in `budget_seconds` less `fixed_seconds` (the time
// spent or expected outside the training steps) at the measured seconds per step. A budget that
// leaves fewer than kMinBudgetSteps steps of a stage (or the plan's own, when fewer) is an
// InputError that says how many minutes the smallest useful run needs.
constexpr int kMinBudgetSteps = 100;
struct BudgetSteps {
  int vae_steps = 0, unet_steps = 0;
  double scale = 1;
};
BudgetSteps steps_for_budget(const BootstrapPlan& plan, double budget_seconds, double fixed_seconds, double vae_step_seconds,
                             double unet_step_seconds);

BootstrapSummary run_bootstrap(const BootstrapOptions& options);
// The same with the plan given (options.plan is ignored): the demo's way in.
BootstrapSummary run_bootstrap(const BootstrapOptions& options, const BootstrapPlan& plan);

}  // namespace anomalysd

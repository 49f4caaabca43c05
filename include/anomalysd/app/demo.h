// `anomalysd demo` (scripts/demo.sh, the README's first command): the whole method on a synthetic
// few-shot benchmark, from nothing — no SD weights, no dataset, no GPU, no network.
//
//   1. data: `make-synthetic` writes the benchmark (2 textures, 2 objects; 10 normal training,
//      20 normal and 20 defective test images per class);
//   2. bootstrap (cached under --cache): a small Stable Diffusion inpainting pipeline of the real
//      architectures (CLIP text encoder kept random, VAE and 9-channel UNet trained) pre-trained on
//      normal images of other seeds and classes — never the benchmark's — in place of SD's
//      pre-training; random-weight EfficientNet-B6 / AlexNet / LPIPS (`init-weights`);
//   3. 1-shot `finetune` of the UNet and the VAE decoder on the benchmark's shots;
//   4. `eval` of: the full method (and, from the same inpaintings, multi-scale masks only and the
//      prototype mask only), the base model without fine-tuning (0-shot), the cheap CPU setting
//      (grid2x2 packing, fewer steps), and a one-line baseline (per-pixel distance to the mean
//      training image);
//   5. results/demo/: table.md, metrics.json, report.png, report.html.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "anomalysd/metrics/results.h"

namespace anomalysd {

struct DemoOptions {
  std::string output = "results/demo";
  std::string cache = "models/demo";  // bootstrap model and feature weights, reused when present
  std::string config;                 // "" = the embedded configs/demo.yaml
  std::vector<std::string> overrides;
  bool quick = false;                 // CI's reduced version: fewer images and steps
  bool rebuild = false;               // ignore the cache
  std::string benchmark = "synthetic"; // synthetic | photos (the held-out real photographs, data/photo_benchmark.h)
  std::string bootstrap;              // an `anomalysd bootstrap` output to start from instead of the cached bootstrap
  std::vector<std::string> plan;      // "key=value": the demo's scale (image size, steps, models; see demo.cpp's Plan)
};

struct DemoSummary {
  std::vector<RunResults> table;      // every setting, in table order
  double seconds = 0;
  double bootstrap_seconds = 0;       // 0 when the cache was used
  double finetune_seconds = 0;
  double eval_seconds = 0;
  bool cache_used = false;
  bool beats_mean_image = false;      // the full method above the mean-image baseline, image and pixel AUROC
  std::string output;
  // What `infer --calibration <output>/eval/full/calibration.json` needs to match the full
  // method's evaluation: its config file, --set overrides, model and the shots of each class.
  std::string config_file;
  std::vector<std::string> overrides;
  std::string model;
  std::map<std::string, std::vector<std::string>> shots;
};

DemoSummary run_demo(const DemoOptions& options);

// `anomalysd pretrain-features`: AlexNet (LPIPS's trunk) and EfficientNet-B6 (the prototype bank's)
// trained from scratch on a folder of normal images and photographs where the ImageNet weights
// cannot be had, as the demo's bootstrap does (pretrain_features.cpp: class prediction + segmentation
// of DRAEM-style foreign regions); the LPIPS lins are all ones. Writes alexnet / efficientnet_b6 /
// lpips .safetensors into `output`, with how they were made in their metadata.
struct PretrainFeaturesOptions {
  std::string data;     // a folder dataset: each class's train/good images are one class
  std::string photos;   // a folder of photographs: each is a class (random crops of it), a texture
  std::vector<std::string> texture_classes;  // --data classes that are textures (the rest are objects)
  std::string output;
  int64_t size = 64;
  int crops = 80;
  int64_t alexnet_steps = 400, efficientnet_steps = 60, batch = 32;
  bool efficientnet_deep = false;
  double lr = 1e-3;
  uint64_t seed = 0;
};
struct PretrainedFeatureNet {
  std::string arch;
  int64_t steps = 0;
  double seconds = 0;
  double class_accuracy = 0;         // held out (every 10th image of each class)
  double foreign_auroc = 0;          // held out: pixel AUROC of the distance map for the foreign regions
  double initial_foreign_auroc = 0;  // the same before training (random weights)
  int64_t heldout_images = 0;
};
std::vector<PretrainedFeatureNet> run_pretrain_features(const PretrainFeaturesOptions& options);

// The mean-image baseline: per class the mean of the normal training images; a test image's map
// is its per-pixel squared distance to it (summed over RGB), at the image's size.
RunResults mean_image_baseline(const std::string& dataset_root, const std::string& maps_dir);

// What a user would try first with the method's own features: PatchCore-style 1-shot patch
// nearest neighbour. Per class the prototype bank of the shots (EfficientNet taps, rotations; eq.
// 13), a test image's map its nearest-neighbour distance to the bank (eq. 14) bilinearly upsampled
// and blurred like the method's; the image score its maximum.
struct PatchNnBaselineOptions {
  std::string dataset_root, shots_file, maps_dir;
  std::string efficientnet;        // weights (safetensors)
  int efficientnet_variant = 6;
  std::vector<int64_t> taps{3, 5};  // as features.taps / features.rotations
  std::vector<double> rotations{0, 90, 180, 270};
  int64_t resolution = 64;
  double blur_sigma = 1.0;
};
RunResults patch_nn_baseline(const PatchNnBaselineOptions& options);

// The plainest few-shot baseline: a test pixel's score is the distance from its patch × patch RGB
// window to the nearest window of the class's shots, blurred like the method's maps; the image
// score its maximum.
RunResults raw_patch_nn_baseline(const std::string& dataset_root, const std::string& shots_file, const std::string& maps_dir, int64_t patch = 5,
                                 double blur_sigma = 1.0);

}  // namespace anomalysd

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
  std::vector<std::string> plan;      // "key=value": the demo's scale (image size, steps, models; see demo.cpp's Plan)
};

struct DemoSummary {
  std::vector<RunResults> table;      // every setting, in table order
  double seconds = 0;
  double bootstrap_seconds = 0;       // 0 when the cache was used
  double finetune_seconds = 0;
  double eval_seconds = 0;
  bool cache_used = false;
  std::string output;
};

DemoSummary run_demo(const DemoOptions& options);

// The mean-image baseline: per class the mean of the normal training images; a test image's map
// is its per-pixel squared distance to it (summed over RGB), at the image's size.
RunResults mean_image_baseline(const std::string& dataset_root, const std::string& maps_dir);

}  // namespace anomalysd

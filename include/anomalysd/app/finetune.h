// `anomalysd finetune`: few-shot multi-class fine-tuning (paper §4.1, §5.1) — one model for all
// chosen classes from their K normal shots: first the inpainting UNet (eq. 8), then the VAE
// decoder (eq. 9–10), each optionally (Table 3).
//
// <output>/
//   shots.json                  the K shots per class (eval --shots-file uses it)
//   train_log.csv, loss.png     loss per step, and its curve (redrawn at each save)
//   checkpoints/step-NNNNNNN/   diffusers pipeline folders + training_state.{json,safetensors}
//   model/                      the final pipeline folder (+ shots.json): what eval and infer load
//   masks/                      with --save-masks: foreground masks and sample training masks
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace anomalysd {

struct FinetuneOptions {
  std::string config;
  std::vector<std::string> overrides;
  std::string model;               // base pipeline folder (overrides model.path)
  std::string dataset = "mvtec";
  std::string root;
  int64_t shots = 1;               // K per class (≥ 1)
  std::string output;
  std::vector<std::string> classes;
  bool resume = false;             // continue from the newest complete checkpoint
  bool overwrite = false;          // discard a previous run in output
  bool save_masks = false;
  std::string save_variant;        // "" (float32) or fp16
  int64_t stop_after = 0;          // > 0: run at most this many steps, checkpoint, stop (--resume continues)
};

struct FinetuneSummary {
  int64_t images = 0;              // training images (shots of all classes)
  int64_t unet_steps = 0, decoder_steps = 0;
  int64_t start_step = 0;          // > 0 when resumed
  int64_t steps_run = 0;
  double seconds = 0;
  double steps_per_second = 0;
  double last_unet_loss = 0, last_decoder_loss = 0;
  double first_unet_loss = 0, first_decoder_loss = 0;
  std::string model_dir;           // <output>/model ("" when stopped early)
  bool finished = false;           // every step done and the model written
};

FinetuneSummary run_finetune(const FinetuneOptions& options);

// The newest complete checkpoint folder under <output>/checkpoints ("" if none).
std::string newest_checkpoint(const std::string& output);

}  // namespace anomalysd

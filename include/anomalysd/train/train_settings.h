// `train:` — fine-tuning (paper §4.1, §5.1), field for field as the config's section spells it. A
// plain struct (no torch): core/app_config reads it from YAML, train/trainer runs on it, and the
// `finetune` command (app/) decides the folders, shots and resumes around it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "anomalysd/train/augment_config.h"

namespace anomalysd {

struct TrainSettings {
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
  std::string mixed_precision = "no";  // no | fp16 | bf16: autocast (CUDA: fp16 or bf16; CPU: bf16)
  double decoder_lpips_weight = 0.1;   // β of eq. (9)
  std::string mask = "iou";            // iou (IoU(m_r, m_f) > γ) | random (Table 4's ablation)
  std::vector<double> iou_thresholds{0.0, 0.2, 0.5};  // γ, drawn with equal probability
  std::string prompt = "hierarchical";  // hierarchical | simple ("A photo of [c].") | none
  std::string foreground = "auto";      // auto (per class from the prompts file, else object) | object | texture
  int64_t save_every = 500;             // steps between checkpoints (0 = only at the end)
  int64_t keep = 2;                     // checkpoints kept
  int64_t log_every = 10;               // steps between log lines (train_log.csv gets every step)
  AugmentConfig augment;
};

}  // namespace anomalysd

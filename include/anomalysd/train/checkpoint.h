// Fine-tuned models as diffusers pipeline folders: the base folder's files with the trained
// unet/ and vae/ weights replaced, loadable by `infer`, `eval` and diffusers itself. Written into a
// temporary folder that is renamed into place when complete, so a crash never leaves a folder
// that loads half.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "anomalysd/models/unet.h"
#include "anomalysd/models/vae.h"

namespace anomalysd {

struct PipelineWrite {
  std::string base;     // the base pipeline folder (its other components are hard-linked, or copied)
  std::string target;   // the folder to create (replaced atomically if it exists)
  std::string variant;  // "" (float32) or "fp16" (*.fp16.safetensors in half precision)
  std::map<std::string, std::string> text_files;  // extra files, name -> contents (shots.json, ...)
  std::map<std::string, std::map<std::string, torch::Tensor>> tensor_files;  // extra safetensors files
};

void write_pipeline_folder(const PipelineWrite& w, UNet2DConditionModel& unet, AutoencoderKL& vae);

// Renames `temp` onto `target` (replacing a previous target) with the directory renames being the
// only steps a crash can interrupt: the target is always either the old or the new folder.
void replace_folder(const std::string& temp, const std::string& target);

}  // namespace anomalysd

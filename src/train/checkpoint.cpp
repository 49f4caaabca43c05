#include "anomalysd/train/checkpoint.h"

#include <unistd.h>

#include <filesystem>

#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/tensor_io.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace {

// Files of the base pipeline: hard links (they never change), copies across file systems.
void link_or_copy(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::create_hard_link(from, to, ec);
  if (ec) fs::copy_file(from, to, fs::copy_options::overwrite_existing);
}

void link_tree(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  for (const auto& e : fs::directory_iterator(from)) {
    if (e.is_directory())
      link_tree(e.path(), to / e.path().filename());
    else if (e.is_regular_file())
      link_or_copy(e.path(), to / e.path().filename());
  }
}

std::map<std::string, torch::Tensor> module_tensors(torch::nn::Module& m, bool half) {
  std::map<std::string, torch::Tensor> out;
  auto put = [&](const std::string& k, const torch::Tensor& t) {
    torch::Tensor v = t.detach().to(torch::kCPU);
    if (v.is_floating_point()) v = v.to(half ? torch::kHalf : torch::kFloat);
    out[k] = v.contiguous();
  };
  for (const auto& p : m.named_parameters(true)) put(p.key(), p.value());
  for (const auto& b : m.named_buffers(true)) put(b.key(), b.value());
  return out;
}

}  // namespace

void replace_folder(const std::string& temp, const std::string& target) {
  const fs::path old = fs::path(target).string() + ".old-" + std::to_string(::getpid());
  const bool had = fs::exists(target);
  if (had) fs::rename(target, old);
  fs::rename(temp, target);
  if (had) fs::remove_all(old);
}

void write_pipeline_folder(const PipelineWrite& w, UNet2DConditionModel& unet, AutoencoderKL& vae) {
  const fs::path base(w.base), target(w.target);
  if (!fs::is_regular_file(base / "model_index.json")) throw FormatError(w.base, "not a diffusers pipeline folder (no model_index.json)");
  if (!w.variant.empty() && w.variant != "fp16") throw InputError("save variant must be \"\" or fp16, got '" + w.variant + "'");
  const fs::path temp = target.parent_path() / ("." + target.filename().string() + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(temp);
  fs::create_directories(temp);
  try {
    // 1. everything but the trained weights, from the base
    for (const auto& e : fs::directory_iterator(base)) {
      const std::string name = e.path().filename().string();
      if (name == "unet" || name == "vae") {
        fs::create_directories(temp / name);
        fs::copy_file(e.path() / "config.json", temp / name / "config.json");
      } else if (name.rfind("training_state", 0) == 0 || name == "shots.json" || name.rfind('.', 0) == 0) {
        continue;  // a fine-tuned base's own records are not this model's
      } else if (e.is_directory()) {
        link_tree(e.path(), temp / name);
      } else if (e.is_regular_file()) {
        link_or_copy(e.path(), temp / name);
      }
    }
    // 2. the trained weights, under the state-dict names diffusers uses
    const bool half = w.variant == "fp16";
    const std::string file = half ? "diffusion_pytorch_model.fp16.safetensors" : "diffusion_pytorch_model.safetensors";
    save_safetensors((temp / "unet" / file).string(), module_tensors(*unet, half), {{"format", "pt"}});
    save_safetensors((temp / "vae" / file).string(), module_tensors(*vae, half), {{"format", "pt"}});
    // 3. records
    for (const auto& [name, text] : w.text_files) write_file_atomically((temp / name).string(), text);
    for (const auto& [name, tensors] : w.tensor_files) save_safetensors((temp / name).string(), tensors, {{"format", "anomalysd-training-state"}});
  } catch (...) {
    std::error_code ec;
    fs::remove_all(temp, ec);
    throw;
  }
  replace_folder(temp.string(), target.string());
}

}  // namespace anomalysd

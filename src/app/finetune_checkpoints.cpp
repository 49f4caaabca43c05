// `finetune`'s checkpoints: what a resume must agree on, atomic pipeline-folder checkpoints with
// the optimizer state of every part, and the restore of a part's state on resume.
#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include <spdlog/spdlog.h>

#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/util/hash.h"
#include "anomalysd/train/checkpoint.h"
#include "anomalysd/core/runtime.h"
#include "anomalysd/core/version.h"
#include "app/finetune_internal.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace finetune_detail {

std::string training_identity(const AppConfig& c, const std::string& base, const nlohmann::json& shots, const std::string& dataset) {
  TrainSettings t = c.train;
  t.save_every = 0;
  t.keep = 0;
  t.log_every = 0;
  // The length: the sample stream of a part is a function of the step index alone, so a longer
  // run trains the very steps a shorter one did, then more.
  t.unet_steps = t.decoder_steps = t.unet_epochs = t.decoder_epochs = 0;
  AppConfig x;
  x.train = t;
  x.resolution = c.resolution;
  x.prompts = c.prompts;
  x.runtime.seed = c.runtime.seed;
  x.runtime.dtype = resolved_dtype(c.runtime);  // `auto` as resolved on this machine
  x.features = c.features;
  const nlohmann::json id = {{"config", x.to_yaml()}, {"base", fs::absolute(base).lexically_normal().string()}, {"shots", shots}, {"dataset", dataset}};
  return hex(fnv1a(json_compact(id)));
}

Progress checkpoint_progress(const nlohmann::json& info) {
  Progress p;
  if (info.contains("unet_done")) {
    p.unet = info.value("unet_done", int64_t(0));
    p.decoder = info.value("decoder_done", int64_t(0));
  } else {  // written before per-part progress: the UNet's steps came first
    const int64_t next = info.value("next_step", int64_t(0)), unet = info.value("unet_steps", int64_t(0));
    p.unet = std::min(next, unet);
    p.decoder = std::max<int64_t>(0, next - unet);
  }
  return p;
}

void FinetuneRun::save_checkpoint(int part) {
  const int64_t next_step = done_.total();
  // Several ranks: rank 0 saves what every rank holds; the others wait at the barrier meanwhile.
  check_ranks_agree(next_step);
  if (!pg_->is_main()) {
    pg_->barrier("checkpoint-" + std::to_string(next_step));
    return;
  }
  const fs::path dir = fs::path(options_.output) / "checkpoints";
  fs::create_directories(dir);
  char name[32];
  std::snprintf(name, sizeof name, "step-%07lld", static_cast<long long>(next_step));
  std::map<std::string, torch::Tensor> state = trainer_->state_tensors();  // every part's optimizer state
  if (state.empty()) state["none"] = torch::zeros({1});
  nlohmann::json info = {{"format", "anomalysd-training-state"}, {"next_step", next_step}, {"train_hash", hash_},
                         {"unet_steps", unet_steps_}, {"decoder_steps", decoder_steps_}, {"unet_done", done_.unet},
                         {"decoder_done", done_.decoder}, {"base", base_}, {"world_size", pg_->world_size()},
                         {"versions", {{"anomalysd", project_version()}, {"libtorch", libtorch_version()}}}};
  info.update(trainer_->state_record());
  info["part"] = part_name(part);
  PipelineWrite w;
  w.base = base_;
  w.target = (dir / name).string();
  w.variant = options_.save_variant;
  w.text_files = {{"shots.json", json_text(shots_json_)}, {"training_state.json", json_text(info)}};
  w.tensor_files = {{"training_state.safetensors", state}};
  trainer_->with_averaged_weights([&] { write_pipeline_folder(w, pipe_.unet, pipe_.vae); });  // the folder holds them
  // keep the newest `keep`
  std::vector<std::string> all;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0) all.push_back(e.path().string());
  std::sort(all.begin(), all.end());
  for (std::size_t i = 0; i + static_cast<std::size_t>(config_.train.keep) < all.size(); ++i) fs::remove_all(all[i]);
  write_loss_plot((fs::path(options_.output) / "loss.png").string(), log_);
  spdlog::info("checkpoint: {}", w.target);
  pg_->barrier("checkpoint-" + std::to_string(next_step));
}

}  // namespace finetune_detail

std::string newest_checkpoint(const std::string& output) {
  const fs::path dir = fs::path(output) / "checkpoints";
  if (!fs::is_directory(dir)) return "";
  std::vector<std::string> all;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    // Complete checkpoints only: a save in progress lives under a dot-name until its rename.
    if (e.is_directory() && name.rfind("step-", 0) == 0 && fs::is_regular_file(e.path() / "training_state.json")) all.push_back(e.path().string());
  }
  if (all.empty()) return "";
  std::sort(all.begin(), all.end());
  return all.back();
}

}  // namespace anomalysd

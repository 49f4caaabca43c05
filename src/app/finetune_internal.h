// The parts of `anomalysd finetune` (app/finetune.h), shared by its three files: the loop and its
// data (finetune.cpp), checkpoints and resume (finetune_checkpoints.cpp), the loss log and its
// plot (finetune_log.cpp). Private to the library.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "anomalysd/app/finetune.h"
#include "anomalysd/core/app_config.h"
#include "anomalysd/core/distributed.h"
#include "anomalysd/data/dataset.h"
#include "anomalysd/models/alexnet_lpips.h"
#include "anomalysd/models/sd_pipeline.h"
#include "anomalysd/core/runtime.h"
#include "anomalysd/train/optim.h"

namespace anomalysd::finetune_detail {

enum Part : int { kUnet = 0, kDecoder = 1 };
inline const char* part_name(int p) { return p == kUnet ? "unet" : "decoder"; }

struct Shot {
  std::string cls, path;
  torch::Tensor image;       // [1, 3, R, R] in [0, 1]
  torch::Tensor foreground;  // [1, 1, R, R] 0/1
  std::vector<std::string> prompts;
};

struct Batch {
  torch::Tensor images, masks, timesteps, noise;
  std::vector<std::string> prompts;
};

// One logged step: global step, part, loss.
using LoggedStep = std::tuple<int64_t, int, double>;

// --- finetune_log.cpp ----------------------------------------------------------------------------
// The loss curve of train_log.csv: one colour per part, log scale.
void write_loss_plot(const std::string& path, const std::vector<LoggedStep>& log);
// train_log.csv's header and the lines of the steps before `next_step` (kept on resume; later
// ones are redone), into `text` and `log`.
void read_train_log(const std::string& path, int64_t next_step, std::ostringstream& text, std::vector<LoggedStep>& log);

// --- finetune_checkpoints.cpp --------------------------------------------------------------------
// What a checkpoint must agree on to be resumed: everything that changes what was trained so far.
// The training length (steps, epochs) is not part of it: a run may continue to a larger total.
std::string training_identity(const AppConfig& c, const std::string& base, const nlohmann::json& shots, const std::string& dataset);

// Steps done per part, as a checkpoint records them (older checkpoints: from next_step).
struct Progress {
  int64_t unet = 0, decoder = 0;
  int64_t total() const { return unet + decoder; }
};
Progress checkpoint_progress(const nlohmann::json& info);

class Trainer {
 public:
  // `group`: the ranks that train together (a single-process group when not launched as several).
  Trainer(const AppConfig& config, const FinetuneOptions& o, std::shared_ptr<ProcessGroup> group)
      : config_(config), o_(o), pg_(std::move(group)) {}
  FinetuneSummary run();

 private:
  // data (finetune.cpp)
  void load_data(const Dataset& dataset, const ShotSelection& shots);
  std::vector<int64_t> permutation(int part, int64_t epoch) const;
  Batch make_batch(int part, int64_t first_index, int64_t n);
  torch::Tensor contexts(const std::vector<std::string>& prompts);
  std::vector<NamedParameter> part_parameters(int part);
  void set_trainable(int part);
  void save_masks();
  void enter_part(int part, int64_t local);
  double train_step(int part, int64_t local, double* mse, double* lpips, double* grad_norm);
  int64_t steps_for(const char* what, int64_t steps, int64_t epochs) const;
  // several ranks: rank 0's weights everywhere, and the check that every rank still holds them
  void synchronize_weights();
  void prepare_output();
  void check_ranks_agree(int64_t step);

  // checkpoints (finetune_checkpoints.cpp)
  void save_checkpoint(int part);
  void stash_part_state(int part);
  void restore_part_state(int part);

  AppConfig config_;
  FinetuneOptions o_;
  std::shared_ptr<ProcessGroup> pg_;
  Runtime rt_;
  std::string base_;
  SdPipeline pipe_;
  Lpips lpips_{nullptr};
  std::vector<Shot> shots_;
  nlohmann::json shots_json_;
  std::string hash_;
  std::map<std::string, torch::Tensor> context_cache_;
  std::unique_ptr<Adam> adam_;
  std::unique_ptr<Ema> ema_;
  int current_part_ = -1;
  int64_t unet_steps_ = 0, decoder_steps_ = 0;  // the totals of this run
  Progress done_;                               // steps done per part
  std::vector<LoggedStep> log_;
  double loss_scale_ = 65536.0;  // fp16 autocast only
  int64_t good_steps_ = 0;
  // The resumed checkpoint: its folder, record and tensors (loaded once, when a part needs them).
  std::string resume_from_;
  nlohmann::json state_info_ = nlohmann::json::object();
  // The optimizer state (Adam, EMA shadows, raw weights) of a part left behind, kept in every later
  // checkpoint so that a finished run can continue that part to a larger total: "<part>.adam.*" …
  std::map<std::string, torch::Tensor> stashed_;
  nlohmann::json stashed_steps_ = nlohmann::json::object();  // part -> Adam steps
};

}  // namespace anomalysd::finetune_detail

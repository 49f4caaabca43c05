// The parts of `anomalysd finetune` (app/finetune.h), shared by its three files: the command
// around train/trainer.h's loop (finetune.cpp), checkpoints and resume (finetune_checkpoints.cpp),
// the loss log and its plot (finetune_log.cpp). Private to the library.
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
#include "anomalysd/core/runtime.h"
#include "anomalysd/data/dataset.h"
#include "anomalysd/models/sd_pipeline.h"
#include "anomalysd/train/trainer.h"

namespace anomalysd::finetune_detail {

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

// The trainer's gradient sum over the ranks of this job's process group.
class ProcessGroupReducer : public GradientReducer {
 public:
  explicit ProcessGroupReducer(ProcessGroup& group) : group_(group) {}
  int rank() const override { return group_.rank(); }
  int world_size() const override { return group_.world_size(); }
  void all_reduce_sum(std::vector<torch::Tensor>& tensors, const std::string& what) override { group_.all_reduce_sum(tensors, what); }

 private:
  ProcessGroup& group_;
};

// The `finetune` command around train/'s Trainer: the dataset and its shots, the output folder,
// resume decisions, checkpoints, the loss log, and the ranks kept in agreement.
class FinetuneRun {
 public:
  // `group`: the ranks that train together (a single-process group when not launched as several).
  FinetuneRun(const AppConfig& config, const FinetuneOptions& options, std::shared_ptr<ProcessGroup> group)
      : config_(config), options_(options), pg_(std::move(group)), reducer_(*pg_) {}
  FinetuneSummary run();

 private:
  // finetune.cpp
  std::vector<TrainingShot> load_shots(const Dataset& dataset, const ShotSelection& shots) const;
  int64_t steps_for(const char* what, int64_t steps, int64_t epochs, int64_t images) const;
  void save_masks();
  void enter_part(int part, int64_t local);
  void synchronize_weights();  // several ranks: rank 0's weights everywhere
  void prepare_output();
  void check_ranks_agree(int64_t step);  // … and that every rank still holds them
  StepResult train_step(int64_t local);  // the current part's

  // finetune_checkpoints.cpp
  void save_checkpoint(int part);

  AppConfig config_;
  FinetuneOptions options_;
  std::shared_ptr<ProcessGroup> pg_;
  ProcessGroupReducer reducer_;
  Runtime rt_;
  std::string base_;
  SdPipeline pipe_;
  std::unique_ptr<Trainer> trainer_;
  nlohmann::json shots_json_;
  std::string hash_;
  int64_t unet_steps_ = 0, decoder_steps_ = 0;  // the totals of this run
  Progress done_;                               // steps done per part
  std::vector<LoggedStep> log_;
  // The resumed checkpoint: its folder and record.
  std::string resume_from_;
  nlohmann::json state_info_ = nlohmann::json::object();
};

}  // namespace anomalysd::finetune_detail

// The fine-tuning loop of AnomalySD (paper §4.1, §5.1), read top to bottom in train/trainer.cpp:
// the sample stream of each part (augmented shots, IoU-filtered rectangles, prompts, timesteps,
// noise), one optimizer step (eq. 8 for the UNet, eq. 9–10 for the VAE decoder) over a global batch
// split among data-parallel ranks, with fp16 loss scaling, the gradients' sum over the ranks,
// clipping, Adam and EMA; and the optimizer state a checkpoint keeps so that a resumed run
// continues bit for bit. Folders, shots, logs and resume decisions are the `finetune` command's
// (app/finetune.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "anomalysd/models/alexnet_lpips.h"
#include "anomalysd/models/sd_pipeline.h"
#include "anomalysd/train/optim.h"
#include "anomalysd/train/train_settings.h"

namespace anomalysd {

// The two parts §4.1 fine-tunes, in this order (Table 3).
enum TrainPart : int { kUnet = 0, kDecoder = 1 };
inline const char* part_name(int part) { return part == kUnet ? "unet" : "decoder"; }

// One normal shot, as the loop samples it.
struct TrainingShot {
  std::string cls, path;
  torch::Tensor image;       // [1, 3, R, R] in [0, 1]
  torch::Tensor foreground;  // [1, 1, R, R] 0/1
  std::vector<std::string> prompts;  // the class's hierarchical set
};

struct TrainingBatch {
  torch::Tensor images, masks, timesteps, noise;  // masks/timesteps/noise: the UNet part only
  std::vector<std::string> prompts;
};

// The sum over data-parallel ranks of the step's gradients (and its loss sums). One process:
// rank 0 of 1, and the sum is the tensors themselves. core/distributed's ProcessGroup provides
// the multi-process one (app/finetune.cpp adapts it).
class GradientReducer {
 public:
  virtual ~GradientReducer() = default;
  virtual int rank() const { return 0; }
  virtual int world_size() const { return 1; }
  // In place; `what` names the collective in an error ("step 5 (unet) gradients").
  virtual void all_reduce_sum(std::vector<torch::Tensor>& tensors, const std::string& what) { (void)tensors, (void)what; }
};

// The contiguous share [begin, begin + count) of `rank` among `world` of `n` items starting at
// `first`: the first n % world ranks get one more.
std::pair<int64_t, int64_t> rank_share(int64_t first, int64_t n, int rank, int world);

// A step whose loss is NaN or infinite (on any rank): nothing was applied.
struct NonFiniteLoss : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct StepResult {
  double loss = 0, mse = 0, lpips = 0;  // the global batch's mean (mse, lpips: the decoder's terms)
  double grad_norm = 0;                 // before clipping
};

class Trainer {
 public:
  // `pipe` and `lpips` (null unless the decoder part trains) are trained in place; `seed` fixes
  // the sample stream: sample i of a part is a function of (seed, part, i) alone.
  Trainer(SdPipeline& pipe, Lpips lpips, std::vector<TrainingShot> shots, TrainSettings settings, int64_t resolution, int64_t seed,
          torch::Device device, GradientReducer& reducer);

  const std::vector<TrainingShot>& shots() const { return shots_; }

  // Samples [first, first + n) of `part`'s stream (§5.1 augmentations; §4.1 masks and prompts).
  TrainingBatch make_batch(int part, int64_t first, int64_t n);

  // Makes `part` the trained one at its local step `local`: the previous part keeps its averaged
  // weights and its optimizer state (stashed for later checkpoints); a fresh Adam/EMA, restored
  // from the resumed state when local > 0. Returns false when `part` was already current.
  bool enter_part(int part, int64_t local);
  int current_part() const { return current_part_; }
  const std::vector<NamedParameter>& parameters() const;  // the current part's

  // One optimizer step of the current part at its local step `local` (eq. 8 or eq. 9–10);
  // `step` (global) names it in messages. Throws NonFiniteLoss before touching the weights.
  StepResult step(int64_t local, int64_t step);

  // The end of training: the current part keeps its averaged (EMA) weights.
  void finish();

  // --- checkpoint state ------------------------------------------------------------------------
  // Runs `save` with the averaged weights in place (a checkpoint holds them), then swaps back.
  void with_averaged_weights(const std::function<void()>& save);
  // Every part's optimizer state: the live one as "adam.*", "ema.*", "raw.*", the parts left
  // behind as "done.<part>.*" (copies on the CPU).
  std::map<std::string, torch::Tensor> state_tensors() const;
  // Its record: part, adam_steps, stashed_adam_steps, loss_scale, good_steps.
  nlohmann::json state_record() const;
  // What a checkpoint saved, for the parts to restore as they are entered; `source` names it in
  // messages.
  void load_state(const std::map<std::string, torch::Tensor>& tensors, const nlohmann::json& record, const std::string& source);
  // A checksum of the current part's weights, Adam and EMA state (ranks compare it).
  double state_checksum() const;

 private:
  std::vector<int64_t> permutation(int part, int64_t epoch) const;
  torch::Tensor contexts(const std::vector<std::string>& prompts);
  std::vector<NamedParameter> part_parameters(int part);
  void set_trainable(int part);
  void stash_part_state(int part);
  void restore_part_state(int part, int64_t local);

  SdPipeline& pipe_;
  Lpips lpips_;
  std::vector<TrainingShot> shots_;
  TrainSettings settings_;
  int64_t resolution_;
  int64_t seed_;
  torch::Device device_;
  GradientReducer& reducer_;
  std::map<std::string, torch::Tensor> context_cache_;
  std::unique_ptr<Adam> adam_;
  std::unique_ptr<Ema> ema_;
  int current_part_ = -1;
  double loss_scale_ = 65536.0;  // fp16 autocast only
  int64_t good_steps_ = 0;
  // The optimizer state (Adam, EMA shadows, raw weights) of parts not live: "done.<part>.adam.*" …,
  // kept in every later checkpoint so that a finished run can continue that part to a larger total.
  std::map<std::string, torch::Tensor> stashed_;
  nlohmann::json stashed_steps_ = nlohmann::json::object();  // part -> Adam steps
  std::string state_source_;                                 // the checkpoint it came from
};

}  // namespace anomalysd

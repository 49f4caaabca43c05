#include "anomalysd/app/finetune.h"
#include "app/finetune_internal.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "anomalysd/anomaly/inpaint.h"
#include "anomalysd/app/eval.h"
#include "anomalysd/app/method.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/data/model_image.h"
#include "anomalysd/data/prompts.h"
#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/train/checkpoint.h"
#include "anomalysd/train/training_data.h"
#include "anomalysd/util/progress.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace finetune_detail {

void FinetuneRun::save_masks() {
  const fs::path dir = fs::path(options_.output) / "masks";
  const std::vector<TrainingShot>& shots = trainer_->shots();
  for (const TrainingShot& s : shots) {
    fs::create_directories(dir / s.cls);
    const std::string stem = fs::path(s.path).stem().string();
    cv::Mat rgb = tensor_to_rgb8(s.image[0]);
    const cv::Mat fg = mask_to_mat(s.foreground);
    cv::Mat tinted = rgb.clone();
    tinted.setTo(cv::Scalar(255, 0, 0), fg == 0);
    cv::addWeighted(rgb, 0.6, tinted, 0.4, 0, tinted);
    write_png((dir / s.cls / (stem + "_foreground.png")).string(), tinted);
  }
  // The first training samples with their masks (red rectangle), as the UNet sees them.
  const int64_t n = std::min<int64_t>(8, static_cast<int64_t>(shots.size()) * 2);
  const TrainingBatch b = trainer_->make_batch(kUnet, 0, n);
  for (int64_t i = 0; i < n; ++i) {
    cv::Mat rgb = tensor_to_rgb8(b.images[i]);
    const cv::Mat m = mask_to_mat(b.masks.narrow(0, i, 1).cpu());
    cv::Mat red = rgb.clone();
    red.setTo(cv::Scalar(255, 0, 0), m);
    cv::addWeighted(rgb, 0.5, red, 0.5, 0, rgb);
    write_png((dir / ("sample_" + std::to_string(i) + ".png")).string(), rgb);
  }
  spdlog::info("wrote foreground and training masks to {}", dir.string());
}

// The shots as the trainer samples them: images at the model resolution, foreground masks
// (train.foreground, else the class's prompts file says object or texture), the prompt set.
std::vector<TrainingShot> FinetuneRun::load_shots(const Dataset& dataset, const ShotSelection& shots) const {
  std::vector<TrainingShot> out;
  std::vector<std::string> prompt_files;
  for (const auto& p : config_.prompts) prompt_files.push_back(resolve_config_path(config_, p));
  const PromptBook book = PromptBook::load(prompt_files);
  for (const auto& c : dataset.classes) {
    const ClassPrompts prompts = book.for_class(c.name);
    const std::string mode = config_.train.foreground != "auto" ? config_.train.foreground
                             : prompts.foreground.empty()       ? std::string("object")
                                                                : prompts.foreground;
    for (const auto& path : shots.shots.at(c.name)) {
      TrainingShot s;
      s.cls = c.name;
      s.path = path;
      const ModelImage img = read_model_image(path, config_.resolution);
      s.image = img.tensor;
      const cv::Mat small = [&] {
        cv::Mat m;
        cv::resize(img.original, m, cv::Size(static_cast<int>(config_.resolution), static_cast<int>(config_.resolution)), 0, 0, cv::INTER_AREA);
        return m;
      }();
      const cv::Mat fg = foreground_mask(small, parse_foreground_mode(mode));
      s.foreground = torch::from_blob(const_cast<uint8_t*>(fg.ptr<uint8_t>()), {1, 1, fg.rows, fg.cols}, torch::kByte).to(torch::kFloat).clone();
      s.prompts = prompts.all();
      spdlog::info("shot {} ({}): foreground {} covers {:.0f}%", path, c.name, mode, 100.0 * s.foreground.mean().item<double>());
      out.push_back(std::move(s));
    }
  }
  return out;
}


int64_t FinetuneRun::steps_for(const char* what, int64_t steps, int64_t epochs, int64_t images) const {
  // §5.1 counts the training length in epochs over the shots (4000 UNet, 200 decoder); steps,
  // when set (> 0), win over epochs.
  if (steps > 0 || epochs <= 0) return steps;
  const int64_t per_step = config_.train.batch_size * config_.train.grad_accumulation;
  const int64_t n = (epochs * images + per_step - 1) / per_step;
  spdlog::info("{}: {} epochs over {} image(s) at {} per step = {} steps", what, epochs, images, per_step, n);
  return n;
}

void FinetuneRun::enter_part(int part, int64_t local) {
  if (!trainer_->enter_part(part, local) || !pg_->active()) return;
  std::vector<torch::Tensor> params;
  int64_t count = 0, bytes = 0;
  for (const auto& p : trainer_->parameters()) {
    params.push_back(p.tensor);
    count += p.tensor.numel();
    bytes += p.tensor.numel() * static_cast<int64_t>(p.tensor.element_size());
  }
  spdlog::info("{}: {} parameters; each step all-reduces {:.1f} MB of gradients over {} ranks in {} bucket(s) ({})", part_name(part), count,
               static_cast<double>(bytes) / 1e6, pg_->world_size(), plan_buckets(params, 25 << 20).size(), pg_->backend());
}

void FinetuneRun::synchronize_weights() {
  if (!pg_->active()) return;
  std::vector<torch::Tensor> tensors;
  for (const auto& p : pipe_.unet->parameters()) tensors.push_back(p);
  for (const auto& b : pipe_.unet->buffers()) tensors.push_back(b);
  for (const auto& p : pipe_.vae->parameters()) tensors.push_back(p);
  for (const auto& b : pipe_.vae->buffers()) tensors.push_back(b);
  // The text encoder is frozen and read from the same files by every rank.
  pg_->broadcast(tensors, 0, "sending rank 0's initial weights");
}

// Every rank must hold the same weights and optimizer state (same gradients after the all-reduce,
// same Adam step): a checksum of both, compared over the ranks before rank 0 saves them.
void FinetuneRun::check_ranks_agree(int64_t step) {
  if (!pg_->active() || trainer_->current_part() < 0) return;
  const double sum = trainer_->state_checksum();
  const auto [lo, hi] = pg_->min_max(sum, "the weights' checksum at step " + std::to_string(step));
  if (lo != hi)
    throw DistributedError(fmt::format("step {}: the ranks' weights differ (checksums from {:.17g} to {:.17g}); every rank must run the same "
                                       "LibTorch, device type and thread count. Not saved; the last complete checkpoint is {}",
                                       step, lo, hi, newest_checkpoint(options_.output)));
}

// One step of the trainer; a NaN loss names the last good checkpoint to resume from.
StepResult FinetuneRun::train_step(int64_t local) {
  try {
    return trainer_->step(local, done_.total());
  } catch (const NonFiniteLoss& e) {
    const std::string last = newest_checkpoint(options_.output);
    throw std::runtime_error(std::string(e.what()) + ". The last good checkpoint is " + (last.empty() ? std::string("none") : last) +
                             " (resume from it with a lower train.lr, or check the images)");
  }
}

// Rank 0's part of the start: a fresh run (an old one discarded with --overwrite), or the newest
// complete checkpoint, which a larger training length continues; then the output folder made ready.
void FinetuneRun::prepare_output() {
  const fs::path out(options_.output);
  if (options_.resume) {
    resume_from_ = newest_checkpoint(options_.output);
    if (resume_from_.empty()) {
      spdlog::warn("--resume: no checkpoint in {}; starting from the beginning", options_.output);
    } else {
      state_info_ = read_json_file((fs::path(resume_from_) / "training_state.json").string());
      if (state_info_.value("train_hash", "") != hash_)
        throw InputError(resume_from_ + ": was trained with another config (base model, data, shots, lr, masks, prompts, parts, ...: hash " +
                         state_info_.value("train_hash", "?") + ", now " + hash_ +
                         "); only the training length may change on --resume. Resume with the same settings, or pass --overwrite");
      base_ = state_info_.value("base", base_);
    }
  } else if (fs::exists(out / "checkpoints") || fs::exists(out / "model")) {
    if (!options_.overwrite)
      throw InputError(options_.output + ": holds a previous fine-tuning run; pass --resume to continue it or --overwrite to discard it");
    for (const char* p : {"checkpoints", "model", "masks"}) fs::remove_all(out / p);
    for (const char* f : {"train_log.csv", "loss.png", "shots.json"}) fs::remove(out / f);
  }
  fs::create_directories(out);
  remove_stale_temporaries(options_.output);
  // Stale temporary folders of an interrupted save are never loaded; remove them.
  if (fs::is_directory(out / "checkpoints"))
    for (const auto& e : fs::directory_iterator(out / "checkpoints"))
      if (e.path().filename().string().rfind('.', 0) == 0) fs::remove_all(e.path());
  write_file_atomically((out / "shots.json").string(), json_text(shots_json_));
}

FinetuneSummary FinetuneRun::run() {
  const auto start_time = std::chrono::steady_clock::now();
  if (options_.shots < 1) throw InputError("finetune needs at least one shot per class (--shots K, K >= 1)");
  if (options_.output.empty()) throw InputError("--output is required");
  rt_ = apply_runtime(config_.runtime);
  base_ = model_dir_of(config_, options_.model);
  const Dataset dataset = load_dataset(options_.dataset, options_.root, options_.classes);
  const ShotSelection shots = sample_shots(dataset, options_.shots, static_cast<uint64_t>(config_.runtime.seed));
  shots_json_ = shots_to_json(shots, dataset.root);
  hash_ = training_identity(config_, base_, shots_json_, options_.dataset);
  const fs::path out(options_.output);

  const int world = pg_->world_size();
  const int64_t global_batch = config_.train.batch_size * config_.train.grad_accumulation;
  if (world > global_batch)
    throw InputError("world size " + std::to_string(world) + " exceeds the global batch (train.batch_size x train.grad_accumulation = " +
                     std::to_string(global_batch) + "): every rank needs at least one sample per step");

  // 1. a fresh run, or the newest complete checkpoint: rank 0 decides and alone writes to the
  // output; the others read what it chose.
  if (pg_->is_main()) prepare_output();
  if (pg_->active()) {
    resume_from_ = pg_->share("finetune/resume-from", resume_from_);
    if (!pg_->is_main() && !resume_from_.empty()) {
      const fs::path state = fs::path(resume_from_) / "training_state.json";
      if (!fs::is_regular_file(state))
        throw InputError("rank " + std::to_string(pg_->rank()) + ": cannot read " + state.string() +
                         ", the checkpoint rank 0 resumes from: --output must be on a filesystem every rank sees (or at the same path on each machine)");
      state_info_ = read_json_file(state.string());
      base_ = state_info_.value("base", base_);
    }
  }

  // 2. models: weights trained in float32 (autocast on CUDA when asked)
  pipe_ = load_sd_pipeline(resume_from_.empty() ? base_ : resume_from_, resume_from_.empty() ? config_.model.variant : options_.save_variant);
  pipe_.to(rt_.device, torch::kFloat);
  synchronize_weights();
  if (!pipe_.is_inpainting()) throw InputError(base_ + ": the UNet has " + std::to_string(pipe_.unet->config.in_channels) + " input channels; fine-tuning needs an inpainting UNet (9)");
  check_inpaint_size(pipe_, config_.resolution, config_.resolution);
  const TrainSettings& t = config_.train;
  std::vector<TrainingShot> training_shots = load_shots(dataset, shots);
  const int64_t n = static_cast<int64_t>(training_shots.size());
  unet_steps_ = (t.parts == "unet" || t.parts == "both") ? steps_for("UNet", t.unet_steps, t.unet_epochs, n) : 0;
  decoder_steps_ = (t.parts == "decoder" || t.parts == "both") ? steps_for("decoder", t.decoder_steps, t.decoder_epochs, n) : 0;
  Lpips lpips{nullptr};  // eq. 9's perceptual term: only the decoder part needs it
  if (decoder_steps_ > 0) {
    lpips = load_lpips(require_feature_weights(config_, "features.alexnet", config_.features.alexnet),
                       require_feature_weights(config_, "features.lpips", config_.features.lpips));
    lpips->to(rt_.device, torch::kFloat);
  }
  trainer_ = std::make_unique<Trainer>(pipe_, lpips, std::move(training_shots), t, config_.resolution, config_.runtime.seed, rt_.device, reducer_);
  if (!rt_.device.is_cuda() && t.mixed_precision == "fp16")
    spdlog::warn("train.mixed_precision = fp16 needs CUDA (LibTorch's CPU autocast is bf16 only); training in float32 on the CPU");
  if (!rt_.device.is_cuda() && t.mixed_precision == "bf16") {
    const std::string caveat = cpu_bfloat16_caveat();
    if (!caveat.empty()) spdlog::warn("train.mixed_precision = bf16: {}", caveat);
  }
  if (t.mixed_precision != "no") spdlog::info("training in {} autocast: weights, Adam and the losses in float32", t.mixed_precision);
  if (options_.save_masks && pg_->is_main()) save_masks();

  // What the checkpoint had done, and its optimizer states (each part's, loaded when it resumes).
  if (!resume_from_.empty()) {
    done_ = checkpoint_progress(state_info_);
    if (done_.unet > unet_steps_ || done_.decoder > decoder_steps_)
      throw InputError(resume_from_ + ": has trained " + std::to_string(done_.unet) + " UNet and " + std::to_string(done_.decoder) +
                       " decoder step(s), more than this config's " + std::to_string(unet_steps_) + " and " + std::to_string(decoder_steps_) +
                       "; raise train.unet_steps/unet_epochs (or the decoder's) to continue, or use the checkpoint as it is");
    const std::string state = (fs::path(resume_from_) / "training_state.safetensors").string();
    trainer_->load_state(load_all(state), state_info_, resume_from_);
    const int before_world = state_info_.value("world_size", 1);
    if (before_world != world)
      spdlog::info("resuming a run of {} process(es) on {}: the same global batch of {} sample(s) per step, split {} way(s); results differ from "
                   "an uninterrupted run only in the order of summation",
                   before_world, world, global_batch, world);
    const int64_t before_u = state_info_.value("unet_steps", unet_steps_), before_d = state_info_.value("decoder_steps", decoder_steps_);
    if (before_u != unet_steps_ || before_d != decoder_steps_)
      spdlog::info("continuing {} to a new length: UNet {} -> {} steps, decoder {} -> {} steps (done: {} and {})", resume_from_, before_u,
                   unet_steps_, before_d, decoder_steps_, done_.unet, done_.decoder);
  }
  const int64_t total = unet_steps_ + decoder_steps_;
  FinetuneSummary summary;
  summary.images = n;
  summary.unet_steps = unet_steps_;
  summary.decoder_steps = decoder_steps_;
  summary.start_step = done_.total();
  spdlog::info("fine-tuning on {} shot(s) of {} class(es): {} UNet step(s), {} decoder step(s), batch {} x {} accumulation{}{}", n,
               dataset.classes.size(), unet_steps_, decoder_steps_, t.batch_size, t.grad_accumulation,
               world > 1 ? fmt::format(", split over {} ranks", world) : std::string(),
               done_.total() > 0 ? ", resuming at step " + std::to_string(done_.total()) : "");

  // train_log.csv: the steps before the resume point stay, later ones are redone
  const fs::path log_path = out / "train_log.csv";
  std::ofstream log_file;
  if (pg_->is_main()) {
    std::ostringstream log_text;
    read_train_log(log_path.string(), done_.total(), log_text, log_);
    write_file_atomically(log_path.string(), log_text.str());
    log_file.open(log_path, std::ios::app);
  }

  // 3. the loop: the UNet's steps, then the decoder's
  ProgressBar bar("finetune", total - done_.total(), "step");
  int64_t steps_run = 0;
  while (done_.unet < unet_steps_ || done_.decoder < decoder_steps_) {
    const int part = done_.unet < unet_steps_ ? kUnet : kDecoder;
    int64_t& local = part == kUnet ? done_.unet : done_.decoder;
    enter_part(part, local);
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t step = done_.total();
    const StepResult r = train_step(local);
    const double loss = r.loss;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log_.emplace_back(step, part, loss);
    if (log_file.is_open()) {
      log_file << step << "," << part_name(part) << "," << std::setprecision(8) << loss << "," << r.mse << "," << r.lpips << "," << r.grad_norm << ","
               << t.lr << "," << secs << "\n";
      log_file.flush();
    }
    if (part == kUnet) {
      if (summary.first_unet_loss == 0) summary.first_unet_loss = loss;
      summary.last_unet_loss = loss;
    } else {
      if (summary.first_decoder_loss == 0) summary.first_decoder_loss = loss;
      summary.last_decoder_loss = loss;
    }
    if ((step + 1) % t.log_every == 0 || step + 1 == total)
      spdlog::info("step {}/{} {}: loss {:.5f}, grad norm {:.3f}", step + 1, total, part_name(part), loss, r.grad_norm);
    ++local;
    ++steps_run;
    bar.advance();
    const bool finished = done_.total() == total;
    const bool stopping = options_.stop_after > 0 && steps_run >= options_.stop_after && !finished;
    if ((t.save_every > 0 && done_.total() % t.save_every == 0) || finished || stopping) save_checkpoint(part);
    if (stopping) {
      bar.finish();
      pg_->finish();
      spdlog::info("stopped after {} step(s) (--stop-after) at step {}/{}; continue with --resume", steps_run, done_.total(), total);
      summary.steps_run = steps_run;
      summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
      summary.steps_per_second = summary.seconds > 0 ? static_cast<double>(steps_run) / summary.seconds : 0;
      return summary;
    }
  }
  bar.finish();
  trainer_->finish();  // the averaged weights

  // 4. the final pipeline folder, with the shots it was tuned on (rank 0; the others wait for it)
  check_ranks_agree(done_.total());
  PipelineWrite w;
  w.base = base_;
  w.target = (out / "model").string();
  w.variant = options_.save_variant;
  const nlohmann::json about = {{"format", "anomalysd-finetune"}, {"base", base_}, {"dataset", options_.dataset}, {"root", options_.root},
                                {"k", options_.shots}, {"unet_steps", unet_steps_}, {"decoder_steps", decoder_steps_},
                                {"config", config_.to_yaml()}, {"train_hash", hash_}};
  w.text_files = {{"shots.json", json_text(shots_json_)}, {"anomalysd_finetune.json", json_text(about)}};
  if (pg_->is_main()) {
    write_pipeline_folder(w, pipe_.unet, pipe_.vae);
    write_loss_plot((out / "loss.png").string(), log_);
    spdlog::info("wrote {} (and {}, {})", w.target, log_path.string(), (out / "loss.png").string());
  }
  pg_->finish();

  summary.steps_run = steps_run;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  summary.steps_per_second = summary.seconds > 0 ? static_cast<double>(steps_run) / summary.seconds : 0;
  summary.model_dir = w.target;
  summary.finished = true;
  return summary;
}

}  // namespace finetune_detail

FinetuneSummary run_finetune(const FinetuneOptions& options) {
  AppConfig config = load_app_config(options.config, options.overrides);
  // One process, or one rank of several (torchrun / srun): each on its own device share.
  const LaunchEnv env = read_launch_env();
  config.runtime = runtime_for_rank(config.runtime, env);
  const auto group = ProcessGroup::create(env, config.distributed, resolves_to_cuda(config.runtime));
  try {
    finetune_detail::FinetuneRun run(config, options, group);
    return run.run();
  } catch (const std::exception& e) {
    group->report_failure(e.what());  // the others name this rank and its reason, then exit too
    throw;
  }
}

}  // namespace anomalysd

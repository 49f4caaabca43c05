#include "anomalysd/app/finetune.h"
#include "app/finetune_internal.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <random>
#include <sstream>

#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "anomalysd/anomaly/inpaint.h"
#include "anomalysd/app/eval.h"
#include "anomalysd/app/method.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/data/prompts.h"
#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/train/checkpoint.h"
#include "anomalysd/train/losses.h"
#include "anomalysd/train/optim.h"
#include "anomalysd/train/training_data.h"
#include "anomalysd/util/progress.h"
#include "anomalysd/core/version.h"
#include "anomalysd/util/hash.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace finetune_detail {

namespace {

uint64_t mix(std::initializer_list<uint64_t> values) {
  uint64_t h = 0x243F6A8885A308D3ull;
  for (uint64_t v : values) h = splitmix64(h ^ v);
  return h;
}

void set_autocast(bool on, torch::ScalarType dtype) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(at::kCUDA, on);
  if (on) at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
  at::autocast::set_enabled(on);
  if (on) at::autocast::set_autocast_gpu_dtype(dtype);
#endif
  if (!on) at::autocast::clear_cache();
}

cv::Mat mask_to_mat(const torch::Tensor& m) {  // [1, 1, H, W] 0/1 -> CV_8U
  const torch::Tensor u8 = (m[0][0] >= 0.5).to(torch::kByte).contiguous();
  return cv::Mat(static_cast<int>(u8.size(0)), static_cast<int>(u8.size(1)), CV_8U, u8.data_ptr<uint8_t>()).clone();
}

}  // namespace

std::vector<int64_t> Trainer::permutation(int part, int64_t epoch) const {
  std::vector<int64_t> p(shots_.size());
  std::iota(p.begin(), p.end(), 0);
  std::mt19937_64 rng(mix({static_cast<uint64_t>(config_.runtime.seed), 0xE90C, static_cast<uint64_t>(part), static_cast<uint64_t>(epoch)}));
  for (std::size_t i = p.size(); i > 1; --i) std::swap(p[i - 1], p[rng() % i]);
  return p;
}

// Sample i of a part's stream: a pure function of (seed, part, i), so a resumed run sees the
// very samples an uninterrupted one would.
Batch Trainer::make_batch(int part, int64_t first, int64_t n) {
  const int64_t count = static_cast<int64_t>(shots_.size());
  const int64_t r = config_.resolution, f = vae_scale_factor(pipe_);
  std::vector<torch::Tensor> images, masks, noise;
  std::vector<int64_t> timesteps;
  Batch b;
  std::map<int64_t, std::vector<int64_t>> perms;
  for (int64_t i = first; i < first + n; ++i) {
    const int64_t epoch = i / count;
    if (!perms.count(epoch)) perms[epoch] = permutation(part, epoch);
    const Shot& shot = shots_[static_cast<std::size_t>(perms[epoch][static_cast<std::size_t>(i % count)])];
    std::mt19937_64 rng(mix({static_cast<uint64_t>(config_.runtime.seed), 0x5A17, static_cast<uint64_t>(part), static_cast<uint64_t>(i)}));
    // §5.1: brightness / contrast, scale, rotation
    const AugmentParams aug = sample_augment(rng, config_.train.augment);
    images.push_back(augment_photometric(augment_geometry(shot.image, aug, false), aug));
    if (part == kUnet) {
      // §4.1: m ∈ {m_r | IoU(m_r, m_f) > γ}, γ ∈ {0, 0.2, 0.5}
      const cv::Mat fg = mask_to_mat(augment_geometry(shot.foreground, aug, true));
      const TrainingMask tm = sample_training_mask(rng, fg, config_.train.iou_thresholds, config_.train.mask == "iou");
      if (tm.fallback) spdlog::debug("sample {}: no rectangle with IoU > {} in {} tries; using IoU {:.2f}", i, tm.gamma, tm.tries, tm.iou);
      masks.push_back(rectangle_mask(tm.rect, r, r));
      // the prompt: one of the class's hierarchical set, or the ablations' (Table 4)
      std::string prompt;
      if (config_.train.prompt == "hierarchical")
        prompt = shot.prompts[std::uniform_int_distribution<std::size_t>(0, shot.prompts.size() - 1)(rng)];
      else if (config_.train.prompt == "simple")
        prompt = "A photo of " + readable_class_name(shot.cls) + ".";
      b.prompts.push_back(prompt);
      timesteps.push_back(std::uniform_int_distribution<int64_t>(0, pipe_.scheduler.config().num_train_timesteps - 1)(rng));
      at::Generator gen = at::detail::createCPUGenerator(rng());
      noise.push_back(torch::randn({1, pipe_.unet->config.out_channels, r / f, r / f}, gen, torch::TensorOptions().dtype(torch::kFloat)));
    }
  }
  b.images = torch::cat(images, 0).to(rt_.device);
  if (part == kUnet) {
    b.masks = torch::cat(masks, 0).to(rt_.device);
    b.noise = torch::cat(noise, 0).to(rt_.device);
    b.timesteps = torch::tensor(timesteps, torch::kLong).to(rt_.device);
  }
  return b;
}

torch::Tensor Trainer::contexts(const std::vector<std::string>& prompts) {
  std::vector<torch::Tensor> out;
  for (const auto& p : prompts) {
    auto it = context_cache_.find(p);
    if (it == context_cache_.end()) it = context_cache_.emplace(p, encode_prompts(pipe_, {p})).first;  // frozen text encoder
    out.push_back(it->second);
  }
  return torch::cat(out, 0);
}

std::vector<NamedParameter> Trainer::part_parameters(int part) {
  std::vector<NamedParameter> out;
  if (part == kUnet) {
    for (const auto& p : pipe_.unet->named_parameters(true)) out.push_back({"unet." + p.key(), p.value()});
  } else {  // the decoder of VAE (§4.1): decoder and post_quant_conv; the encoder stays frozen
    for (const auto& p : pipe_.vae->named_parameters(true))
      if (p.key().rfind("decoder.", 0) == 0 || p.key().rfind("post_quant_conv.", 0) == 0) out.push_back({"vae." + p.key(), p.value()});
  }
  return out;
}

void Trainer::set_trainable(int part) {
  for (auto& p : pipe_.unet->parameters()) p.set_requires_grad(false);
  for (auto& p : pipe_.vae->parameters()) p.set_requires_grad(false);
  for (auto& p : pipe_.text_encoder->parameters()) p.set_requires_grad(false);
  if (lpips_)
    for (auto& p : lpips_->parameters()) p.set_requires_grad(false);
  for (auto& p : part_parameters(part)) p.tensor.set_requires_grad(true);
  pipe_.unet->train(part == kUnet);
  pipe_.unet->gradient_checkpointing = config_.train.gradient_checkpointing;
  pipe_.vae->train(part == kDecoder);
}

void Trainer::save_masks() {
  const fs::path dir = fs::path(o_.output) / "masks";
  for (const Shot& s : shots_) {
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
  const int64_t n = std::min<int64_t>(8, static_cast<int64_t>(shots_.size()) * 2);
  const Batch b = make_batch(kUnet, 0, n);
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

void Trainer::load_data(const Dataset& dataset, const ShotSelection& shots) {
  std::vector<std::string> prompt_files;
  for (const auto& p : config_.prompts) prompt_files.push_back(resolve_config_path(config_, p));
  const PromptBook book = PromptBook::load(prompt_files);
  for (const auto& c : dataset.classes) {
    const ClassPrompts prompts = book.for_class(c.name);
    const std::string mode = config_.train.foreground != "auto" ? config_.train.foreground
                             : prompts.foreground.empty()       ? std::string("object")
                                                                : prompts.foreground;
    for (const auto& path : shots.shots.at(c.name)) {
      Shot s;
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
      shots_.push_back(std::move(s));
    }
  }
}


int64_t Trainer::steps_for(const char* what, int64_t steps, int64_t epochs) const {
  // §5.1 counts the training length in epochs over the shots (4000 UNet, 200 decoder); steps,
  // when set (> 0), win over epochs.
  if (steps > 0 || epochs <= 0) return steps;
  const int64_t images = static_cast<int64_t>(shots_.size());
  const int64_t per_step = config_.train.batch_size * config_.train.grad_accumulation;
  const int64_t n = (epochs * images + per_step - 1) / per_step;
  spdlog::info("{}: {} epochs over {} image(s) at {} per step = {} steps", what, epochs, images, per_step, n);
  return n;
}

void Trainer::enter_part(int part, int64_t local) {
  if (part == current_part_) return;
  if (current_part_ >= 0) {
    stash_part_state(current_part_);                     // kept: a later run may continue this part
    if (ema_) ema_->swap_into(adam_->params());          // the part keeps its averaged weights
  }
  set_trainable(part);
  adam_ = std::make_unique<Adam>(part_parameters(part), config_.train.lr);
  ema_ = config_.train.ema_decay > 0 ? std::make_unique<Ema>(adam_->params(), config_.train.ema_decay) : nullptr;
  if (local > 0) restore_part_state(part);
  current_part_ = part;
  if (pg_->active()) {
    std::vector<torch::Tensor> params;
    int64_t count = 0, bytes = 0;
    for (const auto& p : adam_->params()) {
      params.push_back(p.tensor);
      count += p.tensor.numel();
      bytes += p.tensor.numel() * static_cast<int64_t>(p.tensor.element_size());
    }
    spdlog::info("{}: {} parameters; each step all-reduces {:.1f} MB of gradients over {} ranks in {} bucket(s) ({})", part_name(part), count,
                 static_cast<double>(bytes) / 1e6, pg_->world_size(), plan_buckets(params, 25 << 20).size(), pg_->backend());
  }
}

void Trainer::synchronize_weights() {
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
void Trainer::check_ranks_agree(int64_t step) {
  if (!pg_->active() || !adam_) return;
  torch::NoGradGuard no_grad;
  double sum = 0;
  auto add = [&](const torch::Tensor& t) {
    const torch::Tensor d = t.detach().to(torch::kDouble);
    sum += d.sum().item<double>() + 1e-3 * d.square().sum().item<double>();
  };
  for (const auto& p : adam_->params()) add(p.tensor);
  for (const auto& [k, v] : adam_->state()) add(v);
  if (ema_)
    for (const auto& [k, v] : ema_->state()) add(v);
  const auto [lo, hi] = pg_->min_max(sum, "the weights' checksum at step " + std::to_string(step));
  if (lo != hi)
    throw DistributedError(fmt::format("step {}: the ranks' weights differ (checksums from {:.17g} to {:.17g}); every rank must run the same "
                                       "LibTorch, device type and thread count. Not saved; the last complete checkpoint is {}",
                                       step, lo, hi, newest_checkpoint(o_.output)));
}

// One optimizer step of `part` at its local step `local` (eq. 8 or eq. 9–10); returns the loss.
double Trainer::train_step(int part, int64_t local, double* mse, double* lpips, double* grad_norm) {
  const TrainConfig& t = config_.train;
  const bool autocast = rt_.device.is_cuda() && t.mixed_precision != "no";
  const torch::ScalarType amp_dtype = t.mixed_precision == "bf16" ? torch::kBFloat16 : torch::kHalf;
  const bool scaled = autocast && amp_dtype == torch::kHalf;
  adam_->zero_grad();
  // The step's global batch (batch_size × grad_accumulation samples of the part's stream), split
  // among the ranks: this rank's contiguous share, in micro-batches of at most batch_size. Each
  // sample weighs 1/global, so the gradients summed over ranks are the global batch's mean.
  const int64_t global = t.batch_size * t.grad_accumulation;
  const auto [first, count] = rank_share(local * global, global, pg_->rank(), pg_->world_size());
  double sums[3] = {0, 0, 0};  // loss, decoder MSE, decoder LPIPS: weighted partial sums
  for (int64_t offset = 0; offset < count; offset += t.batch_size) {
    const int64_t n = std::min(t.batch_size, count - offset);
    const double weight = static_cast<double>(n) / static_cast<double>(global);
    const Batch b = make_batch(part, first + offset, n);
    if (autocast) set_autocast(true, amp_dtype);
    torch::Tensor loss;
    if (part == kUnet) {
      loss = unet_loss(pipe_, b.images, b.masks, contexts(b.prompts), b.timesteps, b.noise);
    } else {
      const DecoderLoss d = decoder_loss(pipe_, lpips_, b.images, t.decoder_lpips_weight);
      loss = d.total;
      sums[1] += d.mse.item<double>() * weight;
      sums[2] += d.lpips.item<double>() * weight;
    }
    if (autocast) set_autocast(false, amp_dtype);
    sums[0] += loss.item<double>() * weight;
    ((scaled ? loss * loss_scale_ : loss) * weight).backward();
  }
  if (pg_->active()) {  // the sum over ranks, bucketed: one collective per 25 MB of gradients
    std::vector<torch::Tensor> tensors;
    for (const auto& p : adam_->params()) {
      if (!p.tensor.grad().defined()) p.tensor.mutable_grad() = torch::zeros_like(p.tensor);
      tensors.push_back(p.tensor.grad());
    }
    tensors.push_back(torch::tensor({sums[0], sums[1], sums[2]}, torch::kDouble).to(rt_.device));
    pg_->all_reduce_sum(tensors, "step " + std::to_string(done_.total()) + " (" + part_name(part) + ") gradients");
    const torch::Tensor reduced = tensors.back().cpu();
    for (int i = 0; i < 3; ++i) sums[i] = reduced[i].item<double>();
  }
  *mse = sums[1];
  *lpips = sums[2];
  if (!std::isfinite(sums[0])) {
    const std::string last = newest_checkpoint(o_.output);
    throw std::runtime_error("step " + std::to_string(done_.total()) + " (" + part_name(part) + "): the loss is " + std::to_string(sums[0]) +
                             "; stopped. The last good checkpoint is " + (last.empty() ? std::string("none") : last) +
                             " (resume from it with a lower train.lr, or check the images)");
  }
  if (scaled) {  // dynamic loss scaling for fp16
    bool finite = true;
    for (const auto& p : adam_->params())
      if (p.tensor.grad().defined()) {
        p.tensor.mutable_grad().div_(loss_scale_);
        finite = finite && torch::isfinite(p.tensor.grad()).all().item<bool>();
      }
    if (!finite) {
      loss_scale_ /= 2;
      good_steps_ = 0;
      spdlog::debug("fp16: gradient overflow, loss scale now {}", loss_scale_);
      adam_->zero_grad();
    } else if (++good_steps_ % 2000 == 0) {
      loss_scale_ *= 2;
    }
  }
  // Gradient clipping (train.grad_clip, beyond §5.1, which names none): keeps a few-shot run with
  // lr 1e-4 from one bad batch's jump.
  *grad_norm = clip_gradients(adam_->params(), t.grad_clip);
  adam_->step();
  if (ema_) ema_->update(adam_->params());
  return sums[0];
}

// Rank 0's part of the start: a fresh run (an old one discarded with --overwrite), or the newest
// complete checkpoint, which a larger training length continues; then the output folder made ready.
void Trainer::prepare_output() {
  const fs::path out(o_.output);
  if (o_.resume) {
    resume_from_ = newest_checkpoint(o_.output);
    if (resume_from_.empty()) {
      spdlog::warn("--resume: no checkpoint in {}; starting from the beginning", o_.output);
    } else {
      state_info_ = read_json_file((fs::path(resume_from_) / "training_state.json").string());
      if (state_info_.value("train_hash", "") != hash_)
        throw InputError(resume_from_ + ": was trained with another config (base model, data, shots, lr, masks, prompts, parts, ...: hash " +
                         state_info_.value("train_hash", "?") + ", now " + hash_ +
                         "); only the training length may change on --resume. Resume with the same settings, or pass --overwrite");
      base_ = state_info_.value("base", base_);
    }
  } else if (fs::exists(out / "checkpoints") || fs::exists(out / "model")) {
    if (!o_.overwrite)
      throw InputError(o_.output + ": holds a previous fine-tuning run; pass --resume to continue it or --overwrite to discard it");
    for (const char* p : {"checkpoints", "model", "masks"}) fs::remove_all(out / p);
    for (const char* f : {"train_log.csv", "loss.png", "shots.json"}) fs::remove(out / f);
  }
  fs::create_directories(out);
  remove_stale_temporaries(o_.output);
  // Stale temporary folders of an interrupted save are never loaded; remove them.
  if (fs::is_directory(out / "checkpoints"))
    for (const auto& e : fs::directory_iterator(out / "checkpoints"))
      if (e.path().filename().string().rfind('.', 0) == 0) fs::remove_all(e.path());
  write_file_atomically((out / "shots.json").string(), json_text(shots_json_));
}

FinetuneSummary Trainer::run() {
  const auto start_time = std::chrono::steady_clock::now();
  if (o_.shots < 1) throw InputError("finetune needs at least one shot per class (--shots K, K >= 1)");
  if (o_.output.empty()) throw InputError("--output is required");
  rt_ = apply_runtime(config_.runtime);
  base_ = model_dir_of(config_, o_.model);
  const Dataset dataset = load_dataset(o_.dataset, o_.root, o_.classes);
  const ShotSelection shots = sample_shots(dataset, o_.shots, static_cast<uint64_t>(config_.runtime.seed));
  shots_json_ = shots_to_json(shots, dataset.root);
  hash_ = training_identity(config_, base_, shots_json_, o_.dataset);
  const fs::path out(o_.output);

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
  pipe_ = load_sd_pipeline(resume_from_.empty() ? base_ : resume_from_, resume_from_.empty() ? config_.model.variant : o_.save_variant);
  pipe_.to(rt_.device, torch::kFloat);
  synchronize_weights();
  if (!pipe_.is_inpainting()) throw InputError(base_ + ": the UNet has " + std::to_string(pipe_.unet->config.in_channels) + " input channels; fine-tuning needs an inpainting UNet (9)");
  check_inpaint_size(pipe_, config_.resolution, config_.resolution);
  const TrainConfig& t = config_.train;
  load_data(dataset, shots);
  const int64_t n = static_cast<int64_t>(shots_.size());
  unet_steps_ = (t.parts == "unet" || t.parts == "both") ? steps_for("UNet", t.unet_steps, t.unet_epochs) : 0;
  decoder_steps_ = (t.parts == "decoder" || t.parts == "both") ? steps_for("decoder", t.decoder_steps, t.decoder_epochs) : 0;
  if (decoder_steps_ > 0) {
    lpips_ = load_lpips(require_feature_weights(config_, "features.alexnet", config_.features.alexnet),
                        require_feature_weights(config_, "features.lpips", config_.features.lpips));
    lpips_->to(rt_.device, torch::kFloat);
  }
  if (!rt_.device.is_cuda() && t.mixed_precision != "no") spdlog::warn("train.mixed_precision = {} needs CUDA; training in float32 on the CPU", t.mixed_precision);
  if (o_.save_masks && pg_->is_main()) save_masks();

  // What the checkpoint had done, and its optimizer states (each part's, loaded when it resumes).
  if (!resume_from_.empty()) {
    done_ = checkpoint_progress(state_info_);
    if (done_.unet > unet_steps_ || done_.decoder > decoder_steps_)
      throw InputError(resume_from_ + ": has trained " + std::to_string(done_.unet) + " UNet and " + std::to_string(done_.decoder) +
                       " decoder step(s), more than this config's " + std::to_string(unet_steps_) + " and " + std::to_string(decoder_steps_) +
                       "; raise train.unet_steps/unet_epochs (or the decoder's) to continue, or use the checkpoint as it is");
    const std::string part = state_info_.value("part", "");
    for (auto& [k, v] : load_all((fs::path(resume_from_) / "training_state.safetensors").string())) {
      if (k.rfind("done.", 0) == 0)
        stashed_[k] = v;
      else if ((k.rfind("adam.", 0) == 0 || k.rfind("ema.", 0) == 0 || k.rfind("raw.", 0) == 0) && !part.empty())
        stashed_["done." + part + "." + k] = v;  // the checkpoint's live part
    }
    stashed_steps_ = state_info_.value("stashed_adam_steps", nlohmann::json::object());
    if (!part.empty()) stashed_steps_[part] = state_info_.value("adam_steps", int64_t(0));
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
  loss_scale_ = state_info_.value("loss_scale", 65536.0);
  good_steps_ = state_info_.value("good_steps", int64_t(0));

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
    double mse = 0, lpips = 0, norm = 0;
    const double loss = train_step(part, local, &mse, &lpips, &norm);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log_.emplace_back(step, part, loss);
    if (log_file.is_open()) {
      log_file << step << "," << part_name(part) << "," << std::setprecision(8) << loss << "," << mse << "," << lpips << "," << norm << ","
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
      spdlog::info("step {}/{} {}: loss {:.5f}, grad norm {:.3f}", step + 1, total, part_name(part), loss, norm);
    ++local;
    ++steps_run;
    bar.advance();
    const bool finished = done_.total() == total;
    const bool stopping = o_.stop_after > 0 && steps_run >= o_.stop_after && !finished;
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
  if (ema_ && current_part_ >= 0) ema_->swap_into(adam_->params());  // finish with the averaged weights

  // 4. the final pipeline folder, with the shots it was tuned on (rank 0; the others wait for it)
  check_ranks_agree(done_.total());
  PipelineWrite w;
  w.base = base_;
  w.target = (out / "model").string();
  w.variant = o_.save_variant;
  const nlohmann::json about = {{"format", "anomalysd-finetune"}, {"base", base_}, {"dataset", o_.dataset}, {"root", o_.root},
                                {"k", o_.shots}, {"unet_steps", unet_steps_}, {"decoder_steps", decoder_steps_},
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
    finetune_detail::Trainer trainer(config, options, group);
    return trainer.run();
  } catch (const std::exception& e) {
    group->report_failure(e.what());  // the others name this rank and its reason, then exit too
    throw;
  }
}

}  // namespace anomalysd

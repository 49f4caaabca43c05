#include "anomalysd/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include <spdlog/spdlog.h>

#include "anomalysd/anomaly/inpaint.h"
#include "anomalysd/data/prompts.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/train/losses.h"
#include "anomalysd/train/training_data.h"
#include "anomalysd/util/hash.h"

namespace anomalysd {

namespace {

uint64_t mix(std::initializer_list<uint64_t> values) {
  uint64_t h = 0x243F6A8885A308D3ull;
  for (uint64_t v : values) h = splitmix64(h ^ v);
  return h;
}

// Autocast on the device's type: CUDA (fp16 or bf16) or the CPU (bf16: matmuls and convolutions
// in bfloat16, reductions and the loss in float32; the weights and Adam stay float32).
void set_autocast(const torch::Device& device, bool on, torch::ScalarType dtype) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  const at::DeviceType type = device.is_cuda() ? at::kCUDA : at::kCPU;
  at::autocast::set_autocast_enabled(type, on);
  if (on) at::autocast::set_autocast_dtype(type, dtype);
#else
  if (device.is_cuda()) {
    at::autocast::set_enabled(on);
    if (on) at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(on);
    if (on) at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
  if (!on) at::autocast::clear_cache();
}

std::string stash_prefix(int part) { return std::string("done.") + part_name(part) + "."; }

}  // namespace

std::pair<int64_t, int64_t> rank_share(int64_t first, int64_t n, int rank, int world) {
  const int64_t base = n / world, extra = n % world;
  const int64_t count = base + (rank < extra ? 1 : 0);
  return {first + rank * base + std::min<int64_t>(rank, extra), count};
}

Trainer::Trainer(SdPipeline& pipe, Lpips lpips, std::vector<TrainingShot> shots, TrainSettings settings, int64_t resolution, int64_t seed,
                 torch::Device device, GradientReducer& reducer)
    : pipe_(pipe),
      lpips_(std::move(lpips)),
      shots_(std::move(shots)),
      settings_(std::move(settings)),
      resolution_(resolution),
      seed_(seed),
      device_(device),
      reducer_(reducer) {
  if (shots_.empty()) throw InputError("fine-tuning needs at least one shot");
}

// --- the sample stream ---------------------------------------------------------------------------

std::vector<int64_t> Trainer::permutation(int part, int64_t epoch) const {
  std::vector<int64_t> p(shots_.size());
  std::iota(p.begin(), p.end(), 0);
  std::mt19937_64 rng(mix({static_cast<uint64_t>(seed_), 0xE90C, static_cast<uint64_t>(part), static_cast<uint64_t>(epoch)}));
  for (std::size_t i = p.size(); i > 1; --i) std::swap(p[i - 1], p[rng() % i]);
  return p;
}

// Sample i of a part's stream: a pure function of (seed, part, i), so a resumed run sees the
// very samples an uninterrupted one would.
TrainingBatch Trainer::make_batch(int part, int64_t first, int64_t n) {
  const int64_t count = static_cast<int64_t>(shots_.size());
  const int64_t r = resolution_, f = vae_scale_factor(pipe_);
  std::vector<torch::Tensor> images, masks, noise;
  std::vector<int64_t> timesteps;
  TrainingBatch b;
  std::map<int64_t, std::vector<int64_t>> perms;
  for (int64_t i = first; i < first + n; ++i) {
    const int64_t epoch = i / count;
    if (!perms.count(epoch)) perms[epoch] = permutation(part, epoch);
    const TrainingShot& shot = shots_[static_cast<std::size_t>(perms[epoch][static_cast<std::size_t>(i % count)])];
    std::mt19937_64 rng(mix({static_cast<uint64_t>(seed_), 0x5A17, static_cast<uint64_t>(part), static_cast<uint64_t>(i)}));
    // §5.1: brightness / contrast, scale, rotation
    const AugmentParams aug = sample_augment(rng, settings_.augment);
    images.push_back(augment_photometric(augment_geometry(shot.image, aug, false), aug));
    if (part == kUnet) {
      // §4.1: m ∈ {m_r | IoU(m_r, m_f) > γ}, γ ∈ {0, 0.2, 0.5}
      const cv::Mat fg = mask_to_mat(augment_geometry(shot.foreground, aug, true));
      const TrainingMask tm = sample_training_mask(rng, fg, settings_.iou_thresholds, settings_.mask == "iou");
      if (tm.fallback) spdlog::debug("sample {}: no rectangle with IoU > {} in {} tries; using IoU {:.2f}", i, tm.gamma, tm.tries, tm.iou);
      masks.push_back(rectangle_mask(tm.rect, r, r));
      // the prompt: one of the class's hierarchical set, or the ablations' (Table 4)
      std::string prompt;
      if (settings_.prompt == "hierarchical")
        prompt = shot.prompts[std::uniform_int_distribution<std::size_t>(0, shot.prompts.size() - 1)(rng)];
      else if (settings_.prompt == "simple")
        prompt = "A photo of " + readable_class_name(shot.cls) + ".";
      b.prompts.push_back(prompt);
      timesteps.push_back(std::uniform_int_distribution<int64_t>(0, pipe_.scheduler.config().num_train_timesteps - 1)(rng));
      at::Generator gen = at::detail::createCPUGenerator(rng());
      noise.push_back(torch::randn({1, pipe_.unet->config.out_channels, r / f, r / f}, gen, torch::TensorOptions().dtype(torch::kFloat)));
    }
  }
  b.images = torch::cat(images, 0).to(device_);
  if (part == kUnet) {
    b.masks = torch::cat(masks, 0).to(device_);
    b.noise = torch::cat(noise, 0).to(device_);
    b.timesteps = torch::tensor(timesteps, torch::kLong).to(device_);
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

// --- the parts -----------------------------------------------------------------------------------

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
  pipe_.unet->gradient_checkpointing = settings_.gradient_checkpointing;
  pipe_.vae->train(part == kDecoder);
}

bool Trainer::enter_part(int part, int64_t local) {
  if (part == current_part_) return false;
  if (part == kDecoder && !lpips_) throw InputError("the decoder part (eq. 9) needs the LPIPS network (features.alexnet, features.lpips)");
  if (current_part_ >= 0) {
    stash_part_state(current_part_);                     // kept: a later run may continue this part
    if (ema_) ema_->swap_into(adam_->params());          // the part keeps its averaged weights
  }
  set_trainable(part);
  adam_ = std::make_unique<Adam>(part_parameters(part), settings_.lr);
  ema_ = settings_.ema_decay > 0 ? std::make_unique<Ema>(adam_->params(), settings_.ema_decay) : nullptr;
  if (local > 0) restore_part_state(part, local);
  current_part_ = part;
  return true;
}

const std::vector<NamedParameter>& Trainer::parameters() const {
  static const std::vector<NamedParameter> none;
  return adam_ ? adam_->params() : none;
}

// --- one step --------------------------------------------------------------------------------------

// One optimizer step of the current part at its local step `local` (eq. 8 or eq. 9–10).
StepResult Trainer::step(int64_t local, int64_t step) {
  const int part = current_part_;
  if (part < 0) throw std::logic_error("Trainer::step before enter_part");
  const TrainSettings& t = settings_;
  // CUDA: fp16 or bf16 autocast; the CPU: bf16 only (LibTorch's CPU autocast has no fp16 list).
  const bool autocast = t.mixed_precision == "bf16" || (device_.is_cuda() && t.mixed_precision == "fp16");
  const torch::ScalarType amp_dtype = t.mixed_precision == "bf16" ? torch::kBFloat16 : torch::kHalf;
  const bool scaled = autocast && amp_dtype == torch::kHalf;
  adam_->zero_grad();
  // 1. The step's global batch (batch_size × grad_accumulation samples of the part's stream),
  // split among the ranks: this rank's contiguous share, in micro-batches of at most batch_size.
  // Each sample weighs 1/global, so the gradients summed over ranks are the global batch's mean.
  const int64_t global = t.batch_size * t.grad_accumulation;
  const auto [first, count] = rank_share(local * global, global, reducer_.rank(), reducer_.world_size());
  double sums[3] = {0, 0, 0};  // loss, decoder MSE, decoder LPIPS: weighted partial sums
  for (int64_t offset = 0; offset < count; offset += t.batch_size) {
    const int64_t n = std::min(t.batch_size, count - offset);
    const double weight = static_cast<double>(n) / static_cast<double>(global);
    const TrainingBatch b = make_batch(part, first + offset, n);
    if (autocast) set_autocast(device_, true, amp_dtype);
    torch::Tensor loss;
    if (part == kUnet) {
      loss = unet_loss(pipe_, b.images, b.masks, contexts(b.prompts), b.timesteps, b.noise);  // eq. 8
    } else {
      const DecoderLoss d = decoder_loss(pipe_, lpips_, b.images, t.decoder_lpips_weight);  // eq. 9–10
      loss = d.total;
      sums[1] += d.mse.item<double>() * weight;
      sums[2] += d.lpips.item<double>() * weight;
    }
    if (autocast) set_autocast(device_, false, amp_dtype);
    sums[0] += loss.item<double>() * weight;
    ((scaled ? loss * loss_scale_ : loss) * weight).backward();
  }
  // 2. The sum over the ranks (with the loss sums, so that every rank stops on a NaN together).
  if (reducer_.world_size() > 1) {
    std::vector<torch::Tensor> tensors;
    for (const auto& p : adam_->params()) {
      if (!p.tensor.grad().defined()) p.tensor.mutable_grad() = torch::zeros_like(p.tensor);
      tensors.push_back(p.tensor.grad());
    }
    tensors.push_back(torch::tensor({sums[0], sums[1], sums[2]}, torch::kDouble).to(device_));
    reducer_.all_reduce_sum(tensors, "step " + std::to_string(step) + " (" + part_name(part) + ") gradients");
    const torch::Tensor reduced = tensors.back().cpu();
    for (int i = 0; i < 3; ++i) sums[i] = reduced[i].item<double>();
  }
  StepResult result;
  result.loss = sums[0];
  result.mse = sums[1];
  result.lpips = sums[2];
  if (!std::isfinite(result.loss))
    throw NonFiniteLoss("step " + std::to_string(step) + " (" + part_name(part) + "): the loss is " + std::to_string(result.loss) + "; stopped");
  // 3. fp16: dynamic loss scaling (a step with overflowing gradients is skipped)
  if (scaled) {
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
  // 4. Gradient clipping (train.grad_clip, beyond §5.1, which names none): keeps a few-shot run
  // with lr 1e-4 from one bad batch's jump. Then Adam and the EMA.
  result.grad_norm = clip_gradients(adam_->params(), t.grad_clip);
  adam_->step();
  if (ema_) ema_->update(adam_->params());
  return result;
}

void Trainer::finish() {
  if (ema_ && current_part_ >= 0) ema_->swap_into(adam_->params());
}

// --- checkpoint state ----------------------------------------------------------------------------

void Trainer::with_averaged_weights(const std::function<void()>& save) {
  if (ema_) ema_->swap_into(adam_->params());
  try {
    save();
  } catch (...) {
    if (ema_) ema_->swap_into(adam_->params());
    throw;
  }
  if (ema_) ema_->swap_into(adam_->params());
}

std::map<std::string, torch::Tensor> Trainer::state_tensors() const {
  std::map<std::string, torch::Tensor> state = stashed_;  // the parts left behind
  if (adam_)
    for (auto& [k, v] : adam_->state()) state["adam." + k] = v.detach().to(torch::kCPU).clone();
  if (ema_) {
    for (auto& [k, v] : ema_->state()) state[k] = v.detach().to(torch::kCPU).clone();  // copies: swap_into changes the shadows
    for (const auto& p : adam_->params()) state["raw." + p.name] = p.tensor.detach().to(torch::kCPU).clone();
  }
  return state;
}

nlohmann::json Trainer::state_record() const {
  return {{"part", current_part_ >= 0 ? part_name(current_part_) : ""},
          {"adam_steps", adam_ ? adam_->steps() : 0},
          {"stashed_adam_steps", stashed_steps_},
          {"loss_scale", loss_scale_},
          {"good_steps", good_steps_}};
}

void Trainer::load_state(const std::map<std::string, torch::Tensor>& tensors, const nlohmann::json& record, const std::string& source) {
  state_source_ = source;
  const std::string part = record.value("part", "");
  for (const auto& [k, v] : tensors) {
    if (k.rfind("done.", 0) == 0)
      stashed_[k] = v;
    else if ((k.rfind("adam.", 0) == 0 || k.rfind("ema.", 0) == 0 || k.rfind("raw.", 0) == 0) && !part.empty())
      stashed_["done." + part + "." + k] = v;  // the checkpoint's live part
  }
  stashed_steps_ = record.value("stashed_adam_steps", nlohmann::json::object());
  if (!part.empty()) stashed_steps_[part] = record.value("adam_steps", int64_t(0));
  loss_scale_ = record.value("loss_scale", 65536.0);
  good_steps_ = record.value("good_steps", int64_t(0));
}

void Trainer::stash_part_state(int part) {
  if (!adam_) return;
  const std::string prefix = stash_prefix(part);
  for (auto& [k, v] : adam_->state()) stashed_[prefix + "adam." + k] = v.detach().to(torch::kCPU).clone();
  if (ema_) {
    for (auto& [k, v] : ema_->state()) stashed_[prefix + k] = v.detach().to(torch::kCPU).clone();
    for (const auto& p : adam_->params()) stashed_[prefix + "raw." + p.name] = p.tensor.detach().to(torch::kCPU).clone();
  }
  stashed_steps_[part_name(part)] = adam_->steps();
}

void Trainer::restore_part_state(int part, int64_t local) {
  const std::string prefix = stash_prefix(part);
  std::map<std::string, torch::Tensor> state, adam_state;
  for (auto it = stashed_.begin(); it != stashed_.end();) {
    if (it->first.rfind(prefix, 0) == 0) {
      state[it->first.substr(prefix.size())] = it->second;
      it = stashed_.erase(it);  // live again: the optimizer holds it now
    } else {
      ++it;
    }
  }
  for (const auto& [k, v] : state)
    if (k.rfind("adam.", 0) == 0) adam_state[k.substr(5)] = v;
  if (adam_state.empty()) {
    spdlog::warn("{}: holds no optimizer state of the {} part; Adam restarts from zero moments", state_source_, part_name(part));
    return;
  }
  adam_->load_state(adam_state, stashed_steps_.value(part_name(part), int64_t(0)));
  if (ema_) {
    ema_->load_state(state);
    torch::NoGradGuard no_grad;
    for (const auto& p : adam_->params()) {
      const auto raw = state.find("raw." + p.name);
      if (raw == state.end()) throw FormatError(state_source_, "training state lacks the raw weight 'raw." + p.name + "' of the EMA run");
      p.tensor.copy_(raw->second);
    }
  }
  spdlog::info("restored the {} optimizer state at its step {}", part_name(part), local);
}

double Trainer::state_checksum() const {
  if (!adam_) return 0;
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
  return sum;
}

}  // namespace anomalysd

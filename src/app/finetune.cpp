#include "anomalysd/app/finetune.h"

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
#include "anomalysd/version.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace {

enum Part : int { kUnet = 0, kDecoder = 1 };
const char* part_name(int p) { return p == kUnet ? "unet" : "decoder"; }

uint64_t splitmix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
uint64_t mix(std::initializer_list<uint64_t> values) {
  uint64_t h = 0x243F6A8885A308D3ull;
  for (uint64_t v : values) h = splitmix(h ^ v);
  return h;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string hex(uint64_t v) {
  std::ostringstream s;
  s << std::hex << std::setw(16) << std::setfill('0') << v;
  return s.str();
}

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

// What a checkpoint must agree on to be resumed: everything that changes the trained weights.
std::string training_identity(const AppConfig& c, const std::string& base, const nlohmann::json& shots, const std::string& dataset) {
  TrainConfig t = c.train;
  t.save_every = 0;
  t.keep = 0;
  t.log_every = 0;
  AppConfig x;
  x.train = t;
  x.resolution = c.resolution;
  x.prompts = c.prompts;
  x.runtime.seed = c.runtime.seed;
  x.runtime.dtype = c.runtime.dtype;
  x.features = c.features;
  const nlohmann::json id = {{"config", x.to_yaml()}, {"base", fs::absolute(base).lexically_normal().string()}, {"shots", shots}, {"dataset", dataset}};
  return hex(fnv1a(json_compact(id)));
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

// The loss curve of train_log.csv: one colour per part, log scale.
void write_loss_plot(const std::string& path, const std::vector<std::tuple<int64_t, int, double>>& log) {
  const int width = 720, height = 360, left = 60, right = 20, top = 20, bottom = 40;
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  if (log.empty()) return;
  double lo = INFINITY, hi = -INFINITY;
  int64_t last = 1;
  for (const auto& [step, part, loss] : log) {
    if (loss > 0 && std::isfinite(loss)) {
      lo = std::min(lo, std::log10(loss));
      hi = std::max(hi, std::log10(loss));
    }
    last = std::max(last, step + 1);
  }
  if (!std::isfinite(lo)) return;
  if (hi - lo < 1e-6) hi = lo + 1;
  auto px = [&](int64_t step) { return left + static_cast<int>((width - left - right) * static_cast<double>(step) / static_cast<double>(last)); };
  auto py = [&](double loss) { return top + static_cast<int>((height - top - bottom) * (hi - std::log10(loss)) / (hi - lo)); };
  cv::rectangle(img, cv::Point(left, top), cv::Point(width - right, height - bottom), cv::Scalar(0, 0, 0));
  const cv::Scalar colours[2] = {cv::Scalar(200, 60, 30), cv::Scalar(30, 120, 200)};
  cv::Point prev(-1, -1);
  int prev_part = -1;
  for (const auto& [step, part, loss] : log) {
    if (!(loss > 0) || !std::isfinite(loss)) continue;
    const cv::Point p(px(step), py(loss));
    if (prev.x >= 0 && prev_part == part) cv::line(img, prev, p, colours[part], 1, cv::LINE_AA);
    prev = p;
    prev_part = part;
  }
  char label[64];
  std::snprintf(label, sizeof label, "%.3g", std::pow(10.0, hi));
  cv::putText(img, label, cv::Point(2, top + 10), cv::FONT_HERSHEY_SIMPLEX, 0.4, cv::Scalar(0, 0, 0));
  std::snprintf(label, sizeof label, "%.3g", std::pow(10.0, lo));
  cv::putText(img, label, cv::Point(2, height - bottom), cv::FONT_HERSHEY_SIMPLEX, 0.4, cv::Scalar(0, 0, 0));
  std::snprintf(label, sizeof label, "step %lld", static_cast<long long>(last));
  cv::putText(img, label, cv::Point(width - right - 90, height - 12), cv::FONT_HERSHEY_SIMPLEX, 0.4, cv::Scalar(0, 0, 0));
  cv::putText(img, "unet loss (eq. 8)", cv::Point(left + 10, height - 12), cv::FONT_HERSHEY_SIMPLEX, 0.4, colours[0]);
  cv::putText(img, "decoder loss (eq. 9)", cv::Point(left + 170, height - 12), cv::FONT_HERSHEY_SIMPLEX, 0.4, colours[1]);
  write_png(path, img, /*rgb=*/false);
}

class Trainer {
 public:
  Trainer(const AppConfig& config, const FinetuneOptions& o) : config_(config), o_(o) {}
  FinetuneSummary run();

 private:
  void load_data(const Dataset& dataset, const ShotSelection& shots);
  std::vector<int64_t> permutation(int part, int64_t epoch) const;
  Batch make_batch(int part, int64_t first_index, int64_t n);
  torch::Tensor contexts(const std::vector<std::string>& prompts);
  std::vector<NamedParameter> part_parameters(int part);
  void set_trainable(int part);
  void save_checkpoint(int64_t next_step, int part);
  void save_masks();

  AppConfig config_;
  FinetuneOptions o_;
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
  int64_t unet_steps_ = 0, decoder_steps_ = 0;
  std::vector<std::tuple<int64_t, int, double>> log_;
  double loss_scale_ = 65536.0;  // fp16 autocast only
  int64_t good_steps_ = 0;
};

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

void Trainer::save_checkpoint(int64_t next_step, int part) {
  const fs::path dir = fs::path(o_.output) / "checkpoints";
  fs::create_directories(dir);
  char name[32];
  std::snprintf(name, sizeof name, "step-%07lld", static_cast<long long>(next_step));
  std::map<std::string, torch::Tensor> state;
  if (adam_)
    for (auto& [k, v] : adam_->state()) state["adam." + k] = v.detach().to(torch::kCPU).clone();
  const auto params = adam_ ? adam_->params() : std::vector<NamedParameter>{};
  if (ema_) {
    for (auto& [k, v] : ema_->state()) state[k] = v.detach().to(torch::kCPU).clone();  // copies: swap_into changes the shadows
    for (const auto& p : params) state["raw." + p.name] = p.tensor.detach().to(torch::kCPU).clone();  // a copy: the swap below changes p
  }
  if (state.empty()) state["none"] = torch::zeros({1});
  const nlohmann::json info = {{"format", "anomalysd-training-state"}, {"next_step", next_step}, {"part", part_name(part)},
                               {"adam_steps", adam_ ? adam_->steps() : 0}, {"train_hash", hash_}, {"unet_steps", unet_steps_},
                               {"decoder_steps", decoder_steps_}, {"base", base_}, {"loss_scale", loss_scale_},
                               {"good_steps", good_steps_}, {"versions", {{"anomalysd", project_version()}, {"libtorch", libtorch_version()}}}};
  PipelineWrite w;
  w.base = base_;
  w.target = (dir / name).string();
  w.variant = o_.save_variant;
  w.text_files = {{"shots.json", json_text(shots_json_)}, {"training_state.json", json_text(info)}};
  w.tensor_files = {{"training_state.safetensors", state}};
  if (ema_) ema_->swap_into(params);  // the folder holds the averaged weights
  write_pipeline_folder(w, pipe_.unet, pipe_.vae);
  if (ema_) ema_->swap_into(params);
  // keep the newest `keep`
  std::vector<std::string> all;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0) all.push_back(e.path().string());
  std::sort(all.begin(), all.end());
  for (std::size_t i = 0; i + static_cast<std::size_t>(config_.train.keep) < all.size(); ++i) fs::remove_all(all[i]);
  write_loss_plot((fs::path(o_.output) / "loss.png").string(), log_);
  spdlog::info("checkpoint: {}", w.target);
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

FinetuneSummary Trainer::run() {
  const auto start_time = std::chrono::steady_clock::now();
  if (o_.shots < 1) throw InputError("finetune needs at least one shot per class (--shots K, K >= 1)");
  if (o_.output.empty()) throw InputError("--output is required");
  rt_ = apply_runtime(config_.runtime);
  base_ = o_.model.empty() ? config_.model.path : o_.model;
  if (base_.empty()) throw InputError("no base model: give --model DIR or set model.path");
  const Dataset dataset = load_dataset(o_.dataset, o_.root, o_.classes);
  const ShotSelection shots = sample_shots(dataset, o_.shots, static_cast<uint64_t>(config_.runtime.seed));
  shots_json_ = shots_to_json(shots, dataset.root);
  hash_ = training_identity(config_, base_, shots_json_, o_.dataset);
  const fs::path out(o_.output);

  // 1. a fresh run, or the newest complete checkpoint
  std::string resume_from;
  nlohmann::json state_info = nlohmann::json::object();
  if (o_.resume) {
    resume_from = newest_checkpoint(o_.output);
    if (resume_from.empty()) {
      spdlog::warn("--resume: no checkpoint in {}; starting from the beginning", o_.output);
    } else {
      state_info = read_json_file((fs::path(resume_from) / "training_state.json").string());
      if (state_info.value("train_hash", "") != hash_)
        throw InputError(resume_from + ": was trained with another config, base model, dataset or shots (hash " +
                         state_info.value("train_hash", "?") + ", now " + hash_ + "); resume with the same settings, or pass --overwrite");
      base_ = state_info.value("base", base_);
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

  // 2. models: weights trained in float32 (autocast on CUDA when asked)
  pipe_ = load_sd_pipeline(resume_from.empty() ? base_ : resume_from, resume_from.empty() ? config_.model.variant : o_.save_variant);
  pipe_.to(rt_.device, torch::kFloat);
  if (!pipe_.is_inpainting()) throw InputError(base_ + ": the UNet has " + std::to_string(pipe_.unet->config.in_channels) + " input channels; fine-tuning needs an inpainting UNet (9)");
  check_inpaint_size(pipe_, config_.resolution, config_.resolution);
  const TrainConfig& t = config_.train;
  load_data(dataset, shots);
  const int64_t n = static_cast<int64_t>(shots_.size());
  const int64_t per_step = t.batch_size * t.grad_accumulation;
  auto steps_for = [&](int64_t steps, int64_t epochs) { return epochs > 0 ? (epochs * n + per_step - 1) / per_step : steps; };
  unet_steps_ = (t.parts == "unet" || t.parts == "both") ? steps_for(t.unet_steps, t.unet_epochs) : 0;
  decoder_steps_ = (t.parts == "decoder" || t.parts == "both") ? steps_for(t.decoder_steps, t.decoder_epochs) : 0;
  if (decoder_steps_ > 0) {
    lpips_ = load_lpips(require_feature_weights(config_, "features.alexnet", config_.features.alexnet),
                        require_feature_weights(config_, "features.lpips", config_.features.lpips));
    lpips_->to(rt_.device, torch::kFloat);
  }
  const bool cuda = rt_.device.is_cuda();
  const bool autocast = cuda && t.mixed_precision != "no";
  const torch::ScalarType amp_dtype = t.mixed_precision == "bf16" ? torch::kBFloat16 : torch::kHalf;
  if (!cuda && t.mixed_precision != "no") spdlog::warn("train.mixed_precision = {} needs CUDA; training in float32 on the CPU", t.mixed_precision);
  if (o_.save_masks) save_masks();

  const int64_t total = unet_steps_ + decoder_steps_;
  int64_t step = state_info.value("next_step", int64_t(0));
  loss_scale_ = state_info.value("loss_scale", 65536.0);
  good_steps_ = state_info.value("good_steps", int64_t(0));
  FinetuneSummary summary;
  summary.images = n;
  summary.unet_steps = unet_steps_;
  summary.decoder_steps = decoder_steps_;
  summary.start_step = step;
  spdlog::info("fine-tuning on {} shot(s) of {} class(es): {} UNet step(s), {} decoder step(s), batch {} x {} accumulation{}", n,
               dataset.classes.size(), unet_steps_, decoder_steps_, t.batch_size, t.grad_accumulation,
               step > 0 ? ", resuming at step " + std::to_string(step) : "");

  // train_log.csv: the steps before the resume point stay, later ones are redone
  const fs::path log_path = out / "train_log.csv";
  std::ostringstream log_text;
  log_text << "step,part,loss,mse,lpips,grad_norm,lr,seconds\n";
  if (step > 0 && fs::is_regular_file(log_path)) {
    std::ifstream in(log_path);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::stringstream ss(line);
      std::string s_step, s_part, s_loss;
      std::getline(ss, s_step, ',');
      std::getline(ss, s_part, ',');
      std::getline(ss, s_loss, ',');
      try {
        if (std::stoll(s_step) >= step) continue;
        log_.emplace_back(std::stoll(s_step), s_part == "unet" ? kUnet : kDecoder, std::stod(s_loss));
        log_text << line << "\n";
      } catch (const std::exception&) {
      }
    }
  }
  std::ofstream log_file;
  {
    write_file_atomically(log_path.string(), log_text.str());
    log_file.open(log_path, std::ios::app);
  }

  // 3. the loop: the UNet steps, then the decoder's
  ProgressBar bar("finetune", total - step, "step");
  int64_t steps_run = 0;
  while (step < total) {
    const int part = step < unet_steps_ ? kUnet : kDecoder;
    const int64_t local = part == kUnet ? step : step - unet_steps_;
    if (part != current_part_) {
      if (current_part_ == kUnet && ema_) ema_->swap_into(adam_->params());  // the UNet keeps its averaged weights
      set_trainable(part);
      adam_ = std::make_unique<Adam>(part_parameters(part), t.lr);
      ema_ = t.ema_decay > 0 ? std::make_unique<Ema>(adam_->params(), t.ema_decay) : nullptr;
      if (!resume_from.empty() && state_info.value("part", "") == part_name(part) && local > 0) {
        const auto state = load_all((fs::path(resume_from) / "training_state.safetensors").string(), rt_.device);
        std::map<std::string, torch::Tensor> adam_state;
        for (const auto& [k, v] : state)
          if (k.rfind("adam.", 0) == 0) adam_state[k.substr(5)] = v;
        adam_->load_state(adam_state, state_info.value("adam_steps", int64_t(0)));
        if (ema_) {
          ema_->load_state(state);
          torch::NoGradGuard no_grad;
          for (const auto& p : adam_->params()) p.tensor.copy_(state.at("raw." + p.name));
        }
        spdlog::info("restored the {} optimizer state at step {}", part_name(part), step);
      }
      current_part_ = part;
    }
    const auto t0 = std::chrono::steady_clock::now();
    adam_->zero_grad();
    double loss_sum = 0, mse_sum = 0, lpips_sum = 0;
    for (int64_t a = 0; a < t.grad_accumulation; ++a) {
      const Batch b = make_batch(part, (local * t.grad_accumulation + a) * t.batch_size, t.batch_size);
      if (autocast) set_autocast(true, amp_dtype);
      torch::Tensor loss;
      if (part == kUnet) {
        loss = unet_loss(pipe_, b.images, b.masks, contexts(b.prompts), b.timesteps, b.noise);
      } else {
        const DecoderLoss d = decoder_loss(pipe_, lpips_, b.images, t.decoder_lpips_weight);
        loss = d.total;
        mse_sum += d.mse.item<double>() / static_cast<double>(t.grad_accumulation);
        lpips_sum += d.lpips.item<double>() / static_cast<double>(t.grad_accumulation);
      }
      if (autocast) set_autocast(false, amp_dtype);
      const double value = loss.item<double>();
      if (!std::isfinite(value)) {
        const std::string last = newest_checkpoint(o_.output);
        throw std::runtime_error("step " + std::to_string(step) + " (" + part_name(part) + "): the loss is " + std::to_string(value) +
                                 "; stopped. The last good checkpoint is " + (last.empty() ? std::string("none") : last) +
                                 " (resume from it with a lower train.lr, or check the images)");
      }
      loss_sum += value / static_cast<double>(t.grad_accumulation);
      const bool scaled = autocast && amp_dtype == torch::kHalf;
      ((scaled ? loss * loss_scale_ : loss) / static_cast<double>(t.grad_accumulation)).backward();
    }
    if (autocast && amp_dtype == torch::kHalf) {  // dynamic loss scaling for fp16
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
    const double norm = clip_gradients(adam_->params(), t.grad_clip);
    adam_->step();
    if (ema_) ema_->update(adam_->params());
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log_.emplace_back(step, part, loss_sum);
    log_file << step << "," << part_name(part) << "," << std::setprecision(8) << loss_sum << "," << (part == kDecoder ? mse_sum : 0.0) << ","
             << (part == kDecoder ? lpips_sum : 0.0) << "," << norm << "," << t.lr << "," << secs << "\n";
    log_file.flush();
    if (part == kUnet) {
      if (summary.first_unet_loss == 0) summary.first_unet_loss = loss_sum;
      summary.last_unet_loss = loss_sum;
    } else {
      if (summary.first_decoder_loss == 0) summary.first_decoder_loss = loss_sum;
      summary.last_decoder_loss = loss_sum;
    }
    if ((step + 1) % t.log_every == 0 || step + 1 == total)
      spdlog::info("step {}/{} {}: loss {:.5f}, grad norm {:.3f}", step + 1, total, part_name(part), loss_sum, norm);
    ++step;
    ++steps_run;
    bar.advance();
    const bool stopping = o_.stop_after > 0 && steps_run >= o_.stop_after && step < total;
    if ((t.save_every > 0 && step % t.save_every == 0) || step == total || stopping) save_checkpoint(step, part);
    if (stopping) {
      bar.finish();
      spdlog::info("stopped after {} step(s) (--stop-after) at step {}/{}; continue with --resume", steps_run, step, total);
      summary.steps_run = steps_run;
      summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
      summary.steps_per_second = summary.seconds > 0 ? static_cast<double>(steps_run) / summary.seconds : 0;
      return summary;
    }
  }
  bar.finish();
  if (ema_ && current_part_ >= 0) ema_->swap_into(adam_->params());  // finish with the averaged weights

  // 4. the final pipeline folder, with the shots it was tuned on
  PipelineWrite w;
  w.base = base_;
  w.target = (out / "model").string();
  w.variant = o_.save_variant;
  const nlohmann::json about = {{"format", "anomalysd-finetune"}, {"base", base_}, {"dataset", o_.dataset}, {"root", o_.root},
                                {"k", o_.shots}, {"unet_steps", unet_steps_}, {"decoder_steps", decoder_steps_},
                                {"config", config_.to_yaml()}, {"train_hash", hash_}};
  w.text_files = {{"shots.json", json_text(shots_json_)}, {"anomalysd_finetune.json", json_text(about)}};
  write_pipeline_folder(w, pipe_.unet, pipe_.vae);
  write_loss_plot((out / "loss.png").string(), log_);

  summary.steps_run = steps_run;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  summary.steps_per_second = summary.seconds > 0 ? static_cast<double>(steps_run) / summary.seconds : 0;
  summary.model_dir = w.target;
  summary.finished = true;
  return summary;
}

}  // namespace

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

FinetuneSummary run_finetune(const FinetuneOptions& options) {
  const AppConfig config = load_app_config(options.config, options.overrides);
  Trainer trainer(config, options);
  return trainer.run();
}

}  // namespace anomalysd

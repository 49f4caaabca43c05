// `anomalysd bootstrap` (app/bootstrap.h): the small SD inpainting pipeline trained from scratch on
// normal images and real photographs, in stages that each leave a checkpoint, so that a killed run
// resumes where it stopped and ends with the weights an uninterrupted run ends with.
//   1. data: the training images, resized, classes balanced, crops of the photographs (work/data)
//   2. feature networks: seeded random (or pre-trained) EfficientNet-B6 / AlexNet / LPIPS (features/)
//   3. the VAE: reconstruction MSE + 0.1·LPIPS + a small KL term (work/vae, checkpointed)
//   4. the inpainting UNet: finetune's loop, eq. (8), on random rectangles (work/unet, its checkpoints)
//   5. model/, anomalysd.yaml, bootstrap.json; work/ removed
#include "anomalysd/app/bootstrap.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "anomalysd/app/finetune.h"
#include "anomalysd/core/app_config.h"
#include "anomalysd/core/runtime.h"
#include "anomalysd/core/version.h"
#include "anomalysd/data/dataset.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/data/model_image.h"
#include "anomalysd/data/photos.h"
#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/models/alexnet_lpips.h"
#include "anomalysd/models/clip_text.h"
#include "anomalysd/models/sd_pipeline.h"
#include "anomalysd/models/weights.h"
#include "anomalysd/tools/components.h"
#include "anomalysd/train/optim.h"
#include "anomalysd/util/progress.h"
#include "app/demo_internal.h"

namespace anomalysd {

namespace fs = std::filesystem;

bool apply_bootstrap_plan(BootstrapPlan& p, const std::string& k, const std::string& v) {
  auto list = [&] {
    std::vector<int64_t> out;
    std::stringstream ss(v);
    for (std::string item; std::getline(ss, item, ',');) out.push_back(std::stoll(item));
    return out;
  };
  try {
    if (k == "size") p.size = std::stoi(v);
    else if (k == "bootstrap_images") p.bootstrap_images = std::stoi(v);
    else if (k == "vae_steps") p.vae_steps = std::stoi(v);
    else if (k == "vae_batch") p.vae_batch = std::stoi(v);
    else if (k == "vae_lr") p.vae_lr = std::stod(v);
    else if (k == "vae_logvar_init") p.vae_logvar_init = std::stod(v);
    else if (k == "vae_crop") p.vae_crop = std::stoi(v) != 0;
    else if (k == "vae_cosine") p.vae_cosine = std::stoi(v) != 0;
    else if (k == "unet_steps") p.unet_steps = std::stoi(v);
    else if (k == "unet_batch") p.unet_batch = std::stoi(v);
    else if (k == "unet_lr") p.unet_lr = std::stod(v);
    else if (k == "photo_images") p.photo_images = std::stoi(v);
    else if (k == "alexnet_steps") p.alexnet_steps = std::stoi(v);
    else if (k == "efficientnet_steps") p.efficientnet_steps = std::stoi(v);
    else if (k == "pretrained_features") p.pretrained_features = std::stoi(v) != 0;
    else if (k == "efficientnet_deep") p.efficientnet_deep = std::stoi(v) != 0;
    else if (k == "feature_batch") p.feature_batch = std::stoi(v);
    else if (k == "feature_lr") p.feature_lr = std::stod(v);
    else if (k == "vae_channels") p.vae_channels = list();
    else if (k == "unet_channels") p.unet_channels = list();
    else return false;
  } catch (const std::logic_error&) {
    throw InputError("--plan " + k + "=" + v + ": bad value");
  }
  if (p.size < 32 || p.vae_steps < 1 || p.unet_steps < 1 || p.vae_batch < 1 || p.unet_batch < 1 || p.bootstrap_images < 1 || p.photo_images < 0)
    throw InputError("--plan " + k + "=" + v + ": out of range (size >= 32, steps, batches and bootstrap_images >= 1)");
  return true;
}

namespace {

// --- the small pipeline: configs in the diffusers / transformers formats -----------------------

// CLIP's byte-to-unicode table (openai/CLIP simple_tokenizer.bytes_to_unicode), as UTF-8 strings,
// in the order CLIP's vocabulary lists them.
std::vector<std::string> byte_symbols() {
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b)
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  std::vector<std::string> out;
  for (int c : cs) {
    std::string u;
    if (c < 0x80) {
      u += static_cast<char>(c);
    } else {
      u += static_cast<char>(0xC0 | (c >> 6));
      u += static_cast<char>(0x80 | (c & 0x3F));
    }
    out.push_back(u);
  }
  return out;
}

// The words the demo's prompts use: each gets merges that build it from its letters, so that it is
// one token (CLIP's own 49k-token vocabulary is 1.5 MB of files for a text encoder the demo keeps
// random anyway). Any other text still tokenises, byte by byte.
std::vector<std::pair<std::string, std::string>> demo_merges() {
  std::vector<std::pair<std::string, std::string>> merges;
  std::set<std::string> made;
  for (const std::string word : {"a", "perfect", "photo", "of", "weave", "marble", "washer", "pill", "tiles", "nut"}) {
    std::string piece(1, word[0]);
    for (std::size_t i = 1; i < word.size(); ++i) {
      const std::string next = std::string(1, word[i]) + (i + 1 == word.size() ? "</w>" : "");
      if (made.insert(piece + next).second) merges.emplace_back(piece, next);
      piece += next;
    }
  }
  return merges;
}

int64_t demo_vocab_size() { return 512 + static_cast<int64_t>(demo_merges().size()) + 2; }

void write_tokenizer(const fs::path& dir) {
  fs::create_directories(dir);
  nlohmann::json vocab = nlohmann::json::object();
  const auto symbols = byte_symbols();
  for (std::size_t i = 0; i < symbols.size(); ++i) vocab[symbols[i]] = i;
  for (std::size_t i = 0; i < symbols.size(); ++i) vocab[symbols[i] + "</w>"] = 256 + i;
  std::string merges = "#version: 0.2\n";
  int64_t id = 512;
  for (const auto& [a, b] : demo_merges()) {
    merges += a + " " + b + "\n";
    vocab[a + b] = id++;
  }
  vocab["<|startoftext|>"] = id++;
  vocab["<|endoftext|>"] = id++;
  write_file_atomically((dir / "vocab.json").string(), json_text(vocab));
  write_file_atomically((dir / "merges.txt").string(), merges);
  const nlohmann::json config = {{"tokenizer_class", "CLIPTokenizer"}, {"model_max_length", 77},      {"do_lower_case", true},
                                 {"bos_token", "<|startoftext|>"},   {"eos_token", "<|endoftext|>"}, {"pad_token", "<|endoftext|>"},
                                 {"unk_token", "<|endoftext|>"},     {"errors", "replace"},          {"add_prefix_space", false}};
  write_file_atomically((dir / "tokenizer_config.json").string(), json_text(config));
}

nlohmann::json text_config() {
  return {{"architectures", {"CLIPTextModel"}}, {"model_type", "clip_text_model"}, {"hidden_size", 32}, {"intermediate_size", 64},
          {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"max_position_embeddings", 77}, {"vocab_size", demo_vocab_size()},
          {"layer_norm_eps", 1e-5}, {"hidden_act", "quick_gelu"}, {"bos_token_id", demo_vocab_size() - 2}, {"eos_token_id", 2},
          {"pad_token_id", demo_vocab_size() - 1},
          {"projection_dim", 32}, {"torch_dtype", "float32"}};
}

nlohmann::json vae_config(const BootstrapPlan& p, double scaling_factor) {
  const std::size_t n = p.vae_channels.size();
  return {{"_class_name", "AutoencoderKL"}, {"_diffusers_version", "0.27.2"}, {"act_fn", "silu"},
          {"block_out_channels", p.vae_channels}, {"down_block_types", std::vector<std::string>(n, "DownEncoderBlock2D")},
          {"up_block_types", std::vector<std::string>(n, "UpDecoderBlock2D")}, {"in_channels", 3}, {"out_channels", 3},
          {"latent_channels", 4}, {"layers_per_block", 1}, {"norm_num_groups", 8}, {"sample_size", p.size},
          {"scaling_factor", scaling_factor}, {"force_upcast", true}};
}

// SD's UNet layout at two levels: attention at the lower resolution only (where it is cheap).
nlohmann::json unet_config(const BootstrapPlan& p) {
  std::vector<int64_t> heads;
  for (int64_t c : p.unet_channels) heads.push_back(std::max<int64_t>(1, c / 16));
  std::vector<std::string> down(p.unet_channels.size(), "DownBlock2D"), up(p.unet_channels.size(), "UpBlock2D");
  down.back() = "CrossAttnDownBlock2D";
  up.front() = "CrossAttnUpBlock2D";
  return {{"_class_name", "UNet2DConditionModel"}, {"_diffusers_version", "0.27.2"}, {"act_fn", "silu"},
          {"attention_head_dim", heads}, {"block_out_channels", p.unet_channels}, {"center_input_sample", false},
          {"cross_attention_dim", 32}, {"down_block_types", down}, {"downsample_padding", 1},
          {"flip_sin_to_cos", true}, {"freq_shift", 0}, {"in_channels", 9}, {"layers_per_block", 1}, {"mid_block_scale_factor", 1},
          {"norm_eps", 1e-5}, {"norm_num_groups", 8}, {"out_channels", 4},
          {"sample_size", p.size >> (p.vae_channels.size() - 1)}, {"up_block_types", up}, {"upcast_attention", false},
          {"use_linear_projection", true}};
}

nlohmann::json scheduler_config() {
  return {{"_class_name", "DDIMScheduler"}, {"_diffusers_version", "0.27.2"}, {"beta_start", 0.00085}, {"beta_end", 0.012},
          {"beta_schedule", "scaled_linear"}, {"clip_sample", false}, {"num_train_timesteps", 1000}, {"set_alpha_to_one", false},
          {"steps_offset", 1}, {"prediction_type", "epsilon"}, {"timestep_spacing", "leading"}, {"trained_betas", nullptr}};
}

void write_json(const fs::path& path, const nlohmann::json& j) {
  fs::create_directories(path.parent_path());
  write_file_atomically(path.string(), json_text(j));
}

// A complete diffusers inpainting pipeline folder with seeded random weights.
void write_random_pipeline(const fs::path& dir, const BootstrapPlan& plan, uint64_t seed) {
  torch::manual_seed(seed);
  fs::create_directories(dir);
  write_json(dir / "model_index.json", {{"_class_name", "StableDiffusionInpaintPipeline"}, {"_diffusers_version", "0.27.2"},
                                        {"requires_safety_checker", false}, {"safety_checker", {nullptr, nullptr}},
                                        {"feature_extractor", {nullptr, nullptr}}, {"scheduler", {"diffusers", "DDIMScheduler"}},
                                        {"text_encoder", {"transformers", "CLIPTextModel"}}, {"tokenizer", {"transformers", "CLIPTokenizer"}},
                                        {"unet", {"diffusers", "UNet2DConditionModel"}}, {"vae", {"diffusers", "AutoencoderKL"}}});
  write_json(dir / "scheduler" / "scheduler_config.json", scheduler_config());
  write_tokenizer(dir / "tokenizer");
  write_json(dir / "text_encoder" / "config.json", text_config());
  ClipTextModel clip(ClipTextConfig::from_json((dir / "text_encoder" / "config.json").string()));
  save_safetensors((dir / "text_encoder" / "model.safetensors").string(), module_tensors(*clip), {{"format", "pt"}});
  write_json(dir / "vae" / "config.json", vae_config(plan, 1.0));
  AutoencoderKL vae(VaeConfig::from_json((dir / "vae" / "config.json").string()));
  save_safetensors((dir / "vae" / "diffusion_pytorch_model.safetensors").string(), module_tensors(*vae), {{"format", "pt"}});
  write_json(dir / "unet" / "config.json", unet_config(plan));
  UNet2DConditionModel unet(UNetConfig::from_json((dir / "unet" / "config.json").string()));
  save_safetensors((dir / "unet" / "diffusion_pytorch_model.safetensors").string(), module_tensors(*unet), {{"format", "pt"}});
}

// --- the --minutes budget ------------------------------------------------------------------------

// Seconds per training step of the VAE stage and of the UNet stage at this plan's sizes on this
// machine, measured on a throwaway random pipeline and random data: one warm-up step, then two timed.
// The run's own models are untouched (stage 2 seeds its pipeline afresh), and every training step
// draws from its own generator. Left out, and so in the budget's reserve: LPIPS in the VAE loss, the
// UNet stage's augmentation and checkpoints.
std::pair<double, double> time_training_steps(const BootstrapPlan& plan, const fs::path& scratch) {
  write_random_pipeline(scratch, plan, 0);
  SdPipeline pipe = load_sd_pipeline(scratch.string());
  fs::remove_all(scratch);
  auto timed = [](const std::function<void()>& step) {
    step();  // warm-up: allocations, kernel choices
    const auto t = std::chrono::steady_clock::now();
    for (int i = 0; i < 2; ++i) step();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() / 2;
  };
  const int64_t crop = plan.vae_crop ? plan.size / 2 : plan.size;
  torch::optim::Adam vae_adam(pipe.vae->parameters(), torch::optim::AdamOptions(plan.vae_lr));
  const double vae_step = timed([&] {
    const torch::Tensor x = torch::rand({plan.vae_batch, 3, crop, crop}) * 2.0 - 1.0;
    vae_adam.zero_grad();
    const LatentPosterior post = pipe.vae->encode(x);
    const torch::Tensor loss = torch::mse_loss(pipe.vae->decode(post.sample()), x) + 1e-4 * post.mean.pow(2).mean();
    loss.backward();
    vae_adam.step();
  });
  for (auto& p : pipe.vae->parameters()) p.set_requires_grad(false);
  torch::optim::Adam unet_adam(pipe.unet->parameters(), torch::optim::AdamOptions(plan.unet_lr));
  const int64_t latent = plan.size >> (plan.vae_channels.size() - 1);
  const double unet_step = timed([&] {
    const torch::Tensor x = torch::rand({plan.unet_batch, 3, plan.size, plan.size}) * 2.0 - 1.0;
    torch::Tensor z, z_masked;
    {
      torch::NoGradGuard no_grad;
      z = pipe.vae->encode(x).mean;  // the image and the masked image, as finetune encodes them
      z_masked = pipe.vae->encode(x * 0.5).mean;
    }
    const torch::Tensor input = torch::cat({z, torch::ones({plan.unet_batch, 1, latent, latent}), z_masked}, 1);
    const torch::Tensor context = torch::randn({plan.unet_batch, 77, 32});
    unet_adam.zero_grad();
    const torch::Tensor loss = torch::mse_loss(pipe.unet->forward(input, torch::full({plan.unet_batch}, 500, torch::kLong), context), z);
    loss.backward();
    unet_adam.step();
  });
  return {vae_step, unet_step};
}

// The steps of a --minutes run: resolved once and kept in work/budget.json (and then bootstrap.json),
// so that a resumed run trains the steps the first one chose, whatever the machine's speed now.
BootstrapPlan plan_for_budget(const BootstrapOptions& options, BootstrapPlan plan, const fs::path& out, double elapsed,
                              BootstrapSummary& summary) {
  const fs::path kept = fs::is_regular_file(out / "bootstrap.json") ? out / "bootstrap.json" : out / "work" / "budget.json";
  nlohmann::json budget;
  if (fs::is_regular_file(kept)) budget = read_json_file(kept.string()).value("budget", nlohmann::json());
  if (!budget.is_object() || budget.value("minutes", 0.0) != options.minutes || budget.value("plan_vae_steps", 0) != plan.vae_steps ||
      budget.value("plan_unet_steps", 0) != plan.unet_steps) {
    const auto [vae_step, unet_step] = time_training_steps(plan, out / "work" / "probe");
    // Reserve: 10 % of the budget for what the probe leaves out (LPIPS, augmentation, checkpoints,
    // loading), plus the time already spent (data, the probe).
    const double fixed = elapsed + 0.1 * options.minutes * 60;
    const BudgetSteps steps = steps_for_budget(plan, options.minutes * 60, fixed, vae_step, unet_step);
    budget = {{"minutes", options.minutes},     {"plan_vae_steps", plan.vae_steps}, {"plan_unet_steps", plan.unet_steps},
              {"vae_step_seconds", vae_step},   {"unet_step_seconds", unet_step},   {"vae_steps", steps.vae_steps},
              {"unet_steps", steps.unet_steps}, {"scale", steps.scale}};
    // A finished run keeps its record in bootstrap.json; a different budget there is another run (refused below).
    if (!fs::is_regular_file(out / "bootstrap.json")) write_json(out / "work" / "budget.json", {{"budget", budget}});
  }
  summary.budget_scale = budget.at("scale").get<double>();
  plan.vae_steps = budget.at("vae_steps").get<int>();
  plan.unet_steps = budget.at("unet_steps").get<int>();
  spdlog::info("bootstrap: --minutes {}: {} VAE and {} UNet steps ({:.0f} % of the plan's; measured {:.3f} s and {:.3f} s per step)",
               options.minutes, plan.vae_steps, plan.unet_steps, 100 * summary.budget_scale, budget.at("vae_step_seconds").get<double>(),
               budget.at("unet_step_seconds").get<double>());
  return plan;
}

// --- stage 3: the VAE ---------------------------------------------------------------------------

struct VaeResult {
  double scaling = 1.0, last_loss = 0;
  bool finished = false;
  int64_t steps_run = 0;
};

// The whole VAE (encoder and decoder), as SD's autoencoder was trained: reconstruction MSE +
// 0.1·LPIPS + a small KL term, on images in [−1, 1]; then the scaling factor that gives the latents
// unit variance (SD's 0.18215 was found the same way). Every step draws from a generator seeded by
// the step, and the state (weights, Adam's moments, the step) is saved every `save_every` steps and
// when stopped, so that a resumed run takes the steps an uninterrupted one takes.
VaeResult train_vae(SdPipeline& pipe, Lpips& lpips, const torch::Tensor& images, const BootstrapPlan& plan, uint64_t seed,
                    const fs::path& state_dir, int64_t budget) {
  std::vector<NamedParameter> params;
  for (const auto& p : pipe.vae->named_parameters(true)) {
    p.value().set_requires_grad(true);
    params.push_back({p.key(), p.value()});
  }
  for (auto& p : lpips->parameters()) p.set_requires_grad(false);
  Adam adam(params, plan.vae_lr);
  int start = 0;
  VaeResult result;
  // The state lives in state_dir/step-N/ (tensors + JSON) and state_dir/latest.json names the newest
  // complete one: a kill at any moment leaves latest.json naming a whole checkpoint.
  const fs::path latest = state_dir / "latest.json";
  if (fs::is_regular_file(latest)) {
    const nlohmann::json meta = read_json_file(latest.string());
    start = meta.at("step").get<int>();
    result.last_loss = meta.value("last_loss", 0.0);
    const fs::path file = state_dir / meta.at("dir").get<std::string>() / "state.safetensors";
    auto state = load_all(file.string());
    std::map<std::string, torch::Tensor> adam_state;
    torch::NoGradGuard no_grad;
    for (auto& p : params) {
      const auto it = state.find("vae." + p.name);
      if (it == state.end()) throw FormatError(file.string(), "no tensor 'vae." + p.name + "' (a checkpoint of another VAE?)");
      p.tensor.copy_(it->second);
    }
    for (const auto& [k, t] : state)
      if (k.rfind("vae.", 0) != 0) adam_state[k] = t;
    adam.load_state(adam_state, start);
    spdlog::info("bootstrap VAE: resumed at step {}/{} from {}", start, plan.vae_steps, file.string());
  } else {
    // The posterior's log-variance starts at vae_logvar_init instead of ≈ 0: with unit sampling noise
    // the decoder first learns to ignore z and draws the class's average object (measured: a washer
    // moved to the centre); SD's own VAE ends with std ≪ 1 after long training. The log-variance
    // half of quant_conv's weights is scaled by 0.1 so that the bias sets the start (for any value).
    torch::NoGradGuard no_grad;
    const int64_t c = pipe.vae->quant_conv->options.out_channels() / 2;
    pipe.vae->quant_conv->bias.narrow(0, c, c).fill_(plan.vae_logvar_init);
    pipe.vae->quant_conv->weight.narrow(0, c, c).mul_(0.1);
  }
  auto save = [&](int step) {
    std::map<std::string, torch::Tensor> state = adam.state();
    for (const auto& p : params) state["vae." + p.name] = p.tensor.detach();
    const std::string dir = "step-" + std::to_string(step);
    std::string previous;
    if (fs::is_regular_file(latest)) previous = read_json_file(latest.string()).value("dir", "");
    fs::create_directories(state_dir / dir);
    save_safetensors((state_dir / dir / "state.safetensors").string(), state);
    write_file_atomically(latest.string(), json_text({{"step", step}, {"dir", dir}, {"last_loss", result.last_loss}}));
    if (!previous.empty() && previous != dir) fs::remove_all(state_dir / previous);
  };
  pipe.vae->train();
  const int64_t n = images.size(0);
  ProgressBar bar("bootstrap VAE", plan.vae_steps - start, "step");
  constexpr int save_every = 100;
  int step = start;
  for (; step < plan.vae_steps; ++step) {
    if (budget > 0 && result.steps_run >= budget) break;
    at::Generator gen = at::detail::createCPUGenerator(seed * 1000003 + static_cast<uint64_t>(step));
    // Cosine decay to 5 % of the rate: a short schedule ends sharper than at a constant rate.
    if (plan.vae_cosine) adam.set_lr(plan.vae_lr * (0.05 + 0.95 * 0.5 * (1.0 + std::cos(M_PI * step / plan.vae_steps))));
    const torch::Tensor idx = torch::randint(n, {plan.vae_batch}, gen, torch::kLong);
    torch::Tensor x = images.index_select(0, idx);
    // The VAE is fully convolutional: random half-size crops train it at a quarter of the cost.
    const int64_t crop = plan.vae_crop ? images.size(2) / 2 : images.size(2);
    const int64_t oy = torch::randint(images.size(2) - crop + 1, {1}, gen, torch::kLong).item<int64_t>();
    const int64_t ox = torch::randint(images.size(3) - crop + 1, {1}, gen, torch::kLong).item<int64_t>();
    x = x.narrow(2, oy, crop).narrow(3, ox, crop).contiguous();
    x = x * 2.0 - 1.0;
    adam.zero_grad();
    const LatentPosterior post = pipe.vae->encode(x);
    const torch::Tensor z = post.mean + post.std * torch::randn(post.mean.sizes(), gen, post.mean.options());
    const torch::Tensor x_hat = pipe.vae->decode(z);
    const torch::Tensor kl = 0.5 * (post.mean.pow(2) + post.std.pow(2) - 1.0 - post.logvar).mean();
    const torch::Tensor loss = torch::mse_loss(x_hat, x) + 0.1 * lpips->loss(x_hat, x).mean() + 1e-4 * kl;
    loss.backward();
    clip_gradients(params, 1.0);
    adam.step();
    result.last_loss = loss.item<double>();
    ++result.steps_run;
    if ((step + 1) % 100 == 0) spdlog::info("bootstrap VAE step {}/{}: loss {:.4f}", step + 1, plan.vae_steps, result.last_loss);
    if ((step + 1) % save_every == 0 && step + 1 < plan.vae_steps) save(step + 1);
    bar.advance();
  }
  bar.finish();
  if (step < plan.vae_steps) {
    save(step);
    return result;
  }
  pipe.vae->eval();
  for (auto& p : pipe.vae->parameters()) p.set_requires_grad(false);
  torch::NoGradGuard no_grad;
  const torch::Tensor means = pipe.vae->encode(images * 2.0 - 1.0).mean;
  result.scaling = 1.0 / means.std().item<double>();
  result.finished = true;
  spdlog::info("bootstrap VAE: final loss {:.4f}; latent std {:.3f} -> scaling_factor {:.4f}", result.last_loss, 1.0 / result.scaling, result.scaling);
  return result;
}

// --- stage 1: the training images ---------------------------------------------------------------

struct TrainingImages {
  std::vector<std::string> classes;                  // the user's, then "photo"
  std::vector<std::vector<cv::Mat>> images;          // RGB8, plan.size², per class
  std::vector<PhotoSource> photos;
  int64_t skipped = 0;                               // unreadable files (each named in a warning)
};

// Every readable normal training image of the chosen classes, resized to the plan's size; the
// photographs' crops as one more class. A corrupt file is named in a warning and skipped; a class
// without a readable image is an error.
TrainingImages gather_images(const BootstrapOptions& options, const BootstrapPlan& plan, uint64_t seed) {
  if (options.root.empty()) throw InputError("bootstrap: --root is required (the dataset with your normal images)");
  if (!fs::is_directory(options.root)) throw InputError("bootstrap: --root " + options.root + " is not a folder");
  const Dataset dataset = load_dataset(options.dataset, options.root, options.classes);
  TrainingImages out;
  for (const ClassData& c : dataset.classes) {
    std::vector<cv::Mat> images;
    for (const auto& path : c.train_good) {
      try {
        images.push_back(tensor_to_rgb8(read_model_image(path, plan.size).tensor[0]));
      } catch (const InputError& e) {
        spdlog::warn("bootstrap: skipping an unreadable image: {}", e.what());
        ++out.skipped;
      }
    }
    if (images.empty())
      throw InputError("bootstrap: class '" + c.name + "' has no readable normal training image (" + std::to_string(c.train_good.size()) +
                       " file(s) under " + options.root + ")");
    out.classes.push_back(c.name);
    out.images.push_back(std::move(images));
  }
  if (out.classes.empty()) throw InputError("bootstrap: no class with normal training images under " + options.root);
  if (options.photos && plan.photo_images > 0) {
    out.photos = photos_for_role(embedded_photo_list(), "bootstrap", options.photo_root);
    // plan.photo_images crops, evenly from every photograph, at every scale and orientation.
    const int per_photo = (plan.photo_images + static_cast<int>(out.photos.size()) - 1) / static_cast<int>(out.photos.size());
    std::vector<std::vector<cv::Mat>> crops;
    for (std::size_t p = 0; p < out.photos.size(); ++p)
      crops.push_back(augmented_photo_crops(read_photo_rgb8(photo_path(out.photos[p], options.photo_root)), per_photo, plan.size, seed * 31 + p));
    std::vector<cv::Mat> photo_class;
    for (int i = 0; i < plan.photo_images; ++i) {
      const std::size_t p = static_cast<std::size_t>(i) % out.photos.size(), c = static_cast<std::size_t>(i) / out.photos.size();
      cv::Mat rgb8;
      crops[p][c].convertTo(rgb8, CV_8UC3, 255.0);
      photo_class.push_back(rgb8);
    }
    if (std::find(out.classes.begin(), out.classes.end(), "photo") != out.classes.end())
      throw InputError("bootstrap: the dataset has a class named 'photo', the name of the photographs' class (rename it, or --no-photos)");
    out.classes.push_back("photo");
    out.images.push_back(std::move(photo_class));
  }
  return out;
}

// The folder dataset the VAE and the UNet train on: every class repeated to the same count (the
// largest class's, at least plan.bootstrap_images), so that each weighs the same.
int64_t write_training_folder(const TrainingImages& t, const BootstrapPlan& plan, const fs::path& dir) {
  std::size_t count = static_cast<std::size_t>(plan.bootstrap_images);
  for (std::size_t c = 0; c + (t.photos.empty() ? 0 : 1) < t.classes.size(); ++c) count = std::max(count, t.images[c].size());
  fs::remove_all(dir);
  int64_t written = 0;
  char name[32];
  for (std::size_t c = 0; c < t.classes.size(); ++c) {
    const fs::path cls = dir / t.classes[c];
    fs::create_directories(cls / "train" / "good");
    fs::create_directories(cls / "test" / "good");
    const bool photo = !t.photos.empty() && c + 1 == t.classes.size();
    const std::size_t n = photo ? t.images[c].size() : count;
    for (std::size_t i = 0; i < n; ++i) {
      std::snprintf(name, sizeof name, "%04zu.png", i);
      write_png((cls / "train" / "good" / name).string(), t.images[c][i % t.images[c].size()]);
    }
    // the folder layout needs a test image; the bootstrap never reads it
    write_png((cls / "test" / "good" / "0000.png").string(), t.images[c][0]);
    written += static_cast<int64_t>(n);
  }
  return written;
}

std::string run_key(const BootstrapOptions& options, const BootstrapPlan& plan, uint64_t seed, const TrainingImages& t,
                    const std::string& config_text) {
  uint64_t images = 1469598103934665603ull;
  for (const auto& cls : t.images)
    for (const auto& m : cls) images = (images ^ pixel_hash(m)) * 1099511628211ull;
  std::vector<std::string> photos;
  for (const auto& p : t.photos) photos.push_back(p.file);
  const nlohmann::json key = {
      {"version", project_version()}, {"seed", seed}, {"classes", t.classes}, {"images", std::to_string(images)}, {"photos", photos},
      {"plan", {plan.size, plan.bootstrap_images, plan.vae_steps, plan.vae_batch, plan.vae_lr, plan.vae_crop, plan.vae_cosine, plan.vae_logvar_init,
                plan.unet_steps, plan.unet_batch, plan.unet_lr, plan.photo_images, plan.vae_channels, plan.unet_channels}},
      {"features", plan.pretrained_features ? nlohmann::json{plan.alexnet_steps, plan.efficientnet_steps, plan.efficientnet_deep, plan.feature_batch,
                                                             plan.feature_lr, "pairs-v2"}
                                            : nlohmann::json("init-weights")},
      {"config", config_text}, {"overrides", options.overrides}};
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : json_compact(key)) h = (h ^ c) * 1099511628211ull;
  std::ostringstream s;
  s << std::hex << h;
  return s.str();
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

BudgetSteps steps_for_budget(const BootstrapPlan& plan, double budget_seconds, double fixed_seconds, double vae_step_seconds,
                             double unet_step_seconds) {
  const double full = plan.vae_steps * vae_step_seconds + plan.unet_steps * unet_step_seconds;
  BudgetSteps steps;
  steps.scale = full > 0 ? std::min(1.0, (budget_seconds - fixed_seconds) / full) : 1.0;
  steps.vae_steps = static_cast<int>(std::floor(steps.scale * plan.vae_steps));
  steps.unet_steps = static_cast<int>(std::floor(steps.scale * plan.unet_steps));
  const int vae_min = std::min(kMinBudgetSteps, plan.vae_steps), unet_min = std::min(kMinBudgetSteps, plan.unet_steps);
  if (steps.vae_steps < vae_min || steps.unet_steps < unet_min) {
    const double least = std::max(static_cast<double>(vae_min) / plan.vae_steps, static_cast<double>(unet_min) / plan.unet_steps);
    throw InputError(fmt::format("bootstrap: --minutes {:g} leaves time for {} VAE and {} UNet steps on this machine ({:.3f} s and {:.3f} s per "
                                 "step); the smallest useful run ({} and {}) needs about {:.1f} minutes",
                                 budget_seconds / 60, std::max(0, steps.vae_steps), std::max(0, steps.unet_steps), vae_step_seconds,
                                 unet_step_seconds, vae_min, unet_min, (fixed_seconds + least * full) / 60 * 1.05));
  }
  return steps;
}

BootstrapSummary run_bootstrap(const BootstrapOptions& options) {
  BootstrapPlan plan;
  for (const std::string& c : options.plan) {
    const auto eq = c.find('=');
    if (eq == std::string::npos) throw InputError("--plan " + c + ": expected key=value");
    if (!apply_bootstrap_plan(plan, c.substr(0, eq), c.substr(eq + 1)))
      throw InputError("--plan " + c + ": unknown key '" + c.substr(0, eq) + "'");
  }
  return run_bootstrap(options, plan);
}

BootstrapSummary run_bootstrap(const BootstrapOptions& options, const BootstrapPlan& planned) {
  const auto start = std::chrono::steady_clock::now();
  if (!(options.minutes >= 0) || !std::isfinite(options.minutes)) throw InputError("bootstrap: --minutes must be a positive number of minutes");
  BootstrapPlan plan = planned;
  if (options.output.empty()) throw InputError("bootstrap: --output is required");
  // LPIPS's AlexNet needs 32 pixels at least: the VAE's training crops may not be smaller.
  if ((plan.vae_crop ? plan.size / 2 : plan.size) < 32)
    throw InputError("bootstrap: --plan size=" + std::to_string(plan.size) + " gives " + std::to_string(plan.size / 2) +
                     "-pixel VAE training crops, below LPIPS's 32 (size >= 64, or vae_crop=0)");
  const fs::path out = fs::absolute(options.output), work = out / "work", features_dir = out / "features";
  std::string config_text = embedded_demo_config();
  if (!options.config.empty()) {
    std::ifstream in(options.config);
    if (!in) throw InputError("bootstrap: cannot read --config " + options.config);
    config_text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const demo_detail::FeaturePaths features{(features_dir / "alexnet.safetensors").string(), (features_dir / "efficientnet_b6.safetensors").string(),
                                           (features_dir / "lpips.safetensors").string()};
  std::vector<std::string> overrides = options.overrides;
  for (const std::string& o : {"features.alexnet=" + features.alexnet, "features.efficientnet=" + features.efficientnet,
                               "features.lpips=" + features.lpips, "resolution=" + std::to_string(plan.size)})
    overrides.push_back(o);
  if (options.overwrite) fs::remove_all(out);
  fs::create_directories(work);
  const fs::path config_file = work / "config.yaml";
  if (!fs::is_regular_file(config_file)) write_file_atomically(config_file.string(), config_text);
  const AppConfig config = load_app_config(config_file.string(), overrides);
  apply_runtime(config.runtime);
  const uint64_t seed = static_cast<uint64_t>(config.runtime.seed);
  BootstrapSummary summary;
  summary.features_dir = features_dir.string();
  summary.config_file = (out / "anomalysd.yaml").string();
  spdlog::info("bootstrap: a small SD inpainting pipeline trained from scratch on this CPU — not Stable Diffusion's pre-training, "
               "not the paper's setting (its model saw billions of images); output {}", out.string());

  // 1. the training images
  const TrainingImages images = gather_images(options, plan, seed);
  if (options.minutes > 0) plan = plan_for_budget(options, plan, out, seconds_since(start), summary);
  summary.vae_steps = plan.vae_steps;
  summary.unet_steps = plan.unet_steps;
  const std::string key = run_key(options, plan, seed, images, config_text);
  if (fs::is_regular_file(out / "bootstrap.json") && fs::is_regular_file(out / "model" / "model_index.json")) {
    if (read_json_file((out / "bootstrap.json").string()).value("key", "") != key)
      throw InputError("bootstrap: " + out.string() + " holds a bootstrap of other data or settings (--overwrite replaces it)");
    summary.model = (out / "model").string();
    summary.finished = summary.already_done = true;
    spdlog::info("bootstrap: {} is already done (same data and settings)", out.string());
    return summary;
  }
  if (fs::is_regular_file(work / "key.json") && read_json_file((work / "key.json").string()).value("key", "") != key)
    throw InputError("bootstrap: " + out.string() + " holds an unfinished bootstrap of other data or settings (--overwrite discards it)");
  if (!fs::is_regular_file(work / "data.json")) {
    write_file_atomically((work / "key.json").string(), json_text({{"key", key}}));
    summary.images = write_training_folder(images, plan, work / "data");
    write_file_atomically((work / "data.json").string(), json_text({{"images", summary.images}, {"classes", images.classes}}));
  }
  summary.images = read_json_file((work / "data.json").string()).at("images").get<int64_t>();
  summary.photo_images = images.photos.empty() ? 0 : static_cast<int64_t>(images.images.back().size());
  summary.data_seconds = seconds_since(start);
  spdlog::info("bootstrap 1/4 data: {} training images of {} classes ({} of them crops of {} real photographs){}", summary.images,
               images.classes.size(), summary.photo_images, images.photos.size(),
               images.skipped ? fmt::format("; {} unreadable file(s) skipped", images.skipped) : std::string());

  // 2. the feature networks, and the random pipeline
  fs::create_directories(features_dir);
  const Dataset data = load_dataset("folder", (work / "data").string());
  std::vector<torch::Tensor> tensors;
  for (const ClassData& c : data.classes)
    for (const auto& p : c.train_good) tensors.push_back(read_model_image(p, plan.size).tensor);
  const torch::Tensor all_images = torch::cat(tensors, 0);
  if (!fs::is_regular_file(work / "features.done")) {
    if (plan.pretrained_features) {
      demo_detail::LabelledImages labelled;
      std::vector<torch::Tensor> labels;
      for (std::size_t c = 0; c < data.classes.size(); ++c) {
        labels.push_back(torch::full({static_cast<int64_t>(data.classes[c].train_good.size())}, static_cast<int64_t>(c), torch::kLong));
        if (std::find(options.texture_classes.begin(), options.texture_classes.end(), data.classes[c].name) != options.texture_classes.end() ||
            data.classes[c].name == "photo")
          labelled.texture_classes.insert(static_cast<int64_t>(c));
        labelled.classes.push_back(data.classes[c].name);
      }
      labelled.images = all_images;
      labelled.labels = torch::cat(labels, 0);
      labelled.source = "the bootstrap's training images (" + options.root + " and crops of real photographs)";
      demo_detail::pretrain_feature_networks(labelled, {plan.alexnet_steps, plan.feature_batch, plan.feature_lr},
                                             {plan.efficientnet_steps, plan.feature_batch, plan.feature_lr, plan.efficientnet_deep}, seed, features);
    } else {
      init_feature_weights("efficientnet_b6", seed, features.efficientnet);
      init_feature_weights("alexnet", seed, features.alexnet);
      init_feature_weights("lpips", seed, features.lpips);
    }
    write_random_pipeline(work / "init", plan, seed);
    write_file_atomically((work / "features.done").string(), "done\n");
  }
  spdlog::info("bootstrap 2/4 feature networks: {} ({})", plan.pretrained_features ? "pre-trained on these images" : "seeded random weights",
               features_dir.string());

  // 3. the VAE, on every training image
  const auto t_vae = std::chrono::steady_clock::now();
  int64_t budget = options.stop_after;
  if (!fs::is_regular_file(work / "vae.done.json")) {
    SdPipeline pipe = load_sd_pipeline((work / "init").string());
    Lpips lpips = load_lpips(features.alexnet, features.lpips);
    const fs::path state = work / "vae-state";
    if (fs::is_regular_file(state / "latest.json")) summary.start_step = read_json_file((state / "latest.json").string()).at("step").get<int64_t>();
    const VaeResult vae = train_vae(pipe, lpips, all_images, plan, seed, state, budget);
    if (budget > 0) budget -= vae.steps_run;
    if (!vae.finished) {
      summary.seconds = seconds_since(start);
      spdlog::info("bootstrap: stopped after {} step(s) in the VAE stage; the state is in {} (run the same command again to resume)",
                   options.stop_after, work.string());
      return summary;
    }
    write_json(work / "init" / "vae" / "config.json", vae_config(plan, vae.scaling));
    save_safetensors((work / "init" / "vae" / "diffusion_pytorch_model.safetensors").string(), module_tensors(*pipe.vae), {{"format", "pt"}});
    write_file_atomically((work / "vae.done.json").string(), json_text({{"scaling_factor", vae.scaling}, {"last_loss", vae.last_loss}}));
    fs::remove_all(state);
    if (budget == 0 && options.stop_after > 0) {
      summary.seconds = seconds_since(start);
      spdlog::info("bootstrap: stopped after {} step(s), at the end of the VAE stage (run the same command again to resume)", options.stop_after);
      return summary;
    }
  } else {
    summary.start_step = plan.vae_steps;
  }
  const nlohmann::json vae_done = read_json_file((work / "vae.done.json").string());
  summary.vae_scaling_factor = vae_done.at("scaling_factor").get<double>();
  summary.vae_seconds = seconds_since(t_vae);
  spdlog::info("bootstrap 3/4 VAE: {} steps, last loss {:.4f}, scaling factor {:.4f}", plan.vae_steps, vae_done.at("last_loss").get<double>(),
               summary.vae_scaling_factor);

  // 4. the inpainting UNet, with finetune's loop: eq. (8) on random rectangles (no IoU filter)
  const auto t_unet = std::chrono::steady_clock::now();
  FinetuneOptions f;
  f.config = config_file.string();
  f.overrides = overrides;
  for (const std::string& o : {std::string("train.parts=unet"), "train.unet_steps=" + std::to_string(plan.unet_steps),
                               "train.batch_size=" + std::to_string(plan.unet_batch), "train.lr=" + std::to_string(plan.unet_lr),
                               std::string("train.mask=random"), std::string("train.save_every=100"), std::string("train.log_every=100"),
                               std::string("train.foreground=texture"), std::string("train.augment.probability=0.5")})
    f.overrides.push_back(o);
  f.model = (work / "init").string();
  f.dataset = "folder";
  f.root = (work / "data").string();
  int64_t smallest = 0;
  for (const ClassData& c : data.classes) smallest = smallest == 0 ? static_cast<int64_t>(c.train_good.size()) : std::min<int64_t>(smallest, c.train_good.size());
  f.shots = smallest;
  f.output = (work / "unet").string();
  if (newest_checkpoint(f.output).empty()) {
    f.overwrite = true;
  } else {
    f.resume = true;
    spdlog::info("bootstrap: resuming the UNet stage from {}", newest_checkpoint(f.output));
  }
  f.stop_after = options.stop_after > 0 ? budget : 0;
  if (options.stop_after > 0 && budget <= 0) throw std::logic_error("bootstrap: no step budget left for the UNet stage");
  const FinetuneSummary unet = run_finetune(f);
  summary.unet_seconds = seconds_since(t_unet);
  if (!unet.finished) {
    summary.seconds = seconds_since(start);
    spdlog::info("bootstrap: stopped after {} step(s) in the UNet stage; its checkpoints are in {} (run the same command again to resume)",
                 options.stop_after, f.output);
    return summary;
  }
  spdlog::info("bootstrap 4/4 UNet: {} steps, last loss {:.4f}", plan.unet_steps, unet.last_unet_loss);

  // 5. the pipeline folder (no shots record: it was not tuned on any benchmark shot), its config
  fs::remove_all(out / "model");
  fs::rename(work / "unet" / "model", out / "model");
  fs::remove(out / "model" / "shots.json");
  fs::remove(out / "model" / "anomalysd_finetune.json");
  write_file_atomically(summary.config_file, config.to_yaml());
  summary.seconds = seconds_since(start);
  std::vector<std::string> photo_files;
  for (const auto& p : images.photos) photo_files.push_back(photo_path(p, options.photo_root) + " (" + p.package + ", " + p.licence + ")");
  write_json(out / "bootstrap.json",
             {{"key", key}, {"seed", seed}, {"dataset", options.dataset}, {"root", fs::absolute(options.root).string()}, {"classes", images.classes},
              {"images", summary.images}, {"photo_images", summary.photo_images}, {"photos", photo_files}, {"skipped_files", images.skipped},
              {"vae_scaling_factor", summary.vae_scaling_factor}, {"vae_last_loss", vae_done.at("last_loss")}, {"unet_last_loss", unet.last_unet_loss},
              {"plan", {{"size", plan.size}, {"vae_steps", plan.vae_steps}, {"unet_steps", plan.unet_steps}, {"vae_channels", plan.vae_channels},
                        {"unet_channels", plan.unet_channels}, {"pretrained_features", plan.pretrained_features}}},
              {"budget", fs::is_regular_file(work / "budget.json") ? read_json_file((work / "budget.json").string()).at("budget") : nlohmann::json()},
              {"note", "a CPU bootstrap without Stable Diffusion's pre-training: not the paper's setting"},
              {"seconds", summary.seconds}});
  fs::remove_all(work);
  summary.model = (out / "model").string();
  summary.finished = true;
  spdlog::info("bootstrap: wrote {} (pipeline), {} (feature weights), {} (use with --config) in {:.0f} s", summary.model, summary.features_dir,
               summary.config_file, summary.seconds);
  return summary;
}

}  // namespace anomalysd

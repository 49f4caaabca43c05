#include "anomalysd/app/demo.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "anomalysd/anomaly/inpaint.h"
#include "anomalysd/app/eval.h"
#include "anomalysd/app/finetune.h"
#include "anomalysd/app/method.h"
#include "anomalysd/app/report.h"
#include "anomalysd/data/dataset.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/data/synthetic.h"
#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/metrics/eval_maps.h"
#include "anomalysd/models/clip_text.h"
#include "anomalysd/tools/components.h"
#include "anomalysd/train/optim.h"
#include "anomalysd/util/progress.h"
#include "anomalysd/version.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace {

// The demo's scale: what runs in minutes on two cores. `quick` is CI's reduced version; any field
// can be changed with --plan key=value.
struct Plan {
  int size = 64;
  int train = 10, test_good = 20, test_bad = 20;  // benchmark images per class
  int bootstrap_images = 80;                      // normal images per class for pre-training (6 classes)
  int vae_steps = 400, vae_batch = 16;
  double vae_lr = 2e-3;
  int unet_steps = 700, unet_batch = 8;
  double unet_lr = 1e-3;
  int finetune_unet = 0, finetune_decoder = 0;    // 0 = the config's
  int limit_per_class = 0;
  std::vector<int64_t> vae_channels{16, 32, 64};  // 2^(n−1) pixels per latent cell
  std::vector<int64_t> unet_channels{32, 64};
};

Plan plan_for(bool quick, const std::vector<std::string>& changes) {
  Plan p;
  if (quick) {
    p.train = 4;
    p.test_good = 8;
    p.test_bad = 8;
    p.bootstrap_images = 24;
    p.vae_steps = 200;
    p.unet_steps = 250;
    p.finetune_unet = 40;
    p.finetune_decoder = 10;
  }
  for (const std::string& c : changes) {
    const auto eq = c.find('=');
    if (eq == std::string::npos) throw InputError("--plan " + c + ": expected key=value");
    const std::string k = c.substr(0, eq), v = c.substr(eq + 1);
    auto list = [&] {
      std::vector<int64_t> out;
      std::stringstream ss(v);
      for (std::string item; std::getline(ss, item, ',');) out.push_back(std::stoll(item));
      return out;
    };
    try {
      if (k == "size") p.size = std::stoi(v);
      else if (k == "train") p.train = std::stoi(v);
      else if (k == "test_good") p.test_good = std::stoi(v);
      else if (k == "test_bad") p.test_bad = std::stoi(v);
      else if (k == "bootstrap_images") p.bootstrap_images = std::stoi(v);
      else if (k == "vae_steps") p.vae_steps = std::stoi(v);
      else if (k == "vae_batch") p.vae_batch = std::stoi(v);
      else if (k == "vae_lr") p.vae_lr = std::stod(v);
      else if (k == "unet_steps") p.unet_steps = std::stoi(v);
      else if (k == "unet_batch") p.unet_batch = std::stoi(v);
      else if (k == "unet_lr") p.unet_lr = std::stod(v);
      else if (k == "finetune_unet") p.finetune_unet = std::stoi(v);
      else if (k == "finetune_decoder") p.finetune_decoder = std::stoi(v);
      else if (k == "limit_per_class") p.limit_per_class = std::stoi(v);
      else if (k == "vae_channels") p.vae_channels = list();
      else if (k == "unet_channels") p.unet_channels = list();
      else throw InputError("--plan " + c + ": unknown key '" + k + "'");
    } catch (const std::logic_error&) {
      throw InputError("--plan " + c + ": bad value");
    }
  }
  return p;
}

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

nlohmann::json vae_config(const Plan& p, double scaling_factor) {
  const std::size_t n = p.vae_channels.size();
  return {{"_class_name", "AutoencoderKL"}, {"_diffusers_version", "0.27.2"}, {"act_fn", "silu"},
          {"block_out_channels", p.vae_channels}, {"down_block_types", std::vector<std::string>(n, "DownEncoderBlock2D")},
          {"up_block_types", std::vector<std::string>(n, "UpDecoderBlock2D")}, {"in_channels", 3}, {"out_channels", 3},
          {"latent_channels", 4}, {"layers_per_block", 1}, {"norm_num_groups", 8}, {"sample_size", p.size},
          {"scaling_factor", scaling_factor}, {"force_upcast", true}};
}

// SD's UNet layout at two levels: attention at the lower resolution only (where it is cheap).
nlohmann::json unet_config(const Plan& p) {
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

std::map<std::string, torch::Tensor> module_state(torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters(true)) out[p.key()] = p.value().detach().contiguous();
  for (const auto& b : m.named_buffers(true)) out[b.key()] = b.value().detach().contiguous();
  return out;
}

void write_json(const fs::path& path, const nlohmann::json& j) {
  fs::create_directories(path.parent_path());
  write_file_atomically(path.string(), json_text(j));
}

// A complete diffusers inpainting pipeline folder with seeded random weights.
void write_random_pipeline(const fs::path& dir, const Plan& plan, uint64_t seed) {
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
  save_safetensors((dir / "text_encoder" / "model.safetensors").string(), module_state(*clip), {{"format", "pt"}});
  write_json(dir / "vae" / "config.json", vae_config(plan, 1.0));
  AutoencoderKL vae(VaeConfig::from_json((dir / "vae" / "config.json").string()));
  save_safetensors((dir / "vae" / "diffusion_pytorch_model.safetensors").string(), module_state(*vae), {{"format", "pt"}});
  write_json(dir / "unet" / "config.json", unet_config(plan));
  UNet2DConditionModel unet(UNetConfig::from_json((dir / "unet" / "config.json").string()));
  save_safetensors((dir / "unet" / "diffusion_pytorch_model.safetensors").string(), module_state(*unet), {{"format", "pt"}});
}

// Pre-training of the whole VAE (encoder and decoder), as SD's autoencoder was trained:
// reconstruction MSE + 0.1·LPIPS + a small KL term, on images in [−1, 1]. Then the scaling factor
// that gives the latents unit variance (SD's 0.18215 was found the same way).
double pretrain_vae(SdPipeline& pipe, Lpips& lpips, const torch::Tensor& images, const Plan& plan, uint64_t seed) {
  std::vector<NamedParameter> params;
  for (const auto& p : pipe.vae->named_parameters(true)) {
    p.value().set_requires_grad(true);
    params.push_back({p.key(), p.value()});
  }
  for (auto& p : lpips->parameters()) p.set_requires_grad(false);
  pipe.vae->train();
  Adam adam(params, plan.vae_lr);
  const int64_t n = images.size(0);
  ProgressBar bar("bootstrap VAE", plan.vae_steps, "step");
  double last = 0;
  for (int step = 0; step < plan.vae_steps; ++step) {
    at::Generator gen = at::detail::createCPUGenerator(seed * 1000003 + static_cast<uint64_t>(step));
    const torch::Tensor idx = torch::randint(n, {plan.vae_batch}, gen, torch::kLong);
    torch::Tensor x = images.index_select(0, idx);
    // The VAE is fully convolutional: random half-size crops train it at a quarter of the cost.
    const int64_t crop = images.size(2) / 2;
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
    last = loss.item<double>();
    if ((step + 1) % 100 == 0) spdlog::info("bootstrap VAE step {}/{}: loss {:.4f}", step + 1, plan.vae_steps, last);
    bar.advance();
  }
  bar.finish();
  pipe.vae->eval();
  for (auto& p : pipe.vae->parameters()) p.set_requires_grad(false);
  torch::NoGradGuard no_grad;
  const torch::Tensor means = pipe.vae->encode(images * 2.0 - 1.0).mean;
  const double scaling = 1.0 / means.std().item<double>();
  spdlog::info("bootstrap VAE: final loss {:.4f}; latent std {:.3f} -> scaling_factor {:.4f}", last, 1.0 / scaling, scaling);
  return scaling;
}

std::string bootstrap_key(const Plan& plan, uint64_t seed) {
  const nlohmann::json key = {{"version", project_version()}, {"seed", seed}, {"size", plan.size}, {"images", plan.bootstrap_images},
                              {"vae", {plan.vae_steps, plan.vae_batch, plan.vae_lr}}, {"unet", {plan.unet_steps, plan.unet_batch, plan.unet_lr}},
                              {"configs", {unet_config(plan), vae_config(plan, 1.0), text_config(), scheduler_config()}}};
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : json_compact(key)) h = (h ^ c) * 1099511628211ull;
  std::ostringstream s;
  s << std::hex << h;
  return s.str();
}

std::vector<std::string> config_overrides(const AppConfig& c) {
  return {"seed=" + std::to_string(c.runtime.seed), "threads=" + std::to_string(c.runtime.threads), "device=" + c.runtime.device};
}

// The bootstrap: returns the pre-trained pipeline folder, from the cache when it matches.
std::string bootstrap(const fs::path& cache, const Plan& plan, const AppConfig& config, const std::string& config_text_file, bool rebuild,
                      double* seconds) {
  const auto start = std::chrono::steady_clock::now();
  const uint64_t seed = static_cast<uint64_t>(config.runtime.seed);
  const fs::path dir = cache / "bootstrap";
  const fs::path model = dir / "model";
  const std::string key = bootstrap_key(plan, seed);
  if (!rebuild && fs::is_regular_file(dir / "bootstrap.json") && fs::is_regular_file(model / "model_index.json")) {
    const nlohmann::json done = read_json_file((dir / "bootstrap.json").string());
    if (done.value("key", "") == key) {
      spdlog::info("bootstrap: using the cached pre-trained model {} (delete it or pass --rebuild to train again)", model.string());
      *seconds = 0;
      return model.string();
    }
  }
  spdlog::info("bootstrap: pre-training the small SD inpainting pipeline (VAE, then UNet) on other seeds and classes");
  fs::remove_all(dir);
  // 1. data of other seeds and classes than the benchmark's: normal images only
  SyntheticOptions so;
  so.output = (dir / "data").string();
  so.seed = seed + 7919;  // never the benchmark's seed
  so.classes = synthetic_classes();
  so.classes.insert(so.classes.end(), synthetic_extra_classes().begin(), synthetic_extra_classes().end());
  so.size = plan.size;
  so.train = plan.bootstrap_images;
  so.test_good = 1;  // the folder layout needs a test image; the bootstrap never reads it
  so.test_bad = 0;
  make_synthetic(so);
  // 2. random pipeline, then the VAE
  write_random_pipeline(dir / "init", plan, seed);
  SdPipeline pipe = load_sd_pipeline((dir / "init").string());
  Lpips lpips = load_lpips(require_feature_weights(config, "features.alexnet", config.features.alexnet),
                           require_feature_weights(config, "features.lpips", config.features.lpips));
  std::vector<torch::Tensor> images;
  for (const auto& cls : so.classes)
    for (int i = 0; i < so.train; ++i) {
      char name[16];
      std::snprintf(name, sizeof name, "%03d.png", i);
      images.push_back(read_model_image((fs::path(so.output) / cls / "train/good" / name).string(), plan.size).tensor);
    }
  const double scaling = pretrain_vae(pipe, lpips, torch::cat(images, 0), plan, seed);
  write_json(dir / "init" / "vae" / "config.json", vae_config(plan, scaling));
  save_safetensors((dir / "init" / "vae" / "diffusion_pytorch_model.safetensors").string(), module_state(*pipe.vae), {{"format", "pt"}});
  // 3. the inpainting UNet, with finetune's loop: eq. (8) on random rectangles (no IoU filter)
  FinetuneOptions f;
  f.config = config_text_file;
  f.overrides = config_overrides(config);
  for (const std::string& o : {std::string("train.parts=unet"), "train.unet_steps=" + std::to_string(plan.unet_steps),
                               "train.batch_size=" + std::to_string(plan.unet_batch), "train.lr=" + std::to_string(plan.unet_lr),
                               std::string("train.mask=random"), std::string("train.save_every=0"), std::string("train.log_every=100"),
                               std::string("train.foreground=texture"), std::string("train.augment.probability=0.5")})
    f.overrides.push_back(o);
  f.model = (dir / "init").string();
  f.dataset = "folder";
  f.root = so.output;
  f.shots = plan.bootstrap_images;
  f.output = (dir / "unet-stage").string();
  run_finetune(f);
  // 4. the pre-trained pipeline: no shots record (it was not tuned on any benchmark shot)
  fs::rename(dir / "unet-stage" / "model", model);
  fs::remove(model / "shots.json");
  fs::remove(model / "anomalysd_finetune.json");
  fs::remove_all(dir / "unet-stage");
  fs::remove_all(dir / "init");
  write_json(dir / "bootstrap.json", {{"key", key}, {"seed", seed}, {"vae_scaling_factor", scaling}});
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("bootstrap: done in {:.0f} s -> {}", *seconds, model.string());
  return model.string();
}

}  // namespace

RunResults mean_image_baseline(const std::string& dataset_root, const std::string& maps_dir) {
  const Dataset dataset = load_dataset("folder", dataset_root);
  for (const ClassData& c : dataset.classes) {
    cv::Mat mean;
    for (const auto& p : c.train_good) {
      const cv::Mat img = read_rgb_float(p);
      if (mean.empty()) mean = cv::Mat::zeros(img.size(), CV_32FC3);
      mean += img / static_cast<double>(c.train_good.size());
    }
    for (const TestSample& s : c.test) {
      const cv::Mat img = read_rgb_float(s.image);
      cv::Mat diff = img - mean, sq;
      cv::multiply(diff, diff, sq);
      std::vector<cv::Mat> ch;
      cv::split(sq, ch);
      const cv::Mat map = ch[0] + ch[1] + ch[2];
      const fs::path out = fs::path(maps_dir) / s.cls / "test" / s.defect / (s.id + ".tiff");
      fs::create_directories(out.parent_path());
      write_map_tiff(out.string(), map);
    }
  }
  EvalMapsOptions m;
  m.dataset = "folder";
  m.root = dataset_root;
  m.maps = maps_dir;
  m.method = "Baseline: distance to the mean training image";
  m.setup = "all train images";
  return evaluate_maps(m);
}

DemoSummary run_demo(const DemoOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const Plan plan = plan_for(o.quick, o.plan);
  const fs::path out(o.output), cache(o.cache);
  fs::create_directories(out);
  fs::create_directories(cache / "features");
  // The config: the embedded demo config (or the file given), written beside the results.
  const std::string config_file = o.config.empty() ? (out / "demo.yaml").string() : o.config;
  if (o.config.empty()) write_file_atomically(config_file, embedded_demo_config());
  std::vector<std::string> overrides = {"features.efficientnet=" + (cache / "features" / "efficientnet_b6.safetensors").string(),
                                        "features.alexnet=" + (cache / "features" / "alexnet.safetensors").string(),
                                        "features.lpips=" + (cache / "features" / "lpips.safetensors").string(),
                                        "resolution=" + std::to_string(plan.size)};
  overrides.insert(overrides.end(), o.overrides.begin(), o.overrides.end());
  const AppConfig config = load_app_config(config_file, overrides);
  apply_runtime(config.runtime);
  DemoSummary summary;
  summary.output = o.output;

  // 1. data
  spdlog::info("demo 1/5: the synthetic benchmark (anomalysd make-synthetic)");
  SyntheticOptions so;
  so.output = (out / "data").string();
  so.seed = static_cast<uint64_t>(config.runtime.seed);
  so.size = plan.size;
  so.train = plan.train;
  so.test_good = plan.test_good;
  so.test_bad = plan.test_bad;
  fs::remove_all(so.output);
  make_synthetic(so);

  // 2. feature weights and the bootstrap (cached)
  spdlog::info("demo 2/5: feature networks (anomalysd init-weights) and the bootstrap pre-training");
  const std::pair<const char*, std::string> features[] = {{"efficientnet_b6", config.features.efficientnet},
                                                          {"alexnet", config.features.alexnet},
                                                          {"lpips", config.features.lpips}};
  for (const auto& [arch, path] : features)
    if (o.rebuild || !fs::is_regular_file(path)) init_feature_weights(arch, static_cast<uint64_t>(config.runtime.seed), path);
  const std::string base = bootstrap(cache, plan, config, config_file, o.rebuild, &summary.bootstrap_seconds);
  summary.cache_used = summary.bootstrap_seconds == 0;

  // 3. 1-shot fine-tuning of the UNet and the decoder on the benchmark's shots
  spdlog::info("demo 3/5: 1-shot fine-tuning (anomalysd finetune)");
  const auto t_ft = std::chrono::steady_clock::now();
  FinetuneOptions f;
  f.config = config_file;
  f.overrides = overrides;
  if (plan.finetune_unet > 0) f.overrides.push_back("train.unet_steps=" + std::to_string(plan.finetune_unet));
  if (plan.finetune_decoder > 0) f.overrides.push_back("train.decoder_steps=" + std::to_string(plan.finetune_decoder));
  f.model = base;
  f.dataset = "folder";
  f.root = so.output;
  f.shots = 1;
  f.output = (out / "finetune").string();
  f.overwrite = true;
  const FinetuneSummary tuned = run_finetune(f);
  summary.finetune_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_ft).count();

  // 4. evaluations
  spdlog::info("demo 4/5: evaluation (anomalysd eval) of each setting");
  const auto t_eval = std::chrono::steady_clock::now();
  auto eval = [&](const std::string& name, const std::string& model, int64_t shots, const std::string& method, const std::string& setting,
                  const std::vector<std::string>& extra, bool ablations) {
    EvalOptions e;
    e.config = config_file;
    e.overrides = overrides;
    e.overrides.insert(e.overrides.end(), extra.begin(), extra.end());
    e.dataset = "folder";
    e.root = so.output;
    e.model = model;
    e.output = (out / "eval" / name).string();
    e.overwrite = true;
    e.method = method;
    e.setting = setting;
    e.ablation_maps = ablations;
    e.limit_per_class = plan.limit_per_class;
    if (shots > 0)
      e.shots_file = (fs::path(model) / "shots.json").string();
    else
      e.shots = 0;
    fs::remove_all(e.output);
    return run_eval(e);
  };
  const EvalSummary full = eval("full", tuned.model_dir, 1, "AnomalySD", "1-shot", {}, true);
  const EvalSummary zero = eval("zero-shot", base, 0, "AnomalySD w/o fine-tuning (base model, S_ms)", "0-shot", {}, false);
  const EvalSummary fast = eval("fast", tuned.model_dir, 1, "AnomalySD, CPU setting (grid2x2, 4 steps)", "1-shot",
                                {"inference.mask_packing=grid2x2", "inference.steps=4", "inference.mask_batch=9"}, false);
  const RunResults baseline = mean_image_baseline(so.output, (out / "eval" / "baseline" / "maps").string());
  summary.eval_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_eval).count();

  // 5. the table and the pictures
  spdlog::info("demo 5/5: results");
  summary.table = {full.results};
  summary.table.insert(summary.table.end(), full.variant_results.begin(), full.variant_results.end());
  summary.table.push_back(zero.results);
  summary.table.push_back(fast.results);
  summary.table.push_back(baseline);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::ostringstream md;
  md << "# AnomalySD demo: synthetic benchmark, " << full.results.classes.size() << " classes, " << plan.size << "x" << plan.size << "\n\n";
  md << settings_table(summary.table) << "\n";
  md << "Per class, full method:\n\n" << results_table(full.results) << "\n";
  char timing[512];
  std::snprintf(timing, sizeof timing,
                "Time: %.0f s in all (bootstrap %s, fine-tuning %.0f s, evaluations %.0f s); eval of the full method %.2f s per image.\n",
                summary.seconds, summary.cache_used ? "cached" : (std::to_string(static_cast<int>(summary.bootstrap_seconds)) + " s").c_str(),
                summary.finetune_seconds, summary.eval_seconds, full.seconds_per_image);
  md << timing;
  md << "\nFeature networks use random weights (no download): EfficientNet-B6, AlexNet and the LPIPS layers come from "
        "`anomalysd init-weights`; the SD pipeline is a small one pre-trained here on other synthetic images.\n";
  write_file_atomically((out / "table.md").string(), md.str());
  nlohmann::json all = {{"format", "anomalysd-demo"}, {"settings", nlohmann::json::array()},
                        {"timing", {{"seconds", summary.seconds}, {"bootstrap_seconds", summary.bootstrap_seconds},
                                    {"finetune_seconds", summary.finetune_seconds}, {"eval_seconds", summary.eval_seconds},
                                    {"full_seconds_per_image", full.seconds_per_image}, {"cache_used", summary.cache_used}}},
                        {"quick", o.quick}};
  for (const auto& r : summary.table) all["settings"].push_back(r.to_json());
  write_file_atomically((out / "metrics.json").string(), json_text(all));
  // The pictures of the full method, with the whole table.
  const Dataset dataset = load_dataset("folder", so.output);
  const auto scores = read_scores_csv((out / "eval" / "full" / "scores.csv").string());
  std::map<std::string, std::vector<ReportSample>> samples;
  for (const auto& c : dataset.classes)
    for (const auto& s : c.test) {
      const auto it = scores.find(sample_key(s.cls, s.defect, s.id));
      if (it == scores.end()) continue;
      samples[s.cls].push_back({s, it->second, (out / "eval" / "full" / "maps" / s.cls / "test" / s.defect / (s.id + ".tiff")).string()});
    }
  ReportOptions ro;
  ro.title = "AnomalySD demo on the synthetic benchmark";
  ro.tables_markdown = {settings_table(summary.table), results_table(full.results), timing};
  write_report(o.output, samples, ro);
  return summary;
}

}  // namespace anomalysd

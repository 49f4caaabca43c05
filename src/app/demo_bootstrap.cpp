// The demo's bootstrap: a small pipeline of the SD inpainting architectures (CLIP text encoder,
// AutoencoderKL, 9-channel UNet) written from configs in the diffusers formats, its VAE and UNet
// pre-trained on normal images of other seeds and classes than the benchmark's (cached).
#include "app/demo_internal.h"

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
#include "anomalysd/models/weights.h"
#include "anomalysd/app/eval_maps.h"
#include "anomalysd/models/clip_text.h"
#include "anomalysd/tools/components.h"
#include "anomalysd/train/optim.h"
#include "anomalysd/util/progress.h"
#include "anomalysd/core/version.h"

namespace anomalysd::demo_detail {

namespace fs = std::filesystem;

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
  save_safetensors((dir / "text_encoder" / "model.safetensors").string(), module_tensors(*clip), {{"format", "pt"}});
  write_json(dir / "vae" / "config.json", vae_config(plan, 1.0));
  AutoencoderKL vae(VaeConfig::from_json((dir / "vae" / "config.json").string()));
  save_safetensors((dir / "vae" / "diffusion_pytorch_model.safetensors").string(), module_tensors(*vae), {{"format", "pt"}});
  write_json(dir / "unet" / "config.json", unet_config(plan));
  UNet2DConditionModel unet(UNetConfig::from_json((dir / "unet" / "config.json").string()));
  save_safetensors((dir / "unet" / "diffusion_pytorch_model.safetensors").string(), module_tensors(*unet), {{"format", "pt"}});
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
  {
    // The posterior's log-variance starts at vae_logvar_init instead of ≈ 0: with unit sampling noise
    // the decoder first learns to ignore z and draws the class's average object (measured: a washer
    // moved to the centre); SD's own VAE ends with std ≪ 1 after long training. The log-variance
    // half of quant_conv's weights is scaled by 0.1 so that the bias sets the start (for any value).
    torch::NoGradGuard no_grad;
    const int64_t c = pipe.vae->quant_conv->options.out_channels() / 2;
    pipe.vae->quant_conv->bias.narrow(0, c, c).fill_(plan.vae_logvar_init);
    pipe.vae->quant_conv->weight.narrow(0, c, c).mul_(0.1);
  }
  pipe.vae->train();
  Adam adam(params, plan.vae_lr);
  const int64_t n = images.size(0);
  ProgressBar bar("bootstrap VAE", plan.vae_steps, "step");
  double last = 0;
  for (int step = 0; step < plan.vae_steps; ++step) {
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

std::string bootstrap_key(const Plan& plan, uint64_t seed, const std::vector<std::string>& photos) {
  const nlohmann::json key = {{"version", project_version()}, {"seed", seed}, {"size", plan.size}, {"images", plan.bootstrap_images},
                              {"vae", {plan.vae_steps, plan.vae_batch, plan.vae_lr, plan.vae_crop, plan.vae_logvar_init, plan.vae_cosine}}, {"unet", {plan.unet_steps, plan.unet_batch, plan.unet_lr}},
                              {"features", plan.pretrained_features ? nlohmann::json{plan.alexnet_steps, plan.efficientnet_steps, plan.efficientnet_deep, plan.feature_batch,
                                                                      plan.feature_lr, "pairs-v2"}
                                                       : nlohmann::json("init-weights")},
                              {"photos", {plan.photo_crops, photos}},
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

}  // namespace

std::string bootstrap(const fs::path& cache, const fs::path& photos_dir, const Plan& plan, const AppConfig& config,
                      const std::string& config_text_file, bool rebuild, BootstrapTimes* times) {
  const auto start = std::chrono::steady_clock::now();
  auto since = [](std::chrono::steady_clock::time_point t) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count(); };
  const uint64_t seed = static_cast<uint64_t>(config.runtime.seed);
  const fs::path dir = cache / "bootstrap";
  const fs::path model = dir / "model";
  const std::vector<fs::path> photos =
      plan.pretrained_features && plan.photo_crops > 0 ? list_photos(photos_dir) : std::vector<fs::path>{};
  std::vector<std::string> photo_names;
  for (const auto& p : photos) photo_names.push_back(p.filename().string());
  const std::string key = bootstrap_key(plan, seed, photo_names);
  const FeaturePaths features{config.features.alexnet, config.features.efficientnet, config.features.lpips};
  *times = BootstrapTimes{};
  if (!rebuild && fs::is_regular_file(dir / "bootstrap.json") && fs::is_regular_file(model / "model_index.json") &&
      fs::is_regular_file(features.alexnet) && fs::is_regular_file(features.efficientnet) && fs::is_regular_file(features.lpips)) {
    const nlohmann::json done = read_json_file((dir / "bootstrap.json").string());
    if (done.value("key", "") == key) {
      times->cached = true;
      return model.string();
    }
  }
  if (plan.pretrained_features && photos.empty())
    spdlog::warn("bootstrap: no photographs in {} (scripts/fetch-demo-photos.sh fetches them): pre-training on synthetic images only",
                 photos_dir.string());
  fs::remove_all(dir);
  // 1. data of other seeds and classes than the benchmark's: normal images only, and crops of the
  //    real photographs (one more class, "photo", for the VAE and the UNet)
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
  LabelledImages labelled;
  std::vector<torch::Tensor> images, labels;
  for (const auto& cls : so.classes) {
    for (int i = 0; i < so.train; ++i) {
      char name[16];
      std::snprintf(name, sizeof name, "%03d.png", i);
      images.push_back(read_model_image((fs::path(so.output) / cls / "train/good" / name).string(), plan.size).tensor);
      labels.push_back(torch::full({1}, static_cast<int64_t>(labelled.classes.size()), torch::kLong));
    }
    if (synthetic_class_kind(cls) == "texture") labelled.texture_classes.insert(static_cast<int64_t>(labelled.classes.size()));
    labelled.classes.push_back(cls);
  }
  const int64_t synthetic_count = static_cast<int64_t>(images.size());
  if (!photos.empty()) {
    // Each photograph is a class of its own for the feature networks; the VAE and the UNet see
    // plan.bootstrap_images of the crops (evenly from every photograph) as the class "photo".
    const fs::path photo_dir = fs::path(so.output) / "photo";
    fs::create_directories(photo_dir / "train" / "good");
    fs::create_directories(photo_dir / "test" / "good");
    int written = 0;
    for (std::size_t p = 0; p < photos.size(); ++p) {
      const auto crops = photo_crops(photos[p], plan.photo_crops, plan.size, seed * 31 + p);
      for (std::size_t c = 0; c < crops.size(); ++c) {
        images.push_back(to_model_tensor(crops[c], plan.size));
        labels.push_back(torch::full({1}, static_cast<int64_t>(labelled.classes.size()), torch::kLong));
        if (static_cast<int>(c * photos.size() + p) < plan.bootstrap_images) {
          char name[16];
          std::snprintf(name, sizeof name, "%03d.png", written++);
          write_png((photo_dir / "train" / "good" / name).string(), to_rgb8(crops[c]));
          if (written == 1) write_png((photo_dir / "test" / "good" / "000.png").string(), to_rgb8(crops[c]));
        }
      }
      labelled.texture_classes.insert(static_cast<int64_t>(labelled.classes.size()));
      labelled.classes.push_back("photo:" + photo_names[p]);
    }
    so.classes.push_back("photo");
  }
  labelled.images = torch::cat(images, 0);
  labelled.labels = torch::cat(labels, 0);
  labelled.source = "the bootstrap's (other seeds and classes than the benchmark's, and crops of real CC0 photographs), never the benchmark's";
  times->data = since(start);
  // 2. the feature networks (AlexNet for LPIPS, EfficientNet-B6 for the prototype bank)
  const auto t_features = std::chrono::steady_clock::now();
  for (const auto& f : {features.alexnet, features.efficientnet, features.lpips}) fs::create_directories(fs::path(f).parent_path());
  if (plan.pretrained_features) {
    times->feature_nets = pretrain_feature_networks(labelled, {plan.alexnet_steps, plan.feature_batch, plan.feature_lr},
                                                    {plan.efficientnet_steps, plan.feature_batch, plan.feature_lr, plan.efficientnet_deep}, seed, features);
  } else {
    init_feature_weights("efficientnet_b6", seed, features.efficientnet);
    init_feature_weights("alexnet", seed, features.alexnet);
    init_feature_weights("lpips", seed, features.lpips);
  }
  times->features = since(t_features);
  // 3. random pipeline, then the VAE on every image (the photographs' crops included)
  const auto t_vae = std::chrono::steady_clock::now();
  write_random_pipeline(dir / "init", plan, seed);
  SdPipeline pipe = load_sd_pipeline((dir / "init").string());
  Lpips lpips = load_lpips(features.alexnet, features.lpips);
  std::vector<torch::Tensor> vae_images(images.begin(), images.begin() + synthetic_count);
  for (int i = 0; i < plan.bootstrap_images && !photos.empty(); ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "%03d.png", i);
    const fs::path file = fs::path(so.output) / "photo" / "train/good" / name;
    if (fs::is_regular_file(file)) vae_images.push_back(read_model_image(file.string(), plan.size).tensor);
  }
  const double scaling = pretrain_vae(pipe, lpips, torch::cat(vae_images, 0), plan, seed);
  write_json(dir / "init" / "vae" / "config.json", vae_config(plan, scaling));
  save_safetensors((dir / "init" / "vae" / "diffusion_pytorch_model.safetensors").string(), module_tensors(*pipe.vae), {{"format", "pt"}});
  times->vae = since(t_vae);
  // 4. the inpainting UNet, with finetune's loop: eq. (8) on random rectangles (no IoU filter)
  const auto t_unet = std::chrono::steady_clock::now();
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
  times->unet = since(t_unet);
  // 5. the pre-trained pipeline: no shots record (it was not tuned on any benchmark shot)
  fs::rename(dir / "unet-stage" / "model", model);
  fs::remove(model / "shots.json");
  fs::remove(model / "anomalysd_finetune.json");
  fs::remove_all(dir / "unet-stage");
  fs::remove_all(dir / "init");
  nlohmann::json nets = nlohmann::json::array();
  for (const auto& r : times->feature_nets)
    nets.push_back({{"arch", r.arch}, {"steps", r.steps}, {"seconds", r.seconds}, {"heldout_class_accuracy", r.class_accuracy},
                    {"heldout_foreign_region_auroc", r.foreign_auroc}});
  times->total = since(start);
  write_json(dir / "bootstrap.json", {{"key", key}, {"seed", seed}, {"vae_scaling_factor", scaling}, {"photos", photo_names},
                                      {"feature_networks", nets},
                                      {"seconds", {{"data", times->data}, {"features", times->features}, {"vae", times->vae},
                                                   {"unet", times->unet}, {"total", times->total}}}});
  return model.string();
}

}  // namespace anomalysd::demo_detail

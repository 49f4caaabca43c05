#include "anomalysd/tools/components.h"
#include "anomalysd/tools/op_profile.h"

#include <sys/resource.h>
#include <unistd.h>

#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <numeric>
#include <filesystem>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "anomalysd/io/errors.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/models/weights.h"
#include "anomalysd/anomaly/inpaint.h"
#include "anomalysd/anomaly/prototype.h"
#include "anomalysd/models/alexnet_lpips.h"
#include "anomalysd/models/clip_text.h"
#include "anomalysd/models/efficientnet.h"
#include "anomalysd/models/clip_tokenizer.h"
#include "anomalysd/models/sd_pipeline.h"
#include "anomalysd/models/unet.h"
#include "anomalysd/models/vae.h"
#include "anomalysd/core/runtime.h"

namespace anomalysd {

const std::vector<std::string>& forward_components() {
  static const std::vector<std::string> names = {"unet",      "vae-encode",   "vae-decode", "text-encoder", "tokenizer",
                                                 "efficientnet", "alexnet", "lpips",      "inpaint"};
  return names;
}

namespace {

const torch::Tensor& input(const std::map<std::string, torch::Tensor>& inputs, const std::string& name,
                           const std::string& component) {
  const auto it = inputs.find(name);
  if (it == inputs.end()) {
    std::string have;
    for (const auto& [k, v] : inputs) have += (have.empty() ? "" : ", ") + k;
    throw InputError(component + ": input tensor '" + name + "' not found (inputs hold: " + (have.empty() ? "nothing" : have) + ")");
  }
  return it->second;
}

torch::Tensor as_float_input(const torch::Tensor& t, const torch::Device& device, torch::ScalarType dtype, const std::string& name) {
  if (!t.is_floating_point()) throw ShapeError("input '" + name + "' must be a float tensor");
  if (!torch::isfinite(t).all().item<bool>()) throw InputError("input '" + name + "' holds NaN or Inf");
  return t.to(device, dtype);
}

const std::string& require_weights(const std::string& path, const char* option) {
  if (path.empty()) throw InputError(std::string("this component needs ") + option);
  return path;
}

torch::Tensor output(const torch::Tensor& t) { return t.detach().to(torch::kCPU, t.is_floating_point() ? torch::kFloat : t.scalar_type()).contiguous(); }

}  // namespace

std::map<std::string, torch::Tensor> run_forward(const ForwardRequest& r, const std::map<std::string, torch::Tensor>& inputs) {
  const auto& names = forward_components();
  if (std::find(names.begin(), names.end(), r.component) == names.end())
    throw InputError("unknown component '" + r.component + "'");
  std::map<std::string, torch::Tensor> out;
  if (r.component == "tokenizer") {
    if (r.texts.empty()) throw InputError("tokenizer: give at least one --text");
    const ClipTokenizer tok = ClipTokenizer::from_folder(require_weights(r.model_dir, "--model DIR"));
    torch::Tensor ids = torch::empty({static_cast<int64_t>(r.texts.size()), tok.max_length()}, torch::kLong);
    for (std::size_t i = 0; i < r.texts.size(); ++i) {
      const auto row = tok.encode(r.texts[i]);
      ids[static_cast<int64_t>(i)].copy_(torch::tensor(row, torch::kLong));
    }
    out["input_ids"] = ids;
    return out;
  }

  const bool needs_model_dir = r.component == "unet" || r.component == "vae-encode" || r.component == "vae-decode" ||
                               r.component == "text-encoder" || r.component == "inpaint";
  if (needs_model_dir) require_weights(r.model_dir, "--model DIR");
  RuntimeConfig rc;
  rc.device = r.device;
  rc.dtype = r.dtype;
  const Runtime rt = apply_runtime(rc);
  torch::NoGradGuard no_grad;
  if (r.component == "inpaint") {
    SdPipeline pipe = load_sd_pipeline(r.model_dir, r.variant);
    pipe.to(rt.device, rt.dtype);
    pipe.use_cpu_inference_layout();
    if (r.texts.size() != 1) throw InputError("inpaint: give exactly one --text (the prompt)");
    const torch::Tensor image = as_float_input(input(inputs, "image", r.component), torch::kCPU, torch::kFloat, "image");
    const torch::Tensor mask = as_float_input(input(inputs, "mask", r.component), torch::kCPU, torch::kFloat, "mask");
    const torch::Tensor noise = as_float_input(input(inputs, "noise", r.component), torch::kCPU, torch::kFloat, "noise");
    const int64_t b = image.size(0);
    if (image.dim() != 4 || image.size(1) != 3) throw ShapeError("inpaint: 'image' must be [B, 3, H, W]");
    if (mask.dim() != 4 || mask.size(0) != b || mask.size(1) != 1 || mask.size(2) != image.size(2) || mask.size(3) != image.size(3))
      throw ShapeError("inpaint: 'mask' must be [B, 1, H, W] like 'image'");
    const int64_t f = vae_scale_factor(pipe);
    check_inpaint_size(pipe, image.size(2), image.size(3));
    if (noise.dim() != 4 || noise.size(0) != b || noise.size(1) != pipe.unet->config.out_channels || noise.size(2) != image.size(2) / f ||
        noise.size(3) != image.size(3) / f)
      throw ShapeError("inpaint: 'noise' must be [B, " + std::to_string(pipe.unet->config.out_channels) + ", H/" + std::to_string(f) +
                       ", W/" + std::to_string(f) + "]");
    PromptConditioning conditioning;
    conditioning.cond = encode_prompts(pipe, {r.texts[0]});
    if (r.guidance_scale > 1.0) conditioning.uncond = encode_prompts(pipe, {r.negative_text});
    const DenoisingSchedule schedule = denoising_schedule(pipe, r.steps, r.strength, r.guidance_scale);
    std::vector<torch::Tensor> latents, images;
    for (int64_t i = 0; i < b; ++i) {
      const torch::Tensor x = image.narrow(0, i, 1).to(rt.device, rt.dtype);
      const InpaintResult res = inpaint(pipe, x, encode_latents(pipe, x), mask.narrow(0, i, 1), noise.narrow(0, i, 1), conditioning, schedule);
      latents.push_back(res.latents);
      images.push_back(res.images);
    }
    out["latents"] = output(torch::cat(latents, 0));
    out["inpainted"] = output(torch::cat(images, 0));
  } else if (r.component == "unet") {
    UNet2DConditionModel unet = load_unet(r.model_dir, r.variant);
    unet->to(rt.device, rt.dtype);
    if (rt.device.is_cpu()) use_channels_last(*unet);  // as inference runs it
    const torch::Tensor sample = as_float_input(input(inputs, "sample", r.component), rt.device, rt.dtype, "sample");
    const torch::Tensor context = as_float_input(input(inputs, "encoder_hidden_states", r.component), rt.device, rt.dtype,
                                                 "encoder_hidden_states");
    out["out"] = output(unet->forward(sample, input(inputs, "timestep", r.component), context));
  } else if (r.component == "vae-encode" || r.component == "vae-decode") {
    AutoencoderKL vae = load_vae(r.model_dir, r.variant);
    vae->to(rt.device, rt.dtype);
    if (rt.device.is_cpu()) use_channels_last(*vae);
    if (r.component == "vae-encode") {
      const LatentPosterior p = vae->encode(as_float_input(input(inputs, "image", r.component), rt.device, rt.dtype, "image"));
      out["posterior_mean"] = output(p.mean);
      out["posterior_std"] = output(p.std);
      out["posterior_logvar"] = output(p.logvar);
    } else {
      out["decoded_z"] = output(vae->decode(as_float_input(input(inputs, "latent_z", r.component), rt.device, rt.dtype, "latent_z")));
    }
  } else if (r.component == "efficientnet") {
    EfficientNet net = load_efficientnet(require_weights(r.weights, "--weights FILE.safetensors"));
    net->to(rt.device, rt.dtype);
    const torch::Tensor x = as_float_input(input(inputs, "input", r.component), rt.device, rt.dtype, "input");
    std::vector<int64_t> taps(net->features->size());
    std::iota(taps.begin(), taps.end(), 0);
    for (const auto& [i, f] : net->features_at(x, taps)) out["features." + std::to_string(i)] = output(f);
    if (net->classifier) out["logits"] = output(net->forward(x));
  } else if (r.component == "alexnet") {
    AlexNetFeatures net = load_alexnet(require_weights(r.weights, "--weights FILE.safetensors"));
    net->to(rt.device, rt.dtype);
    const auto taps = net->forward(as_float_input(input(inputs, "input", r.component), rt.device, rt.dtype, "input"));
    const char* names[] = {"1", "4", "7", "9", "11"};
    for (int l = 0; l < 5; ++l) out[std::string("relu_after_features.") + names[l]] = output(taps[l]);
  } else if (r.component == "lpips") {
    Lpips lpips = load_lpips(require_weights(r.weights, "--weights FILE.safetensors"), require_weights(r.lpips_weights, "--lpips-weights FILE.safetensors"));
    lpips->to(rt.device, rt.dtype);
    const torch::Tensor x0 = as_float_input(input(inputs, "lpips_in0", r.component), rt.device, rt.dtype, "lpips_in0");
    const torch::Tensor x1 = as_float_input(input(inputs, "lpips_in1", r.component), rt.device, rt.dtype, "lpips_in1");
    const LpipsOutput o = lpips->forward(x0, x1);
    out["value"] = output(o.value);
    for (int l = 0; l < 5; ++l) out["layer" + std::to_string(l)] = output(o.layer_maps[l].mean({2, 3}, true));
    out["spatial_map"] = output(lpips->distance_map(x0, x1));
  } else {  // text-encoder
    ClipTextModel clip = load_clip_text(r.model_dir, r.variant);
    clip->to(rt.device, rt.dtype);
    const ClipTextOutput o = clip->forward(input(inputs, "input_ids", r.component));
    out["last_hidden_state"] = output(o.last_hidden_state);
    out["pooler_output"] = output(o.pooler_output);
  }
  return out;
}

void init_feature_weights(const std::string& arch, uint64_t seed, const std::string& output) {
  torch::manual_seed(seed);
  NamedTensors tensors;
  auto collect = [&](torch::nn::Module& m) { tensors = module_tensors(m); };
  std::string name = arch;
  if (arch.rfind("efficientnet_b", 0) == 0 && arch.size() == 15 && arch[14] >= '0' && arch[14] <= '7') {
    EfficientNet net(EfficientNetConfig::b(arch[14] - '0'));
    init_random_efficientnet(*net);
    net->eval();
    collect(*net);
  } else if (arch == "alexnet") {
    AlexNetFeatures net;
    collect(*net);
  } else if (arch == "lpips") {
    // LPIPS's lins are non-negative channel weights; random ones in [0, 1).
    for (int l = 0; l < 5; ++l) {
      const int64_t channels[] = {64, 192, 384, 256, 256};
      tensors.emplace_back("lin" + std::to_string(l) + ".model.1.weight", torch::rand({1, channels[l], 1, 1}));
    }
  } else {
    throw InputError("init-weights: unknown --arch '" + arch + "' (efficientnet_b0..efficientnet_b7, alexnet, lpips)");
  }
  save_safetensors(output, tensors, {{"format", "pt"}, {"anomalysd_init", "random"}, {"arch", name}, {"seed", std::to_string(seed)}});
  spdlog::info("wrote {} ({} tensors, random weights of {}, seed {})", output, tensors.size(), name, seed);
}

double peak_rss_gib() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB on Linux
}

// Times `repeats` runs of `run` into `f`: each run's seconds, their median and the peak RSS so far.
void time_runs(BenchFigures& f, const std::function<void()>& run, int64_t repeats) {
  for (int64_t i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    f.seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    spdlog::info("bench {}: run {}/{}: {:.2f} s", f.what, i + 1, repeats, f.seconds.back());
  }
  std::vector<double> sorted = f.seconds;
  std::sort(sorted.begin(), sorted.end());
  f.median_s = sorted.empty() ? 0 : sorted[sorted.size() / 2];
  f.peak_rss_gib = peak_rss_gib();
}

BenchFigures bench_component(const std::string& component, const std::string& config_path, int64_t batch, int64_t repeats,
                             int64_t size, bool profile, const std::string& dtype) {
  torch::NoGradGuard no_grad;
  const torch::ScalarType type = parse_run_dtype(dtype);
  const bool sd_part = component == "unet" || component == "vae-encode" || component == "vae-decode";
  if (type != torch::kFloat && !sd_part) throw InputError("bench --dtype " + dtype + ": only unet and vae-* run in it (the feature networks stay float32)");
  BenchFigures f;
  f.what = component;
  f.batch = batch;
  std::function<torch::Tensor()> run;
  std::shared_ptr<torch::nn::Module> module;
  if (component == "unet-train" || component == "unet-train-checkpointed") {
    // One training step's forward and backward (eq. 8's MSE), as fine-tuning runs it.
    auto unet = UNet2DConditionModel(UNetConfig::from_json(config_path));
    unet->train();
    unet->gradient_checkpointing = component == "unet-train-checkpointed";
    const int64_t s = size > 0 ? size : unet->config.sample_size;
    const torch::Tensor sample = torch::randn({batch, unet->config.in_channels, s, s});
    const torch::Tensor context = torch::randn({batch, 77, unet->config.cross_attention_dim});
    const torch::Tensor t = torch::randint(1000, {batch}, torch::kLong);
    const torch::Tensor target = torch::randn({batch, unet->config.out_channels, s, s});
    run = [=]() mutable {
      torch::AutoGradMode grad(true);
      for (auto& p : unet->parameters()) p.mutable_grad() = torch::Tensor();
      const torch::Tensor loss = torch::mse_loss(unet->forward(sample, t, context), target);
      loss.backward();
      return loss.detach();
    };
    module = unet.ptr();
  } else if (component == "unet") {
    auto unet = UNet2DConditionModel(UNetConfig::from_json(config_path));
    unet->eval();
    unet->to(type);
    const int64_t s = size > 0 ? size : unet->config.sample_size;
    use_channels_last(*unet);  // the CPU inference layout (SdPipeline::use_cpu_inference_layout)
    const torch::Tensor sample = torch::randn({batch, unet->config.in_channels, s, s}).to(type);
    const torch::Tensor context = torch::randn({batch, 77, unet->config.cross_attention_dim}).to(type);
    const torch::Tensor t = torch::full({batch}, 981, torch::kLong);
    run = [=]() mutable { return unet->forward(sample, t, context); };
    module = unet.ptr();
  } else if (component == "vae-encode" || component == "vae-decode") {
    auto vae = AutoencoderKL(VaeConfig::from_json(config_path));
    vae->eval();
    vae->to(type);
    use_channels_last(*vae);
    const int64_t s = size > 0 ? size : 512;
    const int64_t down = int64_t(1) << (vae->config.block_out_channels.size() - 1);
    if (component == "vae-encode") {
      const torch::Tensor image = (torch::rand({batch, vae->config.in_channels, s, s}) * 2 - 1).to(type);
      run = [=]() mutable { return vae->encode(image).mean; };
    } else {
      const torch::Tensor z = torch::randn({batch, vae->config.latent_channels, s / down, s / down}).to(type);
      run = [=]() mutable { return vae->decode(z); };
    }
    module = vae.ptr();
  } else if (component == "efficientnet" || component == "prototype-bank" || component == "nn-error-map") {
    auto net = EfficientNet(EfficientNetConfig::b(6));
    net->eval();
    const int64_t s = size > 0 ? size : 512;
    const PrototypeOptions options;
    if (component == "efficientnet") {
      const torch::Tensor image = torch::rand({batch, 3, s, s});
      run = [=]() mutable { return prototype_features(net, image, options); };
    } else if (component == "prototype-bank") {
      const torch::Tensor shots = torch::rand({4, 3, s, s});
      run = [=]() mutable { return build_prototype_bank(net, shots, options); };
    } else {
      const torch::Tensor bank = build_prototype_bank(net, torch::rand({4, 3, s, s}), options);
      const torch::Tensor features = prototype_features(net, torch::rand({1, 3, s, s}), options);
      spdlog::info("bench nn-error-map: {} query vectors against a bank of {} x {}", features.size(2) * features.size(3), bank.size(0), bank.size(1));
      run = [=]() { return prototype_mask(prototype_error_map(features, bank), s, s); };
    }
    module = net.ptr();
  } else if (component == "attention") {
    // The UNet's heaviest attention: self-attention over a 64×64 latent (4,096 tokens), 5 heads of
    // 64 (SD2's first level); --size sets the latent side.
    const int64_t s = size > 0 ? size : 64;
    auto layer = Attention(AttentionOptions{320, 0, 5, 64, false, false});
    layer->eval();
    const torch::Tensor x = torch::randn({batch, s * s, 320});
    run = [=]() mutable { return layer->forward(x); };
    module = layer.ptr();
  } else if (component == "lpips") {
    auto lpips = Lpips();
    lpips->eval();
    const int64_t s = size > 0 ? size : 512;
    const torch::Tensor x0 = torch::rand({batch, 3, s, s}) * 2 - 1, x1 = torch::rand({batch, 3, s, s}) * 2 - 1;
    run = [=]() mutable { return lpips->distance_map(x0, x1); };
    module = lpips.ptr();
  } else {
    throw InputError("bench: unknown component '" + component +
                     "' (unet, vae-encode, vae-decode, attention, efficientnet, prototype-bank, nn-error-map, lpips; eval-maps: app/eval_maps.h)");
  }
  for (const auto& p : module->parameters()) f.parameters += p.numel();
  spdlog::info("bench {}: {:.1f} M parameters, batch {}, {} threads", component, f.parameters / 1e6, batch, at::get_num_threads());
  run();  // warm-up: first-touch allocations, OpenBLAS thread start
  time_runs(f, [&] { run(); }, repeats);
  if (profile) f.profile = format_op_table(profile_ops([&] { run(); }));
  return f;
}

}  // namespace anomalysd

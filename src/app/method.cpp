#include "anomalysd/app/method.h"

#include <filesystem>

#include <spdlog/spdlog.h>

#include "anomalysd/data/image_io.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/safetensors.h"

namespace anomalysd {

namespace fs = std::filesystem;

std::string require_feature_weights(const AppConfig& config, const std::string& key, const std::string& path) {
  const std::string resolved = resolve_config_path(config, path);
  if (resolved.empty() || !fs::is_regular_file(resolved)) {
    const std::string arch = key == "features.efficientnet" ? "efficientnet_b6" : key == "features.alexnet" ? "alexnet" : "lpips";
    throw InputError("key '" + key + "' = '" + path + "': file not found. Make the real weights with `python3 scripts/convert_torchvision_weights.py models/` " +
                     "(needs internet and torchvision), or random ones for a try-out with `anomalysd init-weights --arch " + arch +
                     " --seed 0 --output " + (path.empty() ? "FILE" : path) + "`");
  }
  return resolved;
}

namespace {

bool is_random_init(const std::string& path) {
  const auto meta = SafetensorsFile::open(path).metadata();
  const auto it = meta.find("anomalysd_init");
  return it != meta.end() && it->second == "random";
}

}  // namespace

MethodRunner::MethodRunner(const AppConfig& config, const std::string& model_dir, bool with_prototype) : config_(config) {
  runtime_ = apply_runtime(config_.runtime);
  model_dir_ = model_dir_of(config_, model_dir);

  // 1. the inpainting pipeline
  pipe_ = load_sd_pipeline(model_dir_, config_.model.variant);
  pipe_.to(runtime_.device, runtime_.precision);
  spdlog::info("precision: {}{}", pipe_.precision().describe(),
               runtime_.precision.all_float32() ? "" : " (the feature networks and the score maths: float32)");
  pipe_.use_cpu_inference_layout();
  check_inpaint_size(pipe_, config_.resolution, config_.resolution);

  // 2. the feature networks
  const std::string alexnet = require_feature_weights(config_, "features.alexnet", config_.features.alexnet);
  const std::string lpips = require_feature_weights(config_, "features.lpips", config_.features.lpips);
  lpips_ = load_lpips(alexnet, lpips);
  // The feature networks, the nearest-neighbour search and the score maths stay in float32
  // whatever `dtype` says: only the SD parts (UNet, VAE, text encoder) follow it. In half
  // precision LPIPS's normalisation guard and ‖a‖² + ‖b‖² − 2ab lose their digits (NaN, noise).
  lpips_->to(runtime_.device, torch::kFloat);
  std::vector<std::string> feature_files{alexnet, lpips};
  if (with_prototype && config_.inference.prototype_mask) {
    const std::string eff = require_feature_weights(config_, "features.efficientnet", config_.features.efficientnet);
    efficientnet_ = load_efficientnet(eff, static_cast<int>(config_.features.efficientnet_variant));
    efficientnet_->to(runtime_.device, torch::kFloat);
    feature_files.push_back(eff);
  }
  for (const auto& f : feature_files)
    if (is_random_init(f)) random_weights_.push_back(f);
  if (!random_weights_.empty())
    spdlog::warn("feature weights made by `anomalysd init-weights` (random, not pretrained): {} — maps are for trying the pipeline out, not for reporting",
                 fmt::join(random_weights_, ", "));

  // 3. prompts
  std::vector<std::string> prompt_files;
  for (const auto& p : config_.prompts) prompt_files.push_back(resolve_config_path(config_, p));
  prompts_ = PromptBook::load(prompt_files);

  // 4. the method (anomaly/detector.h), on the `inference:` section as it is
  inpainter_ = std::make_unique<SdInpainter>(pipe_, config_.inference.steps, config_.inference.guidance_scale);
  PrototypeFeatures prototype;
  prototype.network = efficientnet_;
  prototype.options.taps = config_.features.taps;
  prototype.options.rotations = config_.features.rotations;
  // Validate the grid against the resolution now rather than at the first image.
  if (config_.inference.multiscale)
    multiscale_masks(config_.resolution, config_.resolution, config_.inference.scales, vae_scale_factor(pipe_),
                     parse_mask_packing(config_.inference.mask_packing));
  detector_ = std::make_unique<AnomalyDetector>(*inpainter_, std::make_shared<LpipsDistance>(lpips_, config_.inference.distance_size),
                                                config_.inference, prototype);
}

MethodRunner::~MethodRunner() = default;

int64_t MethodRunner::masks_per_image(bool with_bank) const {
  const auto& i = config_.inference;
  const auto packing = parse_mask_packing(i.mask_packing);
  const bool proto = with_bank && i.prototype_mask;
  return anomalysd::masks_per_image(i.multiscale ? i.scales : std::vector<int64_t>{}, packing, proto);
}

void MethodRunner::set_class(const std::string& cls, const std::vector<std::string>& shots) {
  torch::NoGradGuard no_grad;
  ClassContext context;
  context.strength = config_.inference.strength_for(cls);
  // §4.2: the average embedding of the class's hierarchical prompts, cached per class.
  auto it = conditioning_cache_.find(cls);
  if (it == conditioning_cache_.end()) {
    const ClassPrompts prompts = prompts_.for_class(cls);
    PromptConditioning c;
    c.cond = average_prompt_embedding(pipe_, prompts.all());
    if (config_.inference.guidance_scale > 1.0) c.uncond = encode_prompts(pipe_, {config_.inference.negative_prompt});
    spdlog::info("class '{}': conditioning on the average of {} prompt(s) ({}), lambda = {}", cls, prompts.all().size(), prompts.source,
                 context.strength);
    it = conditioning_cache_.emplace(cls, c).first;
  }
  context.conditioning = it->second;
  // Eq. (13): the class's prototype bank from its shots under rotation.
  if (!shots.empty() && efficientnet_) {
    std::vector<torch::Tensor> images;
    for (const auto& path : shots) images.push_back(read_model_image(path, config_.resolution).tensor);
    context.prototype_bank = detector_->prototype_bank(torch::cat(images, 0));
    spdlog::info("class '{}': prototype bank of {} vectors from {} shot(s) x {} rotation(s)", cls, context.prototype_bank.size(0),
                 shots.size(), config_.features.rotations.size());
  }
  detector_->set_class(std::move(context));
}

int64_t MethodRunner::bank_size() const { return detector_->bank_size(); }

Detection MethodRunner::detect(const ModelImage& image) {
  return detector_->detect(image.tensor, noise_seed(static_cast<uint64_t>(config_.runtime.seed), image.identity));
}

}  // namespace anomalysd

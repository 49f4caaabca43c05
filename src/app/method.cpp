#include "anomalysd/app/method.h"

#include <filesystem>

#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "anomalysd/anomaly/prototype.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/safetensors.h"

namespace anomalysd {

namespace fs = std::filesystem;

torch::Tensor to_model_tensor(const cv::Mat& rgb_float, int64_t resolution) {
  cv::Mat resized = rgb_float;
  const cv::Size size(static_cast<int>(resolution), static_cast<int>(resolution));
  if (rgb_float.size() != size) {
    const bool shrinking = rgb_float.rows >= resolution && rgb_float.cols >= resolution;
    cv::resize(rgb_float, resized, size, 0, 0, shrinking ? cv::INTER_AREA : cv::INTER_LINEAR);
  }
  cv::Mat contiguous = resized.isContinuous() ? resized : resized.clone();
  return torch::from_blob(contiguous.data, {1, resolution, resolution, 3}, torch::kFloat).permute({0, 3, 1, 2}).clamp(0.0, 1.0).contiguous();
}

ModelImage read_model_image(const std::string& path, int64_t resolution) {
  ModelImage m;
  m.original = read_rgb_float(path);
  m.identity = pixel_hash(m.original);
  m.tensor = to_model_tensor(m.original, resolution);
  return m;
}

cv::Mat map_to_size(const torch::Tensor& map, int height, int width) {
  const torch::Tensor m = map.to(torch::kCPU, torch::kFloat).contiguous();
  const cv::Mat view(static_cast<int>(m.size(0)), static_cast<int>(m.size(1)), CV_32F, m.data_ptr<float>());
  cv::Mat out;
  if (view.rows == height && view.cols == width)
    out = view.clone();
  else
    cv::resize(view, out, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
  return out;
}

cv::Mat to_rgb8(const cv::Mat& rgb_float) {
  cv::Mat out;
  rgb_float.convertTo(out, CV_8U, 255.0);
  return out;
}

cv::Mat tensor_to_rgb8(const torch::Tensor& image) {
  const torch::Tensor hwc = (image.to(torch::kCPU, torch::kFloat).clamp(0, 1) * 255.0).round().to(torch::kByte).permute({1, 2, 0}).contiguous();
  return cv::Mat(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_8UC3, hwc.data_ptr<uint8_t>()).clone();
}

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

// Eq. (16–17) with φ̂(x) of the test image computed once per image, not once per mask. With
// `size` > 0 both images are bilinearly resized to size × size for AlexNet and the map is
// area-resized back: AlexNet's first layer has stride 4, so at a small model resolution (the
// demo's 64 px: a 15 × 15 first tap) the map is coarser than the defects.
class LpipsDistance : public ImageDistance {
 public:
  LpipsDistance(Lpips lpips, int64_t size) : lpips_(std::move(lpips)), size_(size) {}
  void begin_image(const torch::Tensor& x) override {
    height_ = x.size(2);
    width_ = x.size(3);
    reference_ = lpips_->features(resized(x.to(torch::kFloat)), /*normalize=*/true);
  }
  torch::Tensor distance(const torch::Tensor& x_hat) override {
    const torch::Tensor map = lpips_->distance_map_from(reference_, resized(x_hat.to(torch::kFloat)), /*normalize=*/true);
    if (map.size(2) == height_ && map.size(3) == width_) return map;
    return torch::adaptive_avg_pool2d(map, {height_, width_});
  }

 private:
  torch::Tensor resized(const torch::Tensor& x) const {
    if (size_ <= 0 || (x.size(2) == size_ && x.size(3) == size_)) return x;
    namespace F = torch::nn::functional;
    return F::interpolate(x, F::InterpolateFuncOptions().size(std::vector<int64_t>{size_, size_}).mode(torch::kBilinear).align_corners(false));
  }

  Lpips lpips_;
  int64_t size_ = 0, height_ = 0, width_ = 0;
  LpipsFeatures reference_;
};

bool is_random_init(const std::string& path) {
  const auto meta = SafetensorsFile::open(path).metadata();
  const auto it = meta.find("anomalysd_init");
  return it != meta.end() && it->second == "random";
}

}  // namespace

MethodRunner::MethodRunner(const AppConfig& config, const std::string& model_dir, bool with_prototype) : config_(config) {
  runtime_ = apply_runtime(config_.runtime);
  model_dir_ = model_dir.empty() ? config_.model.path : model_dir;
  if (model_dir_.empty()) throw InputError("no model: give --model DIR or set model.path (a diffusers inpainting pipeline folder)");

  // 1. the inpainting pipeline
  pipe_ = load_sd_pipeline(model_dir_, config_.model.variant);
  pipe_.to(runtime_.device, runtime_.dtype);
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

  // 4. the method
  InpaintSettings inpaint;
  inpaint.steps = config_.inference.steps;
  inpaint.strength = config_.inference.strength;
  inpaint.guidance_scale = config_.inference.guidance_scale;
  inpaint.mask_batch = config_.inference.mask_batch;
  inpainter_ = std::make_unique<SdInpainter>(pipe_, inpaint);
  DetectorSettings d;
  d.scales = config_.inference.scales;
  d.multiscale = config_.inference.multiscale;
  d.prototype_mask = config_.inference.prototype_mask;
  d.alpha = config_.inference.alpha;
  d.blur_sigma = config_.inference.blur_sigma;
  d.packing = parse_mask_packing(config_.inference.mask_packing);
  d.mask_batch = config_.inference.mask_batch;
  d.keep_inpainted = config_.inference.save_inpainted;
  // Validate the grid against the resolution now rather than at the first image.
  if (d.multiscale) multiscale_masks(config_.resolution, config_.resolution, d.scales, vae_scale_factor(pipe_), d.packing);
  detector_ = std::make_unique<AnomalyDetector>(*inpainter_, std::make_shared<LpipsDistance>(lpips_, config_.inference.distance_size), d);
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
  class_ = cls;
  // §4.2: the average embedding of the class's hierarchical prompts, cached per class.
  auto it = conditioning_cache_.find(cls);
  if (it == conditioning_cache_.end()) {
    const ClassPrompts prompts = prompts_.for_class(cls);
    PromptConditioning c;
    c.cond = average_prompt_embedding(pipe_, prompts.all());
    if (config_.inference.guidance_scale > 1.0) c.uncond = encode_prompts(pipe_, {config_.inference.negative_prompt});
    spdlog::info("class '{}': conditioning on the average of {} prompt(s) ({}), lambda = {}", cls, prompts.all().size(),
                 prompts.source, config_.inference.strength_for(cls));
    it = conditioning_cache_.emplace(cls, c).first;
  }
  inpainter_->set_conditioning(it->second);
  inpainter_->set_strength(config_.inference.strength_for(cls));

  // Eq. (13): the class's prototype bank from its shots under rotation.
  bank_ = torch::Tensor();
  if (!shots.empty() && efficientnet_) {
    std::vector<torch::Tensor> images;
    for (const auto& path : shots) images.push_back(read_model_image(path, config_.resolution).tensor);
    PrototypeOptions o;
    o.taps = config_.features.taps;
    o.rotations = config_.features.rotations;
    bank_ = build_prototype_bank(efficientnet_, torch::cat(images, 0).to(runtime_.device, torch::kFloat), o);
    spdlog::info("class '{}': prototype bank of {} vectors from {} shot(s) x {} rotation(s)", cls, bank_.size(0), shots.size(),
                 o.rotations.size());
  }
}

Detection MethodRunner::detect(const ModelImage& image) {
  torch::Tensor error;
  if (bank_.defined()) {
    PrototypeOptions o;
    o.taps = config_.features.taps;
    o.rotations = config_.features.rotations;
    error = prototype_error(efficientnet_, image.tensor, bank_, o);  // eq. (14)
  }
  return detector_->detect(image.tensor, noise_seed(static_cast<uint64_t>(config_.runtime.seed), image.identity), error);
}

}  // namespace anomalysd

#include "anomalysd/core/app_config.h"

#include <filesystem>

#include "anomalysd/io/errors.h"
#include "anomalysd_embedded_config.h"  // generated: kEmbeddedDefaultConfig

namespace anomalysd {

namespace {

constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();

template <typename T>
void emit_list(YAML::Emitter& out, const std::string& key, const std::vector<T>& values) {
  out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const auto& v : values) out << v;
  out << YAML::EndSeq;
}

}  // namespace

ModelConfig ModelConfig::from_config(ConfigSection& section) {
  ModelConfig c;
  c.path = section.get_string("path", c.path);
  c.variant = section.get_string("variant", c.variant);
  section.finish();
  return c;
}

InferenceSettings inference_settings_from(ConfigSection& s) {
  InferenceSettings c;
  c.steps = s.get_int("steps", c.steps, 1, 1000);
  c.strength = s.get_double("strength", c.strength, 0.0, 1.0);
  c.class_strength = s.get_double_map("class_strength", 0.0, 1.0);
  c.guidance_scale = s.get_double("guidance_scale", c.guidance_scale, 0.0, 100.0);
  c.negative_prompt = s.get_string("negative_prompt", c.negative_prompt);
  c.scales = s.get_int_list("scales", c.scales, 1, 256);
  c.multiscale = s.get_bool("multiscale", c.multiscale);
  c.prototype_mask = s.get_bool("prototype_mask", c.prototype_mask);
  c.alpha = s.get_double("alpha", c.alpha, 0.0, 1.0);
  c.blur_sigma = s.get_double("blur_sigma", c.blur_sigma, 0.0, 256.0);
  c.mask_batch = s.get_int("mask_batch", c.mask_batch, 1, 4096);
  c.mask_packing = s.get_choice("mask_packing", c.mask_packing, {"none", "grid2x2"});
  c.distance_size = s.get_int("distance_size", c.distance_size, 0, 4096);
  c.save_inpainted = s.get_bool("save_inpainted", c.save_inpainted);
  if (c.multiscale && c.scales.empty()) throw s.error("scales", "key 'inference.scales' is empty but inference.multiscale is true");
  if (!c.multiscale && !c.prototype_mask)
    throw s.error("multiscale", "inference.multiscale and inference.prototype_mask are both false: no mask left to inpaint");
  s.finish();
  return c;
}

FeaturesConfig FeaturesConfig::from_config(ConfigSection& s) {
  FeaturesConfig c;
  c.efficientnet = s.get_string("efficientnet", c.efficientnet);
  c.alexnet = s.get_string("alexnet", c.alexnet);
  c.lpips = s.get_string("lpips", c.lpips);
  c.efficientnet_variant = s.get_int("efficientnet_variant", c.efficientnet_variant, 0, 7);
  c.taps = s.get_int_list("taps", c.taps, 0, 8);
  if (c.taps.size() != 2) throw s.error("taps", "key 'features.taps' must name exactly two EfficientNet stages (eq. 12)");
  c.rotations = s.get_double_list("rotations", c.rotations, -360.0, 360.0);
  if (c.rotations.empty()) throw s.error("rotations", "key 'features.rotations' is empty (use [0] for no augmentation)");
  s.finish();
  return c;
}

// `train.augment:`
static AugmentConfig augment_config_from(ConfigSection& s) {
  AugmentConfig c;
  c.brightness = s.get_double("brightness", c.brightness, 0.0, 1.0);
  c.contrast = s.get_double("contrast", c.contrast, 0.0, 1.0);
  c.scale = s.get_double_list("scale", c.scale, 0.1, 10.0);
  if (c.scale.size() != 2 || c.scale[0] > c.scale[1]) throw s.error("scale", "key 'train.augment.scale' must be [min, max]");
  c.rotation = s.get_double("rotation", c.rotation, 0.0, 180.0);
  c.probability = s.get_double("probability", c.probability, 0.0, 1.0);
  s.finish();
  return c;
}

TrainSettings train_settings_from(ConfigSection& s) {
  TrainSettings c;
  c.parts = s.get_choice("parts", c.parts, {"none", "decoder", "unet", "both"});
  c.unet_steps = s.get_int("unet_steps", c.unet_steps, 0, kMaxInt);
  c.decoder_steps = s.get_int("decoder_steps", c.decoder_steps, 0, kMaxInt);
  c.unet_epochs = s.get_int("unet_epochs", c.unet_epochs, 0, kMaxInt);
  c.decoder_epochs = s.get_int("decoder_epochs", c.decoder_epochs, 0, kMaxInt);
  c.batch_size = s.get_int("batch_size", c.batch_size, 1, 4096);
  c.grad_accumulation = s.get_int("grad_accumulation", c.grad_accumulation, 1, 4096);
  c.lr = s.get_double("lr", c.lr, 0.0, 1.0);
  c.grad_clip = s.get_double("grad_clip", c.grad_clip, 0.0, 1e9);
  c.ema_decay = s.get_double("ema_decay", c.ema_decay, 0.0, 0.999999);
  c.gradient_checkpointing = s.get_bool("gradient_checkpointing", c.gradient_checkpointing);
  c.mixed_precision = s.get_choice("mixed_precision", c.mixed_precision, {"no", "fp16", "bf16"});
  c.decoder_lpips_weight = s.get_double("decoder_lpips_weight", c.decoder_lpips_weight, 0.0, 100.0);
  c.mask = s.get_choice("mask", c.mask, {"iou", "random"});
  c.iou_thresholds = s.get_double_list("iou_thresholds", c.iou_thresholds, 0.0, 0.99);
  if (c.iou_thresholds.empty()) throw s.error("iou_thresholds", "key 'train.iou_thresholds' is empty");
  c.prompt = s.get_choice("prompt", c.prompt, {"hierarchical", "simple", "none"});
  c.foreground = s.get_choice("foreground", c.foreground, {"auto", "object", "texture"});
  c.save_every = s.get_int("save_every", c.save_every, 0, kMaxInt);
  c.keep = s.get_int("keep", c.keep, 1, 1000);
  c.log_every = s.get_int("log_every", c.log_every, 1, kMaxInt);
  ConfigSection augment = s.section("augment");
  c.augment = augment_config_from(augment);
  s.finish();
  return c;
}

DistributedConfig DistributedConfig::from_config(ConfigSection& section) {
  DistributedConfig c;
  c.backend = section.get_choice("backend", c.backend, {"auto", "gloo", "nccl"});
  c.timeout_s = section.get_double("timeout_s", c.timeout_s, 1.0, 7.0 * 24 * 3600);
  section.finish();
  return c;
}

AppConfig AppConfig::from_source(const ConfigSource& source) {
  ConfigSection root = ConfigSection::root(source);
  AppConfig c;
  c.runtime = RuntimeConfig::from_config(root);
  ConfigSection model = root.section("model");
  c.model = ModelConfig::from_config(model);
  c.resolution = root.get_int("resolution", c.resolution, 8, 8192);
  c.prompts = root.get_string_list("prompts", c.prompts);
  ConfigSection inference = root.section("inference");
  c.inference = inference_settings_from(inference);
  ConfigSection features = root.section("features");
  c.features = FeaturesConfig::from_config(features);
  ConfigSection train = root.section("train");
  c.train = train_settings_from(train);
  ConfigSection distributed = root.section("distributed");
  c.distributed = DistributedConfig::from_config(distributed);
  root.finish();
  c.source = source.name.rfind('<', 0) == 0 ? "" : source.name;
  return c;
}

std::string AppConfig::to_yaml() const {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "device" << YAML::Value << runtime.device;
  out << YAML::Key << "dtype" << YAML::Value << runtime.dtype;
  out << YAML::Key << "seed" << YAML::Value << runtime.seed;
  out << YAML::Key << "threads" << YAML::Value << runtime.threads;
  out << YAML::Key << "cpu_gemm" << YAML::Value << runtime.cpu_gemm;
  out << YAML::Key << "attention" << YAML::Value << runtime.attention;
  const PrecisionConfig& p = runtime.precision;
  out << YAML::Key << "precision" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "text_encoder" << YAML::Value << p.text_encoder;
  out << YAML::Key << "unet" << YAML::Value << p.unet;
  out << YAML::Key << "vae_encoder" << YAML::Value << p.vae_encoder;
  out << YAML::Key << "vae_decoder" << YAML::Value << p.vae_decoder;
  out << YAML::Key << "latents" << YAML::Value << p.latents;
  out << YAML::EndMap;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "path" << YAML::Value << model.path;
  out << YAML::Key << "variant" << YAML::Value << model.variant;
  out << YAML::EndMap;
  out << YAML::Key << "resolution" << YAML::Value << resolution;
  emit_list(out, "prompts", prompts);

  const InferenceSettings& i = inference;
  out << YAML::Key << "inference" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "steps" << YAML::Value << i.steps;
  out << YAML::Key << "strength" << YAML::Value << i.strength;
  out << YAML::Key << "class_strength" << YAML::Value << YAML::Flow << YAML::BeginMap;
  for (const auto& [cls, v] : i.class_strength) out << YAML::Key << cls << YAML::Value << v;
  out << YAML::EndMap;
  out << YAML::Key << "guidance_scale" << YAML::Value << i.guidance_scale;
  out << YAML::Key << "negative_prompt" << YAML::Value << YAML::DoubleQuoted << i.negative_prompt;
  emit_list(out, "scales", i.scales);
  out << YAML::Key << "multiscale" << YAML::Value << i.multiscale;
  out << YAML::Key << "prototype_mask" << YAML::Value << i.prototype_mask;
  out << YAML::Key << "alpha" << YAML::Value << i.alpha;
  out << YAML::Key << "blur_sigma" << YAML::Value << i.blur_sigma;
  out << YAML::Key << "mask_batch" << YAML::Value << i.mask_batch;
  out << YAML::Key << "mask_packing" << YAML::Value << i.mask_packing;
  // Part of every run's identity (run_identity.cpp): a config that left it out would resume maps of another distance.
  out << YAML::Key << "distance_size" << YAML::Value << i.distance_size;
  out << YAML::Key << "save_inpainted" << YAML::Value << i.save_inpainted;
  out << YAML::EndMap;

  out << YAML::Key << "features" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "efficientnet" << YAML::Value << features.efficientnet;
  out << YAML::Key << "alexnet" << YAML::Value << features.alexnet;
  out << YAML::Key << "lpips" << YAML::Value << features.lpips;
  out << YAML::Key << "efficientnet_variant" << YAML::Value << features.efficientnet_variant;
  emit_list(out, "taps", features.taps);
  emit_list(out, "rotations", features.rotations);
  out << YAML::EndMap;

  const TrainSettings& t = train;
  out << YAML::Key << "train" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "parts" << YAML::Value << t.parts;
  out << YAML::Key << "unet_steps" << YAML::Value << t.unet_steps;
  out << YAML::Key << "decoder_steps" << YAML::Value << t.decoder_steps;
  out << YAML::Key << "unet_epochs" << YAML::Value << t.unet_epochs;
  out << YAML::Key << "decoder_epochs" << YAML::Value << t.decoder_epochs;
  out << YAML::Key << "batch_size" << YAML::Value << t.batch_size;
  out << YAML::Key << "grad_accumulation" << YAML::Value << t.grad_accumulation;
  out << YAML::Key << "lr" << YAML::Value << t.lr;
  out << YAML::Key << "grad_clip" << YAML::Value << t.grad_clip;
  out << YAML::Key << "ema_decay" << YAML::Value << t.ema_decay;
  out << YAML::Key << "gradient_checkpointing" << YAML::Value << t.gradient_checkpointing;
  out << YAML::Key << "mixed_precision" << YAML::Value << t.mixed_precision;
  out << YAML::Key << "decoder_lpips_weight" << YAML::Value << t.decoder_lpips_weight;
  out << YAML::Key << "mask" << YAML::Value << t.mask;
  emit_list(out, "iou_thresholds", t.iou_thresholds);
  out << YAML::Key << "prompt" << YAML::Value << t.prompt;
  out << YAML::Key << "foreground" << YAML::Value << t.foreground;
  out << YAML::Key << "save_every" << YAML::Value << t.save_every;
  out << YAML::Key << "keep" << YAML::Value << t.keep;
  out << YAML::Key << "log_every" << YAML::Value << t.log_every;
  out << YAML::Key << "augment" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "brightness" << YAML::Value << t.augment.brightness;
  out << YAML::Key << "contrast" << YAML::Value << t.augment.contrast;
  emit_list(out, "scale", t.augment.scale);
  out << YAML::Key << "rotation" << YAML::Value << t.augment.rotation;
  out << YAML::Key << "probability" << YAML::Value << t.augment.probability;
  out << YAML::EndMap;
  out << YAML::EndMap;
  out << YAML::Key << "distributed" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "backend" << YAML::Value << distributed.backend;
  out << YAML::Key << "timeout_s" << YAML::Value << distributed.timeout_s;
  out << YAML::EndMap;

  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

const std::string& embedded_default_config() {
  static const std::string text(kEmbeddedDefaultConfig);
  return text;
}

const std::string& embedded_demo_config() {
  static const std::string text(kEmbeddedDemoConfig);
  return text;
}

AppConfig load_app_config(const std::string& path, const std::vector<std::string>& overrides) {
  ConfigSource source = path.empty() ? parse_config_text(embedded_default_config(), "<embedded default config>")
                                     : load_config_file(path);
  apply_overrides(source, overrides);
  return AppConfig::from_source(source);
}

std::string model_dir_of(const AppConfig& config, const std::string& model_option) {
  const std::string dir = model_option.empty() ? config.model.path : model_option;
  if (dir.empty()) throw InputError("no model: give --model DIR or set model.path (a diffusers inpainting pipeline folder)");
  return dir;
}

std::string resolve_config_path(const AppConfig& config, const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty() || fs::path(path).is_absolute() || fs::exists(path) || config.source.empty()) return path;
  const fs::path dir = fs::path(config.source).parent_path();
  for (const fs::path& candidate : {dir / path, dir.parent_path() / path})
    if (fs::exists(candidate)) return candidate.lexically_normal().string();
  return path;
}

}  // namespace anomalysd

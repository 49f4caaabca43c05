#include "anomalysd/models/sd_pipeline.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace {

// Checks model_index.json's entry for a component: ["library", "Class"] with an accepted class.
void expect_component(const nlohmann::json& index, const std::string& path, const std::string& name,
                      const std::vector<std::string>& classes) {
  if (!index.contains(name)) throw FormatError(path, "'" + name + "': component missing from the pipeline");
  const auto& entry = index[name];
  if (!entry.is_array() || entry.size() != 2 || !entry[1].is_string())
    throw FormatError(path, "'" + name + "': expected [library, class], got " + entry.dump());
  const std::string cls = entry[1];
  if (std::find(classes.begin(), classes.end(), cls) == classes.end()) {
    std::string list;
    for (const auto& c : classes) list += (list.empty() ? "" : ", ") + c;
    throw FormatError(path, "'" + name + "': class " + cls + " is not supported (expected " + list + ")");
  }
}

}  // namespace

void SdPipeline::to(torch::Device device, const PipelinePrecision& precision) {
  text_encoder->to(device, precision.text_encoder);
  unet->to(device, precision.unet);
  vae->encoder->to(device, precision.vae_encoder);
  vae->quant_conv->to(device, precision.vae_encoder);
  vae->decoder->to(device, precision.vae_decoder);
  vae->post_quant_conv->to(device, precision.vae_decoder);
  latent_dtype = precision.latents;
}

PipelinePrecision SdPipeline::precision() const {
  PipelinePrecision p;
  p.text_encoder = text_encoder->token_embedding->weight.scalar_type();
  p.unet = unet->conv_in->weight.scalar_type();
  p.vae_encoder = vae->quant_conv->weight.scalar_type();
  p.vae_decoder = vae->post_quant_conv->weight.scalar_type();
  p.latents = latent_dtype;
  return p;
}

void SdPipeline::use_cpu_inference_layout() {
  if (!unet->conv_in->weight.device().is_cpu()) return;
  use_channels_last(*unet);
  use_channels_last(*vae);
}

SdPipeline load_sd_pipeline(const std::string& dir, const std::string& variant) {
  const fs::path root(dir);
  if (!fs::is_directory(root)) throw FormatError(dir, "pipeline folder not found");
  const std::string index_path = (root / "model_index.json").string();
  if (!fs::is_regular_file(index_path)) throw FormatError(index_path, "not found: is this a diffusers pipeline folder?");
  const nlohmann::json index = read_json_file(index_path);
  expect_component(index, index_path, "unet", {"UNet2DConditionModel"});
  expect_component(index, index_path, "vae", {"AutoencoderKL"});
  expect_component(index, index_path, "text_encoder", {"CLIPTextModel"});
  expect_component(index, index_path, "tokenizer", {"CLIPTokenizer", "CLIPTokenizerFast"});
  expect_component(index, index_path, "scheduler",
                   {"DDIMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler",
                    "EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler", "DDPMScheduler"});

  SdPipeline p;
  p.pipeline_class = index.value("_class_name", "");
  p.tokenizer = ClipTokenizer::from_folder((root / "tokenizer").string());
  p.text_encoder = load_clip_text((root / "text_encoder").string(), variant);
  p.unet = load_unet((root / "unet").string(), variant);
  p.vae = load_vae((root / "vae").string(), variant);
  p.scheduler = DdimScheduler(DdimConfig::from_json((root / "scheduler" / "scheduler_config.json").string()));
  if (p.tokenizer.max_id() >= p.text_encoder->config.vocab_size)
    throw FormatError(dir, "the tokenizer produces ids up to " + std::to_string(p.tokenizer.max_id()) + " but the text encoder's vocab_size is " +
                               std::to_string(p.text_encoder->config.vocab_size));
  if (p.text_encoder->config.hidden_size != p.unet->config.cross_attention_dim)
    throw FormatError(dir, "text encoder width " + std::to_string(p.text_encoder->config.hidden_size) +
                               " does not match the UNet's cross_attention_dim " +
                               std::to_string(p.unet->config.cross_attention_dim));
  spdlog::info("loaded {} from {} ({}UNet with {} input channels)", p.pipeline_class.empty() ? "pipeline" : p.pipeline_class,
               dir, variant.empty() ? "" : variant + " weights, ", p.unet->config.in_channels);
  return p;
}

}  // namespace anomalysd

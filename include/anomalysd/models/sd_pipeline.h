// A Stable Diffusion (inpainting) checkpoint in the diffusers folder layout, as users download it:
//   model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/
// Each component is built from its own config and loaded strictly; `variant` ("fp16") selects
// *.fp16.safetensors. The scheduler config's beta schedule feeds our DDIM sampler whatever class
// it names (SD2-inpainting ships a PNDMScheduler config).
#pragma once

#include <string>

#include <torch/torch.h>

#include "anomalysd/models/clip_text.h"
#include "anomalysd/models/clip_tokenizer.h"
#include "anomalysd/models/ddim.h"
#include "anomalysd/models/precision.h"
#include "anomalysd/models/unet.h"
#include "anomalysd/models/vae.h"

namespace anomalysd {

struct SdPipeline {
  std::string pipeline_class;  // model_index.json's _class_name
  ClipTokenizer tokenizer;
  ClipTextModel text_encoder{nullptr};
  UNet2DConditionModel unet{nullptr};
  AutoencoderKL vae{nullptr};
  DdimScheduler scheduler{DdimConfig{}};

  // The dtype of the start noise, z_t, E(x), z° and the scheduler's step (the networks' dtypes are
  // their weights'): set by to().
  torch::ScalarType latent_dtype = torch::kFloat;

  bool is_inpainting() const { return unet->config.in_channels == 9; }
  // Each part to its precision: the VAE's encoder (with quant_conv) and decoder (with
  // post_quant_conv) separately.
  void to(torch::Device device, const PipelinePrecision& precision);
  // The networks in `dtype`, the latents in float32 (PipelinePrecision::for_dtype).
  void to(torch::Device device, torch::ScalarType dtype) { to(device, PipelinePrecision::for_dtype(dtype)); }
  // What the weights are in now (and latent_dtype).
  PipelinePrecision precision() const;
  // On the CPU, the UNet's and VAE's convolutions in channels-last layout (blocks.h,
  // use_channels_last): what inference uses. A no-op on CUDA.
  void use_cpu_inference_layout();
};

SdPipeline load_sd_pipeline(const std::string& dir, const std::string& variant = "");

}  // namespace anomalysd

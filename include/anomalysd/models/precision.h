// The precision of each part of an SD inpainting run. Half precision pays in the UNet (where the
// time goes); the start noise, z_t and the scheduler's arithmetic (ᾱ products, x̂₀ = (z − √(1−ᾱ)ε)/√ᾱ)
// stay float32 as diffusers keeps them, and the VAE's precision is its own choice (diffusers
// upcasts it where half precision breaks it). Torch-free: c10 types only, for the config layer.
#pragma once

#include <string>

#include <c10/core/ScalarType.h>

namespace anomalysd {

struct PipelinePrecision {
  c10::ScalarType text_encoder = c10::kFloat;
  c10::ScalarType unet = c10::kFloat;
  c10::ScalarType vae_encoder = c10::kFloat;  // E(x), E((1 − m) ⊙ x) (with quant_conv)
  c10::ScalarType vae_decoder = c10::kFloat;  // D(z) → x̂ (with post_quant_conv)
  c10::ScalarType latents = c10::kFloat;      // start noise, z_t, E(x), z°, the scheduler step

  static PipelinePrecision uniform(c10::ScalarType dtype);  // every part, latents included
  // The rule behind `dtype` (config `precision.*: auto`), measured on the demo (README, "Half
  // precision"): the networks in `dtype`, the latents and the scheduler in float32.
  static PipelinePrecision for_dtype(c10::ScalarType dtype);
  bool all_float32() const;
  bool any(c10::ScalarType dtype) const;
  // "text_encoder=bfloat16 unet=bfloat16 vae_encoder=float32 vae_decoder=float32 latents=float32"
  std::string describe() const;
  bool operator==(const PipelinePrecision& o) const;
};

const char* precision_name(c10::ScalarType dtype);  // float32 | float16 | bfloat16 (else the c10 name)

}  // namespace anomalysd

#include "anomalysd/models/precision.h"

namespace anomalysd {

PipelinePrecision PipelinePrecision::uniform(c10::ScalarType dtype) {
  PipelinePrecision p;
  p.text_encoder = p.unet = p.vae_encoder = p.vae_decoder = p.latents = dtype;
  return p;
}

PipelinePrecision PipelinePrecision::for_dtype(c10::ScalarType dtype) {
  PipelinePrecision p = uniform(dtype);
  p.latents = c10::kFloat;
  return p;
}

bool PipelinePrecision::any(c10::ScalarType dtype) const {
  return text_encoder == dtype || unet == dtype || vae_encoder == dtype || vae_decoder == dtype || latents == dtype;
}

bool PipelinePrecision::all_float32() const { return *this == uniform(c10::kFloat); }

std::string PipelinePrecision::describe() const {
  return std::string("text_encoder=") + precision_name(text_encoder) + " unet=" + precision_name(unet) + " vae_encoder=" +
         precision_name(vae_encoder) + " vae_decoder=" + precision_name(vae_decoder) + " latents=" + precision_name(latents);
}

bool PipelinePrecision::operator==(const PipelinePrecision& o) const {
  return text_encoder == o.text_encoder && unet == o.unet && vae_encoder == o.vae_encoder && vae_decoder == o.vae_decoder &&
         latents == o.latents;
}

const char* precision_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kFloat: return "float32";
    case c10::kHalf: return "float16";
    case c10::kBFloat16: return "bfloat16";
    default: return c10::toString(dtype);
  }
}

}  // namespace anomalysd

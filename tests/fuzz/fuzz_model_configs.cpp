// The diffusers / transformers config.json readers: UNet, VAE, CLIP text encoder, scheduler.
#include "anomalysd/io/errors.h"
#include "anomalysd/models/clip_text.h"
#include "anomalysd/models/ddim.h"
#include "anomalysd/models/unet.h"
#include "anomalysd/models/vae.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string path = anomalysd::fuzz::write_input("config.json", data, size);
  try {
    const auto u = anomalysd::UNetConfig::from_json(path);
    if (u.layers_per_block.size() != u.block_out_channels.size() || u.attention_heads.size() != u.block_out_channels.size()) __builtin_trap();
  } catch (const anomalysd::InputError&) {
  }
  try {
    (void)anomalysd::VaeConfig::from_json(path);
  } catch (const anomalysd::InputError&) {
  }
  try {
    (void)anomalysd::ClipTextConfig::from_json(path);
  } catch (const anomalysd::InputError&) {
  }
  try {
    (void)anomalysd::DdimConfig::from_json(path);
  } catch (const anomalysd::InputError&) {
  }
  return 0;
}

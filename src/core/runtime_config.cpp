// The runtime keys of a config (torch-free: c10 types only), apart from applying them
// (runtime.cpp), so that the config parsers build without LibTorch's heavy headers.
#include <limits>
#include <regex>
#include <thread>

#include "anomalysd/core/runtime.h"

namespace anomalysd {

RuntimeConfig RuntimeConfig::from_config(ConfigSection& section) {
  RuntimeConfig c;
  c.device = section.get_string("device", c.device);
  static const std::regex kDevice(R"(auto|cpu|cuda(:[0-9]+)?)");
  if (!std::regex_match(c.device, kDevice))
    throw section.error("device", "key 'device' = '" + c.device + "' is not one of: auto, cpu, cuda, cuda:N");
  c.dtype = section.get_choice("dtype", c.dtype, {"float32", "float16", "bfloat16", "auto"});
  c.seed = section.get_int("seed", c.seed, 0, std::numeric_limits<int64_t>::max());
  c.threads = section.get_int("threads", c.threads, 0, 1024);
  c.cpu_gemm = section.get_choice("cpu_gemm", c.cpu_gemm, {"auto", "onednn", "blas"});
  c.attention = section.get_choice("attention", c.attention, {"auto", "sdpa", "fused", "chunked"});
  ConfigSection precision = section.section("precision");
  const std::vector<std::string> choices{"auto", "float32", "float16", "bfloat16"};
  PrecisionConfig& p = c.precision;
  p.text_encoder = precision.get_choice("text_encoder", p.text_encoder, choices);
  p.unet = precision.get_choice("unet", p.unet, choices);
  p.vae_encoder = precision.get_choice("vae_encoder", p.vae_encoder, choices);
  p.vae_decoder = precision.get_choice("vae_decoder", p.vae_decoder, choices);
  p.latents = precision.get_choice("latents", p.latents, choices);
  precision.finish();
  return c;
}

c10::ScalarType parse_run_dtype(const std::string& name) {
  if (name == "float32") return c10::kFloat;
  if (name == "float16") return c10::kHalf;
  if (name == "bfloat16") return c10::kBFloat16;
  if (name == "auto") throw InputError("dtype 'auto' must be resolved first (resolved_dtype(), which needs LibTorch)");
  throw InputError("dtype '" + name + "' is not one of: float32, float16, bfloat16");
}

PipelinePrecision resolve_precision(const RuntimeConfig& config) {
  const PipelinePrecision automatic = PipelinePrecision::for_dtype(parse_run_dtype(config.dtype));
  auto part = [](const std::string& value, c10::ScalarType rule) { return value == "auto" ? rule : parse_run_dtype(value); };
  PipelinePrecision p;
  p.text_encoder = part(config.precision.text_encoder, automatic.text_encoder);
  p.unet = part(config.precision.unet, automatic.unet);
  p.vae_encoder = part(config.precision.vae_encoder, automatic.vae_encoder);
  p.vae_decoder = part(config.precision.vae_decoder, automatic.vae_decoder);
  p.latents = part(config.precision.latents, automatic.latents);
  return p;
}

int default_thread_count() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

}  // namespace anomalysd

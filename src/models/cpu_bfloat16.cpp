#include "anomalysd/models/cpu_bfloat16.h"

#include <cstdio>
#include <vector>

#include <torch/torch.h>
#include <torch/version.h>

#include "anomalysd/models/cpu_gemm.h"
#include "machine_cache.h"

namespace anomalysd {

double bfloat16_time_ratio(const Bfloat16Measurement& m) {
  return m.float32_ms > 0 && m.bfloat16_ms > 0 ? m.bfloat16_ms / m.float32_ms : 0.0;
}

bool bfloat16_pays(const Bfloat16Measurement& m) {
  const double ratio = bfloat16_time_ratio(m);
  return ratio > 0 && ratio <= 0.8;
}

Bfloat16Measurement measure_cpu_bfloat16() {
  torch::NoGradGuard no_grad;
  // The UNet's time is its 3×3 convolutions and its Linear layers (attention projections and
  // feed-forward), about half each (bench unet --profile).
  // Values from sin(), not the random generator: a measurement made mid-run must not move the
  // seeded draws that follow it.
  auto values = [](std::vector<int64_t> shape, double scale) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return (torch::arange(n, torch::kFloat) * 0.7).sin().mul(scale).view(shape);
  };
  const auto cl = torch::MemoryFormat::ChannelsLast;
  const torch::Tensor x = values({2, 320, 32, 32}, 1.0).contiguous(cl), kernel = values({320, 320, 3, 3}, 0.02).contiguous(cl);
  const torch::Tensor tokens = values({2048, 640}, 1.0), weight = values({1280, 640}, 0.04), bias = torch::zeros({1280});
  auto probe_ms = [&](torch::ScalarType dtype) {
    const torch::Tensor xd = x.to(dtype), kd = kernel.to(dtype), td = tokens.to(dtype), wd = weight.to(dtype), bd = bias.to(dtype);
    const double conv = best_seconds([&] { return torch::conv2d(xd, kd, {}, 1, 1); }, 5);
    const double lin = best_seconds([&] { return linear(td, wd, bd); }, 5);
    return 1e3 * (conv + lin);
  };
  Bfloat16Measurement m;
  m.float32_ms = probe_ms(torch::kFloat);
  m.bfloat16_ms = probe_ms(torch::kBFloat16);
  return m;
}

Bfloat16Speed cpu_bfloat16_speed() {
  const std::string key = cpu_model_name() + " | LibTorch " + TORCH_VERSION;
  auto valid = [](const nlohmann::json& e) {
    return e.is_object() && e.value("float32_ms", 0.0) > 0 && e.value("bfloat16_ms", 0.0) > 0;
  };
  auto measure = [] {
    const Bfloat16Measurement m = measure_cpu_bfloat16();
    return nlohmann::json{{"float32_ms", m.float32_ms}, {"bfloat16_ms", m.bfloat16_ms}};
  };
  const MachineEntry e = measured_once("cpu-bfloat16.json", key, "bfloat16's speed", valid, measure);
  Bfloat16Speed s;
  s.measured = {e.value.at("float32_ms").get<double>(), e.value.at("bfloat16_ms").get<double>()};
  const std::string cached = e.cached_in.empty() ? "" : "cached in " + e.cached_in;
  s.source = e.measured_now ? "measured now" + (cached.empty() ? "" : ", " + cached) : cached;
  return s;
}

std::string describe_bfloat16_speed(const Bfloat16Speed& speed) {
  char line[256];
  std::snprintf(line, sizeof line, "bfloat16 takes %.2fx float32's time on a UNet-shaped convolution and Linear (%.1f against %.1f ms; ",
                bfloat16_time_ratio(speed.measured), speed.measured.bfloat16_ms, speed.measured.float32_ms);
  return line + speed.source + ")";
}

}  // namespace anomalysd

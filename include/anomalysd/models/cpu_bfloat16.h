// Whether bfloat16 pays on this CPU — measured, not read from the CPU's flags. AVX512-BF16 says
// only that the instructions exist: on an AMD EPYC (Zen 4) the SD2-inpainting UNet runs at 0.48× of
// float32's time in bfloat16, on an Intel Xeon with AVX512-BF16 but no AMX at 1.31× (its bfloat16
// dot product retires half float32's FMA FLOPs: 86 against 172 GFLOP/s per core, README "Half
// precision"). So `dtype: auto` times a UNet-shaped 3×3 convolution and Linear in both dtypes,
// once per machine (CPU model, LibTorch version), and keeps the figures in a cache file beside the
// CPU GEMM choice's.
#pragma once

#include <string>

namespace anomalysd {

// Milliseconds of the probe (a 3×3 convolution 320 → 320 channels on 2 × 32 × 32, channels-last,
// plus a Linear of 2048 tokens × 640 → 1280; best of 5 each) in float32 and in bfloat16.
struct Bfloat16Measurement {
  double float32_ms = 0;
  double bfloat16_ms = 0;
};

// bfloat16's time over float32's (0 when either is missing).
double bfloat16_time_ratio(const Bfloat16Measurement& m);

// Whether bfloat16 is clearly faster: at most 0.8× float32's time. Near 1× float32 is kept: its
// table is the reference and costs nothing there.
bool bfloat16_pays(const Bfloat16Measurement& m);

// Times the probe now, at LibTorch's current thread count.
Bfloat16Measurement measure_cpu_bfloat16();

struct Bfloat16Speed {
  Bfloat16Measurement measured;
  std::string source;  // "measured now, cached in …" or "cached in …"
};
// The probe's figures for this machine: read from machine_cache_path("cpu-bfloat16.json"), or
// measured and written there under its lock.
Bfloat16Speed cpu_bfloat16_speed();

// One line for logs: "bfloat16 takes 1.82× float32's time on a UNet-shaped convolution and Linear
// (41.2 against 22.6 ms; cached in …)".
std::string describe_bfloat16_speed(const Bfloat16Speed& speed);

}  // namespace anomalysd

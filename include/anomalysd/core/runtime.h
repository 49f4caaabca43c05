// Where and how tensors run: device, dtype, seed and intra-op threads, from the config's
// top-level keys. Applied once at start-up by every command that computes.
#pragma once

#include <cstdint>
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "anomalysd/io/config.h"
#include "anomalysd/models/cpu_bfloat16.h"
#include "anomalysd/models/precision.h"

namespace anomalysd {

// The `precision:` section: each SD part's dtype, auto | float32 | float16 | bfloat16. `auto` follows
// resolve_precision()'s rule for `dtype`; the explicit values are for measuring where half precision
// costs (README, "Half precision").
struct PrecisionConfig {
  std::string text_encoder = "auto";
  std::string unet = "auto";
  std::string vae_encoder = "auto";
  std::string vae_decoder = "auto";
  std::string latents = "auto";
};

struct RuntimeConfig {
  std::string device = "auto";    // auto | cpu | cuda | cuda:N
  std::string dtype = "float32";  // float32 | float16 | bfloat16 | auto (resolved_dtype())
  int64_t seed = 0;
  int64_t threads = 0;  // LibTorch intra-op threads; 0 = all cores (Debian's LibTorch defaults to 1)
  std::string cpu_gemm = "auto";       // auto | onednn | blas: the CPU GEMM of Linear layers (models/cpu_gemm.h)
  std::string attention = "auto";  // auto | sdpa | fused | chunked (models/attention_kernels.h)
  PrecisionConfig precision;

  // Reads the keys `device`, `dtype`, `seed`, `threads`, `cpu_gemm`, `attention` and the
  // `precision:` section of `section`.
  static RuntimeConfig from_config(ConfigSection& section);
};

struct Runtime {
  c10::Device device{c10::kCPU};
  c10::ScalarType dtype = c10::kFloat;
  PipelinePrecision precision;  // resolve_precision(config)
  int threads = 1;
  int64_t seed = 0;
  std::string gemm;  // the CPU GEMM in use and why ("" on CUDA)
};

// Resolves `auto`, checks that the device exists and supports the dtype, sets LibTorch's
// thread count, the CPU GEMM and attention kernel, and seeds its generators. Throws InputError naming the offending key.
Runtime apply_runtime(const RuntimeConfig& config);

// What, beyond the config's method keys, decides the last bits of every number a run computes:
// the device type (auto resolved), dtype, the CPU GEMM actually chosen (auto resolved: measured
// or cached on this machine), the attention kernel (auto resolved for this LibTorch) and the
// LibTorch version. An eval's run hash includes it, so one table never mixes maps made two ways.
std::string numeric_setup(const RuntimeConfig& config);

// Whether this CPU computes bfloat16 natively (x86: AVX512-BF16 or AMX-BF16, from /proc/cpuinfo;
// aarch64: the bf16 feature), and the flags found ("" when none).
std::string cpu_native_bf16();
// The same for float16 (x86: AVX512-FP16 or AMX-FP16; aarch64: fphp).
std::string cpu_native_fp16();

// Why bfloat16 would be slower than float32 on this CPU ("" when it pays): no bfloat16
// instructions, no oneDNN, or the measured probe (cpu_bfloat16_speed(): measured once, cached).
std::string cpu_bfloat16_caveat();

// Whether `device` (auto resolved) is a CUDA device.
bool resolves_to_cuda(const RuntimeConfig& config);

c10::ScalarType parse_run_dtype(const std::string& name);  // float32 | float16 | bfloat16

// The rule of `dtype: auto`, given what it depends on: on CUDA float16 (diffusers' default; the
// latents and the scores stay float32 as for any dtype); on a CPU bfloat16 only where the CPU has
// bfloat16 instructions (`bf16_flags`, cpu_native_bf16()) and the measured probe says they pay
// (bfloat16_pays); else float32. `measured` is null where nothing was measured (no flags, or a
// LibTorch without oneDNN). The reason is one line for the log.
struct AutoDtype {
  std::string dtype;
  std::string reason;
};
AutoDtype decide_auto_dtype(bool cuda, const std::string& bf16_flags, const Bfloat16Speed* measured);

// `dtype` with `auto` resolved on this machine (the CPU probe is measured once and cached, so
// every run here resolves alike); `reason` gets the log line (empty for an explicit dtype).
std::string resolved_dtype(const RuntimeConfig& config, std::string* reason = nullptr);
// `config` with its dtype resolved_dtype()'s.
RuntimeConfig with_resolved_dtype(const RuntimeConfig& config, std::string* reason = nullptr);

// Each SD part's dtype: an explicit `precision.<part>` as written, `auto` as
// PipelinePrecision::for_dtype(dtype) says. Torch-free: `dtype: auto` must be resolved first
// (with_resolved_dtype(); apply_runtime() and numeric_setup() do).
PipelinePrecision resolve_precision(const RuntimeConfig& config);
int default_thread_count();

}  // namespace anomalysd

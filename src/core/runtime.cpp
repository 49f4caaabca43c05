#include "anomalysd/core/runtime.h"


#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include <torch/torch.h>
#include <torch/version.h>
#include <spdlog/spdlog.h>

#include "anomalysd/models/attention_kernels.h"
#include "anomalysd/models/cpu_gemm.h"

namespace anomalysd {

bool resolves_to_cuda(const RuntimeConfig& config) {
  return config.device == "auto" ? torch::cuda::is_available() : torch::Device(config.device).is_cuda();
}

Runtime apply_runtime(const RuntimeConfig& config) {
  Runtime rt;
  if (config.device == "auto") {
    rt.device = torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  } else {
    rt.device = torch::Device(config.device);
    if (rt.device.is_cuda()) {
      if (!torch::cuda::is_available())
        throw InputError("device '" + config.device + "' (key 'device'): CUDA is not available in this LibTorch build or machine; use device: cpu or auto");
      const auto count = static_cast<int>(torch::cuda::device_count());
      if (rt.device.has_index() && rt.device.index() >= count)
        throw InputError("device '" + config.device + "' (key 'device'): only " + std::to_string(count) + " CUDA device(s) present");
      if (!rt.device.has_index()) rt.device = torch::Device(torch::kCUDA, 0);
    }
  }

  rt.threads = config.threads > 0 ? static_cast<int>(config.threads) : default_thread_count();
  torch::set_num_threads(rt.threads);
  // Attention kernel everywhere (sdpa needs LibTorch >= 2); the GEMM choice only matters on the CPU.
  try {
    set_attention_kernel(parse_attention_kernel(config.attention));
  } catch (const InputError& e) {
    throw InputError(std::string("key 'attention': ") + e.what());
  }
  if (rt.device.is_cpu()) {
    const GemmChoice gemm = choose_cpu_gemm(config.cpu_gemm);
    use_cpu_gemm(gemm.backend);
    rt.gemm = gemm_backend_name(gemm.backend) + " (" + gemm.reason + ")";
    spdlog::debug("CPU GEMM: {}", rt.gemm);
  }

  // After the threads and the GEMM: `dtype: auto` may time bfloat16 against float32 with them.
  std::string auto_reason;
  const RuntimeConfig resolved = with_resolved_dtype(config, &auto_reason);
  rt.dtype = parse_run_dtype(resolved.dtype);
  if (!auto_reason.empty()) spdlog::info("dtype auto: {} ({})", precision_name(rt.dtype), auto_reason);
  rt.precision = resolve_precision(resolved);
#if TORCH_VERSION_MAJOR < 2
  if (rt.device.is_cpu() && rt.precision.any(torch::kFloat16))
    throw InputError("float16 (key 'dtype' or 'precision.*': " + rt.precision.describe() + ") on the CPU needs LibTorch >= 2: LibTorch " +
                     TORCH_VERSION + "'s CPU kernels lack half-precision convolution and matmul; use bfloat16 or float32 on the CPU");
#endif
  if (rt.device.is_cpu() && rt.precision.any(torch::kFloat16) && cpu_native_fp16().empty())
    spdlog::warn("float16 on a CPU without native float16 arithmetic (AVX512-FP16 / AMX-FP16) is emulated: 7x slower than float32 on the "
                 "demo here; use bfloat16 (native on this CPU: {}) or float32", cpu_native_bf16().empty() ? "no" : "yes");
  if (rt.device.is_cpu() && rt.precision.any(torch::kBFloat16)) {
    const std::string caveat = cpu_bfloat16_caveat();
    if (!caveat.empty()) spdlog::warn("{}", caveat);
  }
  rt.seed = config.seed;
  torch::manual_seed(static_cast<uint64_t>(rt.seed));
  spdlog::debug("runtime: device {}, dtype {} ({}), {} threads, seed {}", rt.device.str(), precision_name(rt.dtype), rt.precision.describe(), rt.threads,
                rt.seed);
  return rt;
}

namespace {

// Those of `wanted` in the first CPU's flags line of /proc/cpuinfo, space-separated ("" if none).
std::string cpu_flags(const std::vector<std::string>& wanted) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0 && line.rfind("Features", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string out;
    for (std::string w; words >> w;)
      if (std::find(wanted.begin(), wanted.end(), w) != wanted.end()) out += (out.empty() ? "" : " ") + w;
    return out;
  }
  return std::string();
}

}  // namespace

std::string cpu_native_bf16() {
  static const std::string flags = cpu_flags({"avx512_bf16", "amx_bf16", "bf16"});
  return flags;
}

std::string cpu_native_fp16() {
  static const std::string flags = cpu_flags({"avx512_fp16", "amx_fp16", "fphp"});
  return flags;
}

AutoDtype decide_auto_dtype(bool cuda, const std::string& bf16_flags, const Bfloat16Speed* measured) {
  if (cuda) return {"float16", "on CUDA: the SD networks in float16, as diffusers runs them; latents and scores stay float32"};
  if (bf16_flags.empty()) return {"float32", "a CPU without native bfloat16 (no AVX512-BF16 / AMX-BF16): bfloat16 would be emulated"};
  if (measured == nullptr) return {"float32", "a LibTorch without oneDNN (mkldnn): no fast bfloat16 kernels"};
  if (bfloat16_pays(measured->measured)) return {"bfloat16", describe_bfloat16_speed(*measured)};
  return {"float32", "the CPU has bfloat16 instructions (" + bf16_flags + ") but " + describe_bfloat16_speed(*measured) +
                         ", not at most 0.8x"};
}

namespace {

// decide_auto_dtype() on this CPU: its flags, and the probe only where it can decide.
AutoDtype cpu_auto_dtype() {
  const std::string flags = cpu_native_bf16();
  std::optional<Bfloat16Speed> speed;
  if (!flags.empty() && at::hasMKLDNN()) speed = cpu_bfloat16_speed();
  return decide_auto_dtype(false, flags, speed ? &*speed : nullptr);
}

}  // namespace

std::string cpu_bfloat16_caveat() {
  const AutoDtype d = cpu_auto_dtype();
  return d.dtype == "bfloat16" ? "" : "bfloat16 is slower than float32 here, and dtype auto runs float32: " + d.reason;
}

std::string resolved_dtype(const RuntimeConfig& config, std::string* reason) {
  if (reason) reason->clear();
  if (config.dtype != "auto") return config.dtype;
  const AutoDtype d = resolves_to_cuda(config) ? decide_auto_dtype(true, "", nullptr) : cpu_auto_dtype();
  if (reason) *reason = d.reason;
  return d.dtype;
}

RuntimeConfig with_resolved_dtype(const RuntimeConfig& config, std::string* reason) {
  RuntimeConfig c = config;
  c.dtype = resolved_dtype(config, reason);
  return c;
}

std::string numeric_setup(const RuntimeConfig& config) {
  const bool cuda = resolves_to_cuda(config);
  std::string gemm = "-";  // LibTorch's own kernels on CUDA
  if (!cuda) gemm = gemm_backend_name(choose_cpu_gemm(config.cpu_gemm).backend);
  std::string attention = config.attention;
  if (attention == "auto") attention = sdpa_available() ? "auto=sdpa" : "auto=fused/chunked";
  // Each part's precision once any is not float32 (float32 runs keep the identity they had).
  const RuntimeConfig resolved = with_resolved_dtype(config);
  const PipelinePrecision precision = resolve_precision(resolved);
  const std::string parts = precision.all_float32() ? "" : " precision=(" + precision.describe() + ")";
  // `auto` as resolved: an auto run and one naming its dtype compute alike, and share an identity.
  return std::string("device=") + (cuda ? "cuda" : "cpu") + " dtype=" + resolved.dtype + parts + " cpu_gemm=" + gemm + " attention=" + attention +
         " libtorch=" + TORCH_VERSION;
}

}  // namespace anomalysd

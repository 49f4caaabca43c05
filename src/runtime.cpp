#include "anomalysd/runtime.h"

#include <regex>
#include <thread>

#include <torch/torch.h>
#include <spdlog/spdlog.h>

namespace anomalysd {

RuntimeConfig RuntimeConfig::from_config(ConfigSection& section) {
  RuntimeConfig c;
  c.device = section.get_string("device", c.device);
  static const std::regex kDevice(R"(auto|cpu|cuda(:[0-9]+)?)");
  if (!std::regex_match(c.device, kDevice))
    throw section.error("device", "key 'device' = '" + c.device + "' is not one of: auto, cpu, cuda, cuda:N");
  c.dtype = section.get_choice("dtype", c.dtype, {"float32", "float16", "bfloat16"});
  c.seed = section.get_int("seed", c.seed, 0, std::numeric_limits<int64_t>::max());
  c.threads = section.get_int("threads", c.threads, 0, 1024);
  return c;
}

c10::ScalarType parse_run_dtype(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "float16") return torch::kFloat16;
  if (name == "bfloat16") return torch::kBFloat16;
  throw InputError("dtype '" + name + "' is not one of: float32, float16, bfloat16");
}

int default_thread_count() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
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

  rt.dtype = parse_run_dtype(config.dtype);
  if (rt.device.is_cpu() && rt.dtype == torch::kFloat16)
    throw InputError("dtype 'float16' (key 'dtype') needs a CUDA device: LibTorch's CPU kernels lack half-precision matmul; use float32 on CPU");
  if (rt.device.is_cpu() && rt.dtype == torch::kBFloat16)
    spdlog::warn("dtype bfloat16 on CPU is much slower than float32 on most CPUs");

  rt.threads = config.threads > 0 ? static_cast<int>(config.threads) : default_thread_count();
  torch::set_num_threads(rt.threads);
  rt.seed = config.seed;
  torch::manual_seed(static_cast<uint64_t>(rt.seed));
  spdlog::debug("runtime: device {}, dtype {}, {} threads, seed {}", rt.device.str(), config.dtype, rt.threads, rt.seed);
  return rt;
}

}  // namespace anomalysd

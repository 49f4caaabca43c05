// The per-machine choice of the CPU GEMM: measured once, cached, or forced by `cpu_gemm`.
#include <optional>

#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <torch/version.h>

#include "anomalysd/io/errors.h"
#include "anomalysd/models/cpu_gemm.h"
#include "anomalysd/util/blas_probe.h"
#include "machine_cache.h"

namespace anomalysd {

namespace {

std::string backend_key(GemmBackend backend) { return backend == GemmBackend::OneDnn ? "onednn" : "blas"; }

std::string figures(const GemmMeasurement& m) {
  return "oneDNN " + std::to_string(static_cast<int>(m.onednn_gflops)) + " GFLOP/s, BLAS " +
         std::to_string(static_cast<int>(m.blas_gflops));
}

// A cache entry's choice, when it names a backend.
std::optional<GemmChoice> cached_choice(const nlohmann::json& entry) {
  if (!entry.is_object()) return std::nullopt;
  const std::string backend = entry.value("backend", "");
  if (backend != "onednn" && backend != "blas") return std::nullopt;
  GemmChoice c;
  c.backend = backend == "onednn" ? GemmBackend::OneDnn : GemmBackend::Blas;
  c.measured = {entry.value("onednn_gflops", 0.0), entry.value("blas_gflops", 0.0)};
  return c;
}
}  // namespace

std::string gemm_cache_path() { return machine_cache_path("cpu-gemm.json"); }

GemmMeasurement measure_cpu_gemm() {
  torch::NoGradGuard no_grad;
  const GemmBackend before = cpu_gemm();
  const torch::Tensor x = torch::randn({1024, 640}), w = torch::randn({1280, 640}), b = torch::randn({1280});
  const double flops = 2.0 * 1024 * 640 * 1280;
  GemmMeasurement m;
  use_cpu_gemm(GemmBackend::Blas);
  m.blas_gflops = flops / best_seconds([&] { return linear(x, w, b); }, 5) / 1e9;
  if (at::hasMKLDNN()) {
    use_cpu_gemm(GemmBackend::OneDnn);
    m.onednn_gflops = flops / best_seconds([&] { return linear(x, w, b); }, 5) / 1e9;
  }
  use_cpu_gemm(before);
  return m;
}

GemmChoice choose_cpu_gemm(const std::string& setting) {
  GemmChoice c;
  if (setting == "blas") {
    c.backend = GemmBackend::Blas;
    c.reason = "forced by cpu_gemm: blas";
    return c;
  }
  if (setting == "onednn") {
    if (!at::hasMKLDNN()) throw InputError("cpu_gemm: onednn: this LibTorch build has no oneDNN (mkldnn); use auto or blas");
    c.backend = GemmBackend::OneDnn;
    c.reason = "forced by cpu_gemm: onednn";
    return c;
  }
  if (setting != "auto") throw InputError("cpu_gemm '" + setting + "' is not one of: auto, onednn, blas");
  if (!at::hasMKLDNN()) {
    c.backend = GemmBackend::Blas;
    c.reason = "auto: this LibTorch build has no oneDNN";
    return c;
  }
  // The machine's identity: a new CPU, BLAS build or LibTorch measures afresh. Not the thread
  // count: the backend changes a run's last bits, the thread count must only change its speed (a
  // run resumed with another thread count is accepted), so every thread count shares one choice.
  const std::string key = cpu_model_name() + " | " + loaded_blas() + " | LibTorch " + TORCH_VERSION;
  auto valid = [](const nlohmann::json& e) { return cached_choice(e).has_value(); };
  auto measure = [] {
    const GemmMeasurement m = measure_cpu_gemm();
    // oneDNN costs two layout copies per call: it must win clearly to be worth it.
    const GemmBackend backend = m.onednn_gflops > 1.15 * m.blas_gflops ? GemmBackend::OneDnn : GemmBackend::Blas;
    return nlohmann::json{{"backend", backend_key(backend)}, {"onednn_gflops", m.onednn_gflops}, {"blas_gflops", m.blas_gflops}};
  };
  const MachineEntry entry = measured_once("cpu-gemm.json", key, "the CPU GEMM choice", valid, measure,
                                           " — set cpu_gemm: onednn or blas to keep runs identical");
  c = *cached_choice(entry.value);
  const std::string cached = entry.cached_in.empty() ? "" : "cached in " + entry.cached_in;
  c.reason = entry.measured_now ? "auto: measured now (" + figures(c.measured) + ")" + (cached.empty() ? "" : ", " + cached)
                                : "auto: measured once on this machine (" + figures(c.measured) + "), " + cached;
  return c;
}

}  // namespace anomalysd

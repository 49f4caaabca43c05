// The per-machine choice of the CPU GEMM: measured once, cached, or forced by `cpu_gemm`.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
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

// The cache's entry for `key`, when it names a backend.
std::optional<GemmChoice> cached_choice(const nlohmann::json& cache, const std::string& key) {
  const auto it = cache.find(key);
  if (it == cache.end() || !it->is_object()) return std::nullopt;
  const std::string backend = it->value("backend", "");
  if (backend != "onednn" && backend != "blas") return std::nullopt;
  GemmChoice c;
  c.backend = backend == "onednn" ? GemmBackend::OneDnn : GemmBackend::Blas;
  c.measured = {it->value("onednn_gflops", 0.0), it->value("blas_gflops", 0.0)};
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
  const std::string path = gemm_cache_path();
  // Every process on this machine must make the same choice (it is part of each run's identity,
  // and a resumed run refuses another): the first to measure writes the cache while holding its
  // lock, and the others wait for it and read its entry instead of measuring concurrently.
  std::optional<FileLock> lock;
  if (!path.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    lock.emplace(path + ".lock");
  }
  nlohmann::json cache = !path.empty() && std::filesystem::exists(path) ? read_machine_cache(path, "the CPU GEMM") : nlohmann::json::object();
  if (const auto cached = cached_choice(cache, key)) {
    c = *cached;
    c.reason = "auto: measured once on this machine (" + figures(c.measured) + "), cached in " + path;
    return c;
  }
  c.measured = measure_cpu_gemm();
  // oneDNN costs two layout copies per call: it must win clearly to be worth it.
  c.backend = c.measured.onednn_gflops > 1.15 * c.measured.blas_gflops ? GemmBackend::OneDnn : GemmBackend::Blas;
  c.reason = "auto: measured now (" + figures(c.measured) + ")";
  if (!path.empty()) {
    try {
      cache[key] = {{"backend", backend_key(c.backend)},
                    {"onednn_gflops", c.measured.onednn_gflops},
                    {"blas_gflops", c.measured.blas_gflops}};
      write_file_atomically(path, json_text(cache));
      c.reason += ", cached in " + path;
    } catch (const std::exception& e) {
      spdlog::warn("could not write the CPU GEMM choice to {} ({}); it is measured again next run — set cpu_gemm: onednn or blas "
                   "to keep runs identical",
                   path, e.what());
    }
  }
  return c;
}

}  // namespace anomalysd

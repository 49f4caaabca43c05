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

namespace anomalysd {

namespace {
std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, name, model;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    key.erase(key.find_last_not_of(" \t") + 1);
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "model name" && name.empty()) name = value;
    if (key == "model" && model.empty()) model = value;  // the model number tells Xeon generations apart
    if (!name.empty() && !model.empty()) break;
  }
  return (name.empty() ? "unknown CPU" : name) + (model.empty() ? "" : " (model " + model + ")");
}

// Seconds of the best of `repeats` runs after one warm-up.
template <class F>
double best_seconds(F&& run, int repeats) {
  run();
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}
// The cache file's entries; an unreadable or foreign file reads as empty (it is rewritten).
nlohmann::json read_cache(const std::string& path, bool warn) {
  try {
    nlohmann::json cache = read_json_file(path);
    if (cache.is_object()) return cache;
    if (warn) spdlog::warn("{} is not a JSON object; measuring the CPU GEMM again and rewriting it", path);
  } catch (const std::exception& e) {
    if (warn) spdlog::warn("{} is unreadable ({}); measuring the CPU GEMM again and rewriting it", path, e.what());
  }
  return nlohmann::json::object();
}

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

std::string gemm_cache_path() {
  namespace fs = std::filesystem;
  fs::path dir;
  if (const char* d = std::getenv("ANOMALYSD_CACHE_DIR"); d && *d)
    dir = d;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    dir = fs::path(x) / "anomalysd";
  else if (const char* h = std::getenv("HOME"); h && *h)
    dir = fs::path(h) / ".cache" / "anomalysd";
  else
    return "";
  return (dir / "cpu-gemm.json").string();
}

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
  nlohmann::json cache = !path.empty() && std::filesystem::exists(path) ? read_cache(path, /*warn=*/true) : nlohmann::json::object();
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

// What the per-machine measurements (the CPU GEMM choice, bfloat16's speed) share: the cache
// folder, the CPU's name that keys an entry, the read that forgives a corrupt file, and the timer.
// Internal to src/models.
#pragma once

#include <algorithm>
#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

namespace anomalysd {

// $ANOMALYSD_CACHE_DIR/<file>, else $XDG_CACHE_HOME/anomalysd/<file>, else ~/.cache/anomalysd/<file>
// ("" when none of them is set).
std::string machine_cache_path(const std::string& file);

// /proc/cpuinfo's model name and model number ("unknown CPU" when absent).
std::string cpu_model_name();

// The cache file's entries; an unreadable or foreign file reads as empty, with a warning that
// `what` is measured again (the file is then rewritten).
nlohmann::json read_machine_cache(const std::string& path, const std::string& what);

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

}  // namespace anomalysd

#include <functional>

namespace anomalysd {

// The entry `key` of the cache file machine_cache_path(file) when `valid` accepts it; else
// measure(), written there under the file's lock (concurrent first runs measure once and agree).
// `where` says which ("measured now, cached in …" or "cached in …"). A file that cannot be written
// only costs a measurement next time (a warning says so).
nlohmann::json measured_once(const std::string& file, const std::string& key, const std::string& what,
                             const std::function<bool(const nlohmann::json&)>& valid, const std::function<nlohmann::json()>& measure,
                             std::string* where);

}  // namespace anomalysd

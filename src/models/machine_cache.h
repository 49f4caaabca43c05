// What the per-machine measurements (the CPU GEMM choice, bfloat16's speed) share: the cache
// folder, the CPU's name that keys an entry, the read that forgives a corrupt file, the
// measure-once-under-a-lock, and the timer. Internal to src/models.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
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

struct MachineEntry {
  nlohmann::json value;
  bool measured_now = false;
  std::string cached_in;  // the cache file holding it ("" when none could be written)
};

// The entry `key` of the cache file machine_cache_path(file) when `valid` accepts it; else
// measure(), written there. Every process on a machine must agree (the result is part of each
// run's identity, and a resumed run refuses another), so the first to measure writes the file
// while holding its lock, and the others wait for it and read its entry instead of measuring
// concurrently. A file that cannot be written only costs a measurement next time: a warning says
// so, followed by `unwritten_hint`.
MachineEntry measured_once(const std::string& file, const std::string& key, const std::string& what,
                           const std::function<bool(const nlohmann::json&)>& valid, const std::function<nlohmann::json()>& measure,
                           const std::string& unwritten_hint = "");

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

#include "machine_cache.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include <spdlog/spdlog.h>

#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/json_file.h"

namespace anomalysd {

std::string machine_cache_path(const std::string& file) {
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
  return (dir / file).string();
}

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

nlohmann::json read_machine_cache(const std::string& path, const std::string& what) {
  try {
    nlohmann::json cache = read_json_file(path);
    if (cache.is_object()) return cache;
    spdlog::warn("{} is not a JSON object; measuring {} again and rewriting it", path, what);
  } catch (const std::exception& e) {
    spdlog::warn("{} is unreadable ({}); measuring {} again and rewriting it", path, e.what(), what);
  }
  return nlohmann::json::object();
}

MachineEntry measured_once(const std::string& file, const std::string& key, const std::string& what,
                           const std::function<bool(const nlohmann::json&)>& valid, const std::function<nlohmann::json()>& measure,
                           const std::string& unwritten_hint) {
  const std::string path = machine_cache_path(file);
  std::optional<FileLock> lock;
  if (!path.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    lock.emplace(path + ".lock");
  }
  nlohmann::json cache = !path.empty() && std::filesystem::exists(path) ? read_machine_cache(path, what) : nlohmann::json::object();
  if (const auto it = cache.find(key); it != cache.end() && valid(*it)) return {*it, false, path};
  MachineEntry entry{measure(), true, ""};
  if (path.empty()) return entry;
  try {
    cache[key] = entry.value;
    write_file_atomically(path, json_text(cache));
    entry.cached_in = path;
  } catch (const std::exception& e) {
    spdlog::warn("could not write {} to {} ({}); it is measured again next run{}", what, path, e.what(), unwritten_hint);
  }
  return entry;
}

}  // namespace anomalysd

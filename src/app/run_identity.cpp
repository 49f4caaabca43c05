#include "anomalysd/app/run_identity.h"

#include <algorithm>
#include <set>
#include <sstream>

#include "anomalysd/data/image_io.h"
#include "anomalysd/util/hash.h"

namespace anomalysd {

nlohmann::json config_identity(AppConfig c) {
  const std::string numeric = numeric_setup(c.runtime);
  c.runtime.dtype = resolved_dtype(c.runtime);  // `auto` as resolved (before `device` is blanked): it computes what the named dtype does
  c.runtime.device = "-";
  c.runtime.threads = 0;
  c.runtime.cpu_gemm = c.runtime.attention = "-";  // in `numeric`, resolved
  c.distributed = DistributedConfig();              // how many processes share a run changes no map
  c.source.clear();
  return {{"config", c.to_yaml()}, {"numeric_setup", numeric}};
}

namespace {

std::string short_value(const nlohmann::json& v) {
  std::string s = v.is_string() ? v.get<std::string>() : v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

}  // namespace

std::string identity_differences(const nlohmann::json& before, const nlohmann::json& now) {
  if (!before.is_object()) return "";
  std::vector<std::string> out;
  for (const auto& [key, value] : now.items())
    if (!before.contains(key) || before[key] != value) {
      if (key == "config" && before.contains(key) && before[key].is_object() && value.is_object()) {
        if (before[key].value("numeric_setup", "") != value.value("numeric_setup", ""))
          out.push_back("numeric setup '" + before[key].value("numeric_setup", "") + "' -> '" + value.value("numeric_setup", "") + "'");
        // The YAML lines that changed, e.g. "mask_batch: 4" (the config is one key per line).
        std::set<std::string> old_lines;
        std::istringstream a(before[key].value("config", "")), b(value.value("config", ""));
        for (std::string line; std::getline(a, line);) old_lines.insert(line);
        for (std::string line; std::getline(b, line);)
          if (!old_lines.count(line)) {
            const auto first = line.find_first_not_of(' ');
            out.push_back("'" + (first == std::string::npos ? line : line.substr(first)) + "'");
          }
      } else if (before.contains(key) && (value.is_string() || value.is_number()) && (before[key].is_string() || before[key].is_number())) {
        out.push_back(key + " '" + short_value(before[key]) + "' -> '" + short_value(value) + "'");
      } else {
        out.push_back(key);
      }
    }
  std::string s;
  for (std::size_t i = 0; i < out.size(); ++i) s += (i ? ", " : "") + out[i];
  return s;
}

std::vector<std::string> image_set_identity(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) out.push_back(hex(pixel_hash(read_rgb_float(p))));
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace anomalysd

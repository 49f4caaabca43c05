// The YAML config loader with --set overrides: the input is a config file, then (after a line
// "---set---") one override per line; the whole config is bound and printed.
#include "anomalysd/core/app_config.h"
#include "anomalysd/io/config.h"
#include "anomalysd/io/errors.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto parts = anomalysd::fuzz::split_input(data, size, "\n---set---\n", 2);
  try {
    anomalysd::ConfigSource source = anomalysd::parse_config_text(parts[0], "fuzz.yaml");
    std::vector<std::string> overrides;
    std::size_t start = 0;
    while (start < parts[1].size()) {
      const auto end = parts[1].find('\n', start);
      overrides.push_back(parts[1].substr(start, end == std::string::npos ? std::string::npos : end - start));
      if (end == std::string::npos) break;
      start = end + 1;
    }
    anomalysd::apply_overrides(source, overrides);
    const anomalysd::AppConfig c = anomalysd::AppConfig::from_source(source);
    // What `config` prints must read back to the same config.
    const anomalysd::AppConfig again = anomalysd::AppConfig::from_source(anomalysd::parse_config_text(c.to_yaml(), "printed"));
    if (again.to_yaml() != c.to_yaml()) __builtin_trap();
  } catch (const anomalysd::InputError&) {
  }
  return 0;
}

// YAML configs bound to typed structs. A ConfigSection hands out values by key, checking type and
// range, and remembers which keys were read; finish() then rejects every key nobody asked for.
// Errors name "file:line:col" (1-based) or the "--set key=value" that supplied the value.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "anomalysd/io/errors.h"

namespace anomalysd {

// A parsed config document plus the command-line overrides applied to it.
struct ConfigSource {
  YAML::Node root;
  std::string name;                              // file path, or "<embedded>"
  std::map<std::string, std::string> overrides;  // "a.b.c" -> "--set a.b.c=value"
};

ConfigSource load_config_file(const std::string& path);
ConfigSource parse_config_text(const std::string& text, const std::string& name);

// Applies "a.b.c=value"; the value is parsed as YAML ("3", "[1, 2]", "cuda:0", "true").
// Creates missing mappings on the way; unknown keys are caught later, when the config is bound.
void apply_override(ConfigSource& source, const std::string& assignment);
void apply_overrides(ConfigSource& source, const std::vector<std::string>& assignments);

class ConfigSection {
 public:
  ConfigSection(const ConfigSource& source, YAML::Node node, std::string prefix);
  static ConfigSection root(const ConfigSource& source);

  bool has(const std::string& key) const;

  bool get_bool(const std::string& key, bool fallback);
  int64_t get_int(const std::string& key, int64_t fallback, int64_t min, int64_t max);
  double get_double(const std::string& key, double fallback, double min, double max);
  std::string get_string(const std::string& key, const std::string& fallback);
  std::string require_string(const std::string& key);
  // One of `choices`; the error lists them.
  std::string get_choice(const std::string& key, const std::string& fallback, const std::vector<std::string>& choices);
  std::vector<int64_t> get_int_list(const std::string& key, const std::vector<int64_t>& fallback, int64_t min, int64_t max);
  std::vector<double> get_double_list(const std::string& key, const std::vector<double>& fallback, double min, double max);
  std::vector<std::string> get_string_list(const std::string& key, const std::vector<std::string>& fallback);
  // A mapping of names to numbers (e.g. per-class values); empty when absent.
  std::map<std::string, double> get_double_map(const std::string& key, double min, double max);

  // A nested mapping; empty (all defaults) when absent.
  ConfigSection section(const std::string& key);

  // Throws ConfigError for the first key that was never read.
  void finish() const;

  // "file:line:col" of `key` (or of this section when key is empty), or its "--set ..." origin.
  std::string where(const std::string& key = "") const;
  ConfigError error(const std::string& key, const std::string& message) const;
  std::string full_key(const std::string& key) const;

 private:
  YAML::Node value_node(const std::string& key);  // marks the key as read
  template <typename T>
  T convert(const YAML::Node& node, const std::string& key, const char* expected) const;

  const ConfigSource* source_;
  YAML::Node node_;
  std::string prefix_;
  std::vector<std::string> read_keys_;
};

}  // namespace anomalysd

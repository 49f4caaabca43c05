// Strict reader for a checkpoint's own config.json (diffusers / transformers). Values are read by
// key; keys starting with '_' are metadata and ignored; keys for features we do not implement are
// accepted only at their default value; any other key never read is an error naming file and key.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace anomalysd {

class JsonConfig {
 public:
  static JsonConfig load(const std::string& path);
  JsonConfig(nlohmann::json json, std::string path);

  const std::string& path() const { return path_; }
  bool has(const std::string& key) const;  // present and not null

  int64_t get_int(const std::string& key, int64_t fallback);
  double get_double(const std::string& key, double fallback);
  bool get_bool(const std::string& key, bool fallback);
  std::string get_string(const std::string& key, const std::string& fallback);
  std::vector<int64_t> require_int_list(const std::string& key);
  std::vector<std::string> require_string_list(const std::string& key);
  // An int or a list of ints (diffusers' attention_head_dim, layers_per_block): always `count` entries.
  std::vector<int64_t> get_int_per_block(const std::string& key, std::size_t count, int64_t fallback);
  std::vector<double> get_double_list(const std::string& key, const std::vector<double>& fallback);

  // A feature we do not implement: accepted when absent or equal to `expected`, else an error.
  void expect(const std::string& key, const nlohmann::json& expected);
  // Informational keys that carry no meaning for the model (transformers' bos_token_id, ...).
  void ignore(const std::vector<std::string>& keys);
  // Every key that was neither read nor ignored is an error.
  void finish() const;

  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

 private:
  const nlohmann::json* value(const std::string& key);

  nlohmann::json json_;
  std::string path_;
  std::set<std::string> used_;
};

}  // namespace anomalysd

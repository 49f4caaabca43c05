#include "anomalysd/models/json_config.h"

#include <fstream>

#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"

namespace anomalysd {

JsonConfig JsonConfig::load(const std::string& path) {
  nlohmann::json j = read_json_file(path);
  if (!j.is_object()) throw FormatError(path, "config is not a JSON object");
  return JsonConfig(std::move(j), path);
}

JsonConfig::JsonConfig(nlohmann::json json, std::string path) : json_(std::move(json)), path_(std::move(path)) {}

void JsonConfig::fail(const std::string& key, const std::string& message) const {
  throw FormatError(path_, "'" + key + "': " + message);
}

bool JsonConfig::has(const std::string& key) const { return json_.contains(key) && !json_[key].is_null(); }

const nlohmann::json* JsonConfig::value(const std::string& key) {
  used_.insert(key);
  if (!has(key)) return nullptr;
  return &json_[key];
}

int64_t JsonConfig::get_int(const std::string& key, int64_t fallback) {
  const auto* v = value(key);
  if (!v) return fallback;
  if (!v->is_number_integer()) fail(key, "expected an integer, got " + v->dump());
  return v->get<int64_t>();
}

double JsonConfig::get_double(const std::string& key, double fallback) {
  const auto* v = value(key);
  if (!v) return fallback;
  if (!v->is_number()) fail(key, "expected a number, got " + v->dump());
  return v->get<double>();
}

bool JsonConfig::get_bool(const std::string& key, bool fallback) {
  const auto* v = value(key);
  if (!v) return fallback;
  if (!v->is_boolean()) fail(key, "expected true or false, got " + v->dump());
  return v->get<bool>();
}

std::string JsonConfig::get_string(const std::string& key, const std::string& fallback) {
  const auto* v = value(key);
  if (!v) return fallback;
  if (!v->is_string()) fail(key, "expected a string, got " + v->dump());
  return v->get<std::string>();
}

std::vector<int64_t> JsonConfig::require_int_list(const std::string& key) {
  const auto* v = value(key);
  if (!v) fail(key, "required key is missing");
  if (!v->is_array() || v->empty()) fail(key, "expected a non-empty list of integers, got " + v->dump());
  std::vector<int64_t> out;
  for (const auto& x : *v) {
    if (!x.is_number_integer()) fail(key, "expected a list of integers, got " + v->dump());
    out.push_back(x.get<int64_t>());
  }
  return out;
}

std::vector<std::string> JsonConfig::require_string_list(const std::string& key) {
  const auto* v = value(key);
  if (!v) fail(key, "required key is missing");
  if (!v->is_array() || v->empty()) fail(key, "expected a non-empty list of strings, got " + v->dump());
  std::vector<std::string> out;
  for (const auto& x : *v) {
    if (!x.is_string()) fail(key, "expected a list of strings, got " + v->dump());
    out.push_back(x.get<std::string>());
  }
  return out;
}

std::vector<int64_t> JsonConfig::get_int_per_block(const std::string& key, std::size_t count, int64_t fallback) {
  const auto* v = value(key);
  if (!v) return std::vector<int64_t>(count, fallback);
  if (v->is_number_integer()) return std::vector<int64_t>(count, v->get<int64_t>());
  if (!v->is_array() || v->size() != count)
    fail(key, "expected an integer or a list of " + std::to_string(count) + " integers (one per block), got " + v->dump());
  std::vector<int64_t> out;
  for (const auto& x : *v) {
    if (!x.is_number_integer()) fail(key, "expected integers, got " + v->dump());
    out.push_back(x.get<int64_t>());
  }
  return out;
}

std::vector<double> JsonConfig::get_double_list(const std::string& key, const std::vector<double>& fallback) {
  const auto* v = value(key);
  if (!v) return fallback;
  if (!v->is_array()) fail(key, "expected a list of numbers, got " + v->dump());
  std::vector<double> out;
  for (const auto& x : *v) {
    if (!x.is_number()) fail(key, "expected a list of numbers, got " + v->dump());
    out.push_back(x.get<double>());
  }
  return out;
}

void JsonConfig::expect(const std::string& key, const nlohmann::json& expected) {
  used_.insert(key);
  if (!json_.contains(key)) return;
  const nlohmann::json& v = json_[key];
  const bool same = v == expected || (v.is_number() && expected.is_number() && v.get<double>() == expected.get<double>());
  if (!same) fail(key, "value " + v.dump() + " is not supported (only " + expected.dump() + ")");
}

void JsonConfig::ignore(const std::vector<std::string>& keys) { used_.insert(keys.begin(), keys.end()); }

void JsonConfig::finish() const {
  for (const auto& [key, v] : json_.items()) {
    if (key.empty() || key[0] == '_' || used_.count(key)) continue;
    throw FormatError(path_, "unknown key '" + key + "' (a newer or different model family?)");
  }
}

}  // namespace anomalysd

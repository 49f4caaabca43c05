#include "anomalysd/io/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

namespace anomalysd {

namespace {

std::string mark_text(const std::string& name, const YAML::Mark& mark) {
  if (mark.is_null()) return name;
  return name + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

std::string scalar_text(const YAML::Node& node) {
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "nothing";
}

// Offset of the first byte that is not part of well-formed UTF-8, or npos. yaml-cpp stops reading
// at such bytes without an error: the rest of the file would silently take its defaults.
std::size_t invalid_utf8(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return i;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (std::size_t k = 1; k < n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 0x2) return i;
      cp = (cp << 6) | (d & 0x3F);
    }
    // overlong forms, surrogates, beyond U+10FFFF
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
      return i;
    i += n;
  }
  return std::string::npos;
}

std::string position_of(const std::string& text, std::size_t offset) {
  std::size_t line = 1, col = 1;
  for (std::size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return std::to_string(line) + ":" + std::to_string(col);
}

ConfigSource parse(const std::string& text, const std::string& name) {
  ConfigSource source;
  source.name = name;
  if (const std::size_t bad = invalid_utf8(text); bad != std::string::npos)
    throw ConfigError(name + ":" + position_of(text, bad), "", "invalid UTF-8 (a YAML config must be UTF-8 text)");
  try {
    source.root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(mark_text(name, e.mark), "", "invalid YAML: " + e.msg);
  }
  if (source.root.IsNull()) source.root = YAML::Node(YAML::NodeType::Map);
  if (!source.root.IsMap()) throw ConfigError(name, "", "a config must be a mapping of keys to values");
  return source;
}

}  // namespace

ConfigSource load_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError(path, "cannot open config file");
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

ConfigSource parse_config_text(const std::string& text, const std::string& name) { return parse(text, name); }

void apply_override(ConfigSource& source, const std::string& assignment) {
  const std::string origin = "--set " + assignment;
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) throw ConfigError(origin, "", "expected --set key.path=value");
  const std::string key = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);
  if (invalid_utf8(assignment) != std::string::npos) throw ConfigError(origin, "", "invalid UTF-8 in the override");

  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) {
    if (part.empty()) throw ConfigError(origin, key, "empty component in key '" + key + "'");
    parts.push_back(part);
  }
  if (key.back() == '.') throw ConfigError(origin, key, "empty component in key '" + key + "'");

  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(origin, key, "value is not valid YAML: " + e.msg);
  }

  // yaml-cpp nodes are references: `node = other` would overwrite content, so walk with reset().
  YAML::Node current;
  current.reset(source.root);
  std::string walked;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    walked += (walked.empty() ? "" : ".") + parts[i];
    YAML::Node next = current[parts[i]];
    if (next.IsDefined() && !next.IsNull() && !next.IsMap())
      throw ConfigError(origin, key, "'" + walked + "' is a value, not a section");
    if (!next.IsDefined() || next.IsNull()) {
      current[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = current[parts[i]];
    }
    current.reset(next);
  }
  current[parts.back()] = parsed;
  source.overrides[key] = origin;
}

void apply_overrides(ConfigSource& source, const std::vector<std::string>& assignments) {
  for (const auto& a : assignments) apply_override(source, a);
}

ConfigSection::ConfigSection(const ConfigSource& source, YAML::Node node, std::string prefix)
    : source_(&source), prefix_(std::move(prefix)) {
  node_.reset(node);
  if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap())
    throw ConfigError(where(), prefix_, "'" + prefix_ + "' must be a mapping of keys, got " + scalar_text(node_));
}

ConfigSection ConfigSection::root(const ConfigSource& source) { return ConfigSection(source, source.root, ""); }

std::string ConfigSection::full_key(const std::string& key) const {
  if (prefix_.empty()) return key;
  if (key.empty()) return prefix_;
  return prefix_ + "." + key;
}

std::string ConfigSection::where(const std::string& key) const {
  const std::string full = full_key(key);
  // An override of this key, of a key below it, or of a section above it supplied the value.
  for (const auto& [k, origin] : source_->overrides)
    if (k.size() > full.size() && k.compare(0, full.size() + 1, full + ".") == 0) return origin;
  for (std::string k = full; !k.empty();) {
    const auto it = source_->overrides.find(k);
    if (it != source_->overrides.end()) return it->second;
    const auto dot = k.rfind('.');
    if (dot == std::string::npos) break;
    k = k.substr(0, dot);
  }
  if (!key.empty() && node_.IsMap()) {
    for (auto it = node_.begin(); it != node_.end(); ++it)
      if (it->first.Scalar() == key) return mark_text(source_->name, it->second.Mark());
  }
  return mark_text(source_->name, node_.Mark());
}

ConfigError ConfigSection::error(const std::string& key, const std::string& message) const {
  return ConfigError(where(key), full_key(key), message);
}

bool ConfigSection::has(const std::string& key) const {
  return node_.IsMap() && node_[key].IsDefined() && !node_[key].IsNull();
}

YAML::Node ConfigSection::value_node(const std::string& key) {
  read_keys_.push_back(key);
  if (!node_.IsMap()) return YAML::Node();
  const YAML::Node& map = node_;
  return map[key];
}

template <typename T>
T ConfigSection::convert(const YAML::Node& node, const std::string& key, const char* expected) const {
  if (!node.IsScalar()) throw error(key, "key '" + full_key(key) + "' must be " + expected + ", got " + scalar_text(node));
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    throw error(key, "key '" + full_key(key) + "' must be " + expected + ", got " + scalar_text(node));
  }
}

bool ConfigSection::get_bool(const std::string& key, bool fallback) {
  const YAML::Node n = value_node(key);
  if (!n.IsDefined() || n.IsNull()) return fallback;
  return convert<bool>(n, key, "true or false");
}

int64_t ConfigSection::get_int(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  const YAML::Node n = value_node(key);
  if (!n.IsDefined() || n.IsNull()) return fallback;
  const int64_t v = convert<int64_t>(n, key, "an integer");
  if (v < min || v > max)
    throw error(key, "key '" + full_key(key) + "' = " + std::to_string(v) + " is out of range [" + std::to_string(min) +
                         ", " + std::to_string(max) + "]");
  return v;
}

namespace {
std::string number_text(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}
}  // namespace

double ConfigSection::get_double(const std::string& key, double fallback, double min, double max) {
  const YAML::Node n = value_node(key);
  if (!n.IsDefined() || n.IsNull()) return fallback;
  const double v = convert<double>(n, key, "a number");
  if (!std::isfinite(v)) throw error(key, "key '" + full_key(key) + "' must be a finite number, got " + scalar_text(n));
  if (v < min || v > max)
    throw error(key, "key '" + full_key(key) + "' = " + number_text(v) + " is out of range [" + number_text(min) + ", " +
                         number_text(max) + "]");
  return v;
}

std::string ConfigSection::get_string(const std::string& key, const std::string& fallback) {
  const YAML::Node n = value_node(key);
  if (!n.IsDefined() || n.IsNull()) return fallback;
  return convert<std::string>(n, key, "a string");
}

std::string ConfigSection::require_string(const std::string& key) {
  const YAML::Node n = value_node(key);
  if (!n.IsDefined() || n.IsNull()) throw error("", "required key '" + full_key(key) + "' is missing");
  return convert<std::string>(n, key, "a string");
}

std::string ConfigSection::get_choice(const std::string& key, const std::string& fallback,
                                      const std::vector<std::string>& choices) {
  const std::string v = get_string(key, fallback);
  if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
    throw error(key, "key '" + full_key(key) + "' = '" + v + "' is not one of: " + list);
  }
  return v;
}

namespace {
template <typename T, typename Convert>
std::vector<T> read_list(const YAML::Node& n, const std::vector<T>& fallback, Convert&& one) {
  if (!n.IsDefined() || n.IsNull()) return fallback;
  std::vector<T> out;
  if (n.IsScalar()) {  // a single value stands for a one-element list
    out.push_back(one(n));
    return out;
  }
  for (const auto& item : n) out.push_back(one(item));
  return out;
}
}  // namespace

std::vector<int64_t> ConfigSection::get_int_list(const std::string& key, const std::vector<int64_t>& fallback,
                                                 int64_t min, int64_t max) {
  const YAML::Node n = value_node(key);
  if (n.IsDefined() && n.IsMap()) throw error(key, "key '" + full_key(key) + "' must be a list of integers, got a mapping");
  return read_list<int64_t>(n, fallback, [&](const YAML::Node& item) {
    const int64_t v = convert<int64_t>(item, key, "a list of integers");
    if (v < min || v > max)
      throw error(key, "key '" + full_key(key) + "' holds " + std::to_string(v) + ", out of range [" +
                           std::to_string(min) + ", " + std::to_string(max) + "]");
    return v;
  });
}

std::vector<double> ConfigSection::get_double_list(const std::string& key, const std::vector<double>& fallback,
                                                   double min, double max) {
  const YAML::Node n = value_node(key);
  if (n.IsDefined() && n.IsMap()) throw error(key, "key '" + full_key(key) + "' must be a list of numbers, got a mapping");
  return read_list<double>(n, fallback, [&](const YAML::Node& item) {
    const double v = convert<double>(item, key, "a list of numbers");
    if (!std::isfinite(v) || v < min || v > max)
      throw error(key, "key '" + full_key(key) + "' holds " + number_text(v) + ", out of range [" + number_text(min) +
                           ", " + number_text(max) + "]");
    return v;
  });
}

std::vector<std::string> ConfigSection::get_string_list(const std::string& key,
                                                        const std::vector<std::string>& fallback) {
  const YAML::Node n = value_node(key);
  if (n.IsDefined() && n.IsMap()) throw error(key, "key '" + full_key(key) + "' must be a list of strings, got a mapping");
  return read_list<std::string>(n, fallback,
                                [&](const YAML::Node& item) { return convert<std::string>(item, key, "a list of strings"); });
}

std::map<std::string, double> ConfigSection::get_double_map(const std::string& key, double min, double max) {
  const YAML::Node n = value_node(key);
  std::map<std::string, double> out;
  if (!n.IsDefined() || n.IsNull()) return out;
  if (!n.IsMap()) throw error(key, "key '" + full_key(key) + "' must be a mapping of names to numbers, got " + scalar_text(n));
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string name = it->first.Scalar();
    const std::string item_key = full_key(key) + "." + name;
    const std::string loc = it->second.Mark().is_null() ? where(key) : mark_text(source_->name, it->second.Mark());
    double v = 0;
    try {
      if (!it->second.IsScalar()) throw YAML::Exception(YAML::Mark::null_mark(), "");
      v = it->second.as<double>();
    } catch (const YAML::Exception&) {
      throw ConfigError(loc, item_key,
                        "key '" + item_key + "' must be a number, got " + scalar_text(it->second));
    }
    if (!std::isfinite(v) || v < min || v > max)
 throw ConfigError(loc, item_key,
                        "key '" + item_key + "' = " + number_text(v) + " is out of range [" + number_text(min) + ", " +
                            number_text(max) + "]");
    out[name] = v;
  }
  return out;
}

ConfigSection ConfigSection::section(const std::string& key) {
  YAML::Node n = value_node(key);
  if (!n.IsDefined() || n.IsNull()) return ConfigSection(*source_, YAML::Node(YAML::NodeType::Map), full_key(key));
  if (!n.IsMap()) throw error(key, "key '" + full_key(key) + "' must be a section (a mapping), got " + scalar_text(n));
  return ConfigSection(*source_, n, full_key(key));
}

void ConfigSection::finish() const {
  if (!node_.IsMap()) return;
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    const std::string key = it->first.Scalar();
    if (std::find(read_keys_.begin(), read_keys_.end(), key) == read_keys_.end()) {
      std::string known;
      for (const auto& k : read_keys_) known += (known.empty() ? "" : ", ") + k;
      std::string location = where(key);
      if (location.rfind("--set", 0) != 0) location = mark_text(source_->name, it->first.Mark());
      throw ConfigError(location, full_key(key),
                        "unknown key '" + full_key(key) + "'" + (known.empty() ? "" : " (known here: " + known + ")"));
    }
  }
}

}  // namespace anomalysd

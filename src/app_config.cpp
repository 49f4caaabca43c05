#include "anomalysd/app_config.h"

#include "anomalysd_embedded_config.h"  // generated: kEmbeddedDefaultConfig

namespace anomalysd {

ModelConfig ModelConfig::from_config(ConfigSection& section) {
  ModelConfig c;
  c.path = section.get_string("path", c.path);
  c.variant = section.get_string("variant", c.variant);
  section.finish();
  return c;
}

AppConfig AppConfig::from_source(const ConfigSource& source) {
  ConfigSection root = ConfigSection::root(source);
  AppConfig c;
  c.runtime = RuntimeConfig::from_config(root);
  ConfigSection model = root.section("model");
  c.model = ModelConfig::from_config(model);
  root.finish();
  return c;
}

std::string AppConfig::to_yaml() const {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "device" << YAML::Value << runtime.device;
  out << YAML::Key << "dtype" << YAML::Value << runtime.dtype;
  out << YAML::Key << "seed" << YAML::Value << runtime.seed;
  out << YAML::Key << "threads" << YAML::Value << runtime.threads;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "path" << YAML::Value << model.path;
  out << YAML::Key << "variant" << YAML::Value << model.variant;
  out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

const std::string& embedded_default_config() {
  static const std::string text(kEmbeddedDefaultConfig);
  return text;
}

AppConfig load_app_config(const std::string& path, const std::vector<std::string>& overrides) {
  ConfigSource source = path.empty() ? parse_config_text(embedded_default_config(), "<embedded default config>")
                                     : load_config_file(path);
  apply_overrides(source, overrides);
  return AppConfig::from_source(source);
}

}  // namespace anomalysd

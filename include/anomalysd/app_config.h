// The whole YAML config of an anomalysd run. Sections are added by the stages that use them;
// any key not bound here is an error, so a typo never silently falls back to a default.
#pragma once

#include <string>
#include <vector>

#include "anomalysd/runtime.h"

namespace anomalysd {

// `model:` — the Stable Diffusion inpainting checkpoint (a diffusers pipeline folder).
struct ModelConfig {
  std::string path;     // "" = none given yet
  std::string variant;  // "" or e.g. "fp16": loads *.<variant>.safetensors

  static ModelConfig from_config(ConfigSection& section);
};

struct AppConfig {
  RuntimeConfig runtime;  // top-level keys: device, dtype, seed, threads
  ModelConfig model;

  static AppConfig from_source(const ConfigSource& source);
  std::string to_yaml() const;  // the resolved config, every key with its value
};

// The config compiled into the binary (configs/default.yaml at build time).
const std::string& embedded_default_config();

// Loads `path` (the embedded default when empty), applies `--set` overrides, binds and validates.
AppConfig load_app_config(const std::string& path, const std::vector<std::string>& overrides = {});

}  // namespace anomalysd

// anomalysd — the command-line front end. Each subcommand parses its options, calls one library
// function and prints or writes the result; no algorithm lives here.
//
// Exit codes: 0 success; 1 unexpected failure; 2 bad input (a missing, corrupt or malformed
// file, an invalid config key, a bad command-line option).
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "anomalysd/app_config.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/inspect.h"
#include "anomalysd/io/safetensors.h"
#include "anomalysd/util/logging.h"
#include "anomalysd/version.h"

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitBadInput = 2;

struct InspectOptions {
  std::string file;
  bool json = false;
};

int run_inspect(const InspectOptions& o) {
  const auto file = anomalysd::SafetensorsFile::open(o.file);
  if (o.json)
    std::cout << anomalysd::inspect_json(file).dump(2) << "\n";
  else
    std::cout << anomalysd::inspect_table(file);
  return 0;
}

struct ConfigOptions {
  std::string file;
  std::vector<std::string> overrides;
};

int run_config(const ConfigOptions& o) {
  const anomalysd::AppConfig config = anomalysd::load_app_config(o.file, o.overrides);
  std::cout << "# resolved config (" << (o.file.empty() ? "embedded default" : o.file) << ")\n" << config.to_yaml();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"anomalysd: few-shot multi-class anomaly detection with Stable Diffusion inpainting (AnomalySD)"};
  app.require_subcommand(0, 1);
  bool show_version = false;
  std::string log_level = "info";
  app.add_flag("--version", show_version, "Print versions (anomalysd, LibTorch, BLAS, CUDA) and exit");
  app.add_option("--log-level", log_level, "trace | debug | info | warn | error | off")->capture_default_str();

  InspectOptions inspect;
  CLI::App* inspect_cmd = app.add_subcommand("inspect", "List the tensors and metadata of a safetensors file");
  inspect_cmd->add_option("file", inspect.file, "FILE.safetensors")->required();
  inspect_cmd->add_flag("--json", inspect.json, "Machine-readable output");

  ConfigOptions config;
  CLI::App* config_cmd = app.add_subcommand("config", "Validate a YAML config and print it fully resolved");
  config_cmd->add_option("file", config.file, "CONFIG.yaml (default: the embedded default config)");
  config_cmd->add_option("--set", config.overrides, "Override a key: --set a.b.c=value (repeatable)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : kExitBadInput;
  }

  try {
    anomalysd::setup_logging(log_level);
    if (show_version) {
      std::cout << anomalysd::version_report();
      return 0;
    }
    if (inspect_cmd->parsed()) return run_inspect(inspect);
    if (config_cmd->parsed()) return run_config(config);
    std::cout << app.help();
    return 0;
  } catch (const anomalysd::InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitFailure;
  }
}

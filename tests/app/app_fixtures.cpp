#include "app/app_fixtures.h"

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "anomalysd/tools/components.h"

namespace anomalysd::test {

std::vector<std::string> small_run_overrides(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  const std::string alexnet = (dir / "alexnet.safetensors").string(), lpips = (dir / "lpips.safetensors").string(),
                    eff = (dir / "efficientnet_b0.safetensors").string();
  if (!fs::exists(alexnet)) init_feature_weights("alexnet", 0, alexnet);
  if (!fs::exists(lpips)) init_feature_weights("lpips", 0, lpips);
  if (!fs::exists(eff)) init_feature_weights("efficientnet_b0", 0, eff);
  return {"features.alexnet=" + alexnet, "features.lpips=" + lpips, "features.efficientnet=" + eff,
          "features.efficientnet_variant=0", "resolution=32", "inference.steps=10", "inference.scales=[1,2]",
          "inference.blur_sigma=1", "threads=1", "device=cpu"};
}

int run_cli(const std::string& args, std::string* log) {
  namespace fs = std::filesystem;
  const fs::path out = fs::temp_directory_path() / ("anomalysd-cli-" + std::to_string(::getpid()) + ".log");
  const std::string cmd = std::string(ANOMALYSD_CLI) + " " + args + " > " + out.string() + " 2>&1";
  const int status = std::system(cmd.c_str());
  if (log) {
    std::ifstream in(out);
    std::stringstream s;
    s << in.rdbuf();
    *log = s.str();
  }
  fs::remove(out);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace anomalysd::test

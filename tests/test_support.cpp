#include "test_support.h"

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

namespace anomalysd::test {

std::optional<std::filesystem::path> fixtures_dir() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("ANOMALYSD_FIXTURES"); env && *env) {
    if (fs::is_directory(env)) return fs::path(env);
    return std::nullopt;
  }
  if (fs::is_directory(ANOMALYSD_FIXTURES_DIR)) return fs::path(ANOMALYSD_FIXTURES_DIR);
  return std::nullopt;
}

bool fixtures_required() {
  const char* ci = std::getenv("CI");
  return ci && (std::string(ci) == "true" || std::string(ci) == "1");
}

std::filesystem::path test_cache_dir() { return ANOMALYSD_TEST_CACHE_DIR; }

namespace {
// Before any test runs: the GEMM choice cache of this process and the CLIs it starts is the
// build tree's, whatever the user's environment says (hermetic tests).
const bool kHermeticCache = [] {
  std::filesystem::create_directories(ANOMALYSD_TEST_CACHE_DIR);
  ::setenv("ANOMALYSD_CACHE_DIR", ANOMALYSD_TEST_CACHE_DIR, 1);
  return true;
}();
}  // namespace

TempDir::TempDir() {
  std::random_device rd;
  path_ = std::filesystem::temp_directory_path() / ("anomalysd-test-" + std::to_string(rd()) + std::to_string(rd()));
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace anomalysd::test

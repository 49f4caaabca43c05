// Shared helpers for the test suite: the fixtures folder and scratch directories.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <gtest/gtest.h>

namespace anomalysd::test {

// $ANOMALYSD_FIXTURES when set (the user's choice wins: a folder that does not exist is then
// missing, never silently replaced), else the configure-time default (../shared/fixtures).
std::optional<std::filesystem::path> fixtures_dir();

// True under CI (CI=true): fixtures that are missing fail the tests that need them, never skip.
bool fixtures_required();

// The folder the tests' GEMM-choice cache lives in (ANOMALYSD_CACHE_DIR, set for every test
// process): in the build tree, never the user's ~/.cache/anomalysd.
std::filesystem::path test_cache_dir();

// A fresh, empty folder removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes);
std::string read_bytes(const std::string& path);

}  // namespace anomalysd::test

// Skips the current test, with the reason, when the parity fixtures are absent — or fails it
// under CI (CI=true), so that a lost fixtures folder cannot turn 40 tests into skips.
#define ANOMALYSD_REQUIRE_FIXTURES(var)                                                                  \
  const auto var##_opt = ::anomalysd::test::fixtures_dir();                                            \
  if (!var##_opt) {                                                                                      \
    if (::anomalysd::test::fixtures_required())                                                          \
      GTEST_FAIL() << "parity fixtures not found ($ANOMALYSD_FIXTURES or " ANOMALYSD_FIXTURES_DIR        \
                      ") and CI=true: the fixtures must be present in CI";                               \
    GTEST_SKIP() << "parity fixtures not found (looked in $ANOMALYSD_FIXTURES and "                     \
                    ANOMALYSD_FIXTURES_DIR "); skipping";                                                \
  }                                                                                                      \
  const std::filesystem::path var = *var##_opt

// Shared helpers for the test suite: the fixtures folder and scratch directories.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <gtest/gtest.h>

namespace anomalysd::test {

// ../shared/fixtures (or $ANOMALYSD_FIXTURES) if it exists.
std::optional<std::filesystem::path> fixtures_dir();

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

// Skips the current test, with the reason, when the parity fixtures are absent.
#define ANOMALYSD_REQUIRE_FIXTURES(var)                                                                  \
  const auto var##_opt = ::anomalysd::test::fixtures_dir();                                            \
  if (!var##_opt) GTEST_SKIP() << "parity fixtures not found (looked in $ANOMALYSD_FIXTURES and "      \
                                  ANOMALYSD_FIXTURES_DIR "); skipping";                                 \
  const std::filesystem::path var = *var##_opt

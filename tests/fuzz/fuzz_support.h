// Shared by the fuzz targets: each input goes to a file in a per-process temporary folder (the
// parsers under test read files, as users give them), and any InputError is the expected answer
// to a bad input; everything else — a crash, an out-of-bounds read, undefined behaviour, another
// exception — is a finding.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace anomalysd::fuzz {

inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    const char* shm = "/dev/shm";
    const std::filesystem::path base = std::filesystem::is_directory(shm) ? shm : std::filesystem::temp_directory_path();
    auto d = base / ("anomalysd-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::string write_input(const std::string& name, const uint8_t* data, std::size_t size) {
  const std::string path = (scratch() / name).string();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  return path;
}

// Splits the input at the first occurrences of `separator`, into at most `n` parts.
inline std::vector<std::string> split_input(const uint8_t* data, std::size_t size, const std::string& separator, std::size_t n) {
  std::string s(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  while (parts.size() + 1 < n) {
    const auto pos = s.find(separator);
    if (pos == std::string::npos) break;
    parts.push_back(s.substr(0, pos));
    s = s.substr(pos + separator.size());
  }
  parts.push_back(s);
  while (parts.size() < n) parts.emplace_back();
  return parts;
}

}  // namespace anomalysd::fuzz

// Stable 64-bit hashes of records (run and training identities): FNV-1a, printed as 16 hex digits.
#pragma once

#include <cstdint>
#include <iomanip>
#include <sstream>
#include <string>

namespace anomalysd {

inline uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

inline std::string hex(uint64_t v) {
  std::ostringstream s;
  s << std::hex << std::setw(16) << std::setfill('0') << v;
  return s.str();
}

}  // namespace anomalysd

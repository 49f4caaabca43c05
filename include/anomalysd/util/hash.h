// Stable 64-bit hashes: FNV-1a of records (run and training identities, printed as 16 hex digits),
// and splitmix64, the mixer behind every derived seed (start noise, training streams, synthetic images).
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

// Steele, Lea & Flood's SplitMix64 finaliser: a bijection on 64 bits whose outputs of nearby inputs look unrelated.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

inline std::string hex(uint64_t v) {
  std::ostringstream s;
  s << std::hex << std::setw(16) << std::setfill('0') << v;
  return s.str();
}

}  // namespace anomalysd

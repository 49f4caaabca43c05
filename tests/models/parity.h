// Comparing against reference outputs: the fixtures' tolerance rule
// max|y − r| ≤ tol · max(1, max|r|), and a message that names the tensor and its error.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "anomalysd/io/tensor_io.h"

namespace anomalysd::test {

inline ::testing::AssertionResult close_to_reference(const torch::Tensor& actual, const torch::Tensor& reference,
                                                     const std::string& name, double tol = 1e-4) {
  if (actual.sizes() != reference.sizes())
    return ::testing::AssertionFailure() << name << ": shape " << actual.sizes() << " != reference " << reference.sizes();
  const torch::Tensor y = actual.to(torch::kCPU, torch::kDouble), r = reference.to(torch::kCPU, torch::kDouble);
  const double err = (y - r).abs().max().item<double>();
  const double bound = tol * std::max(1.0, r.abs().max().item<double>());
  if (!(err <= bound))
    return ::testing::AssertionFailure() << name << ": max abs difference " << err << " exceeds " << bound;
  return ::testing::AssertionSuccess();
}

// The fixtures' hash_uniform(name, shape, scale): FNV-1a of the name, a 32-bit mix of the element
// index, mapped exactly to [-1, 1) and scaled in double.
inline torch::Tensor hash_uniform(const std::string& name, const std::vector<int64_t>& shape, double scale) {
  uint32_t h = 0x811C9DC5u;
  for (unsigned char c : name) h = (h ^ c) * 0x01000193u;
  torch::Tensor out = torch::empty(shape, torch::kFloat);
  float* w = out.data_ptr<float>();
  for (int64_t i = 0; i < out.numel(); ++i) {
    uint32_t x = h ^ (static_cast<uint32_t>(i) * 0x9E3779B1u);
    x = ((x >> 16) ^ x) * 0x45D9F3Bu;
    x = ((x >> 16) ^ x) * 0x45D9F3Bu;
    x = (x >> 16) ^ x;
    const double v = (static_cast<double>(x >> 8) - 8388608.0) / 8388608.0;
    w[i] = static_cast<float>(v * scale);
  }
  return out;
}

// explicit ∪ hashed tensors, checking each hashed one against the fixture's checksums first.
inline std::map<std::string, torch::Tensor> rebuild_state(const std::filesystem::path& explicit_file, const std::filesystem::path& hashed_json) {
  auto state = load_all(explicit_file.string());
  std::ifstream in(hashed_json);
  const auto hashed = nlohmann::json::parse(in);
  for (const auto& [name, spec] : hashed.items()) {
    const torch::Tensor t = hash_uniform(name, spec["shape"].get<std::vector<int64_t>>(), spec["scale"].get<double>());
    const auto first3 = spec["first3"].get<std::vector<double>>();
    for (int i = 0; i < 3; ++i) EXPECT_EQ(t.flatten()[i].item<float>(), static_cast<float>(first3[i])) << name << " first3";
    EXPECT_NEAR(t.to(torch::kDouble).sum().item<double>(), spec["checksum_sum"].get<double>(), 1e-6 * spec["checksum_abs"].get<double>())
        << name << " checksum_sum";
    state[name] = t;
  }
  return state;
}

}  // namespace anomalysd::test

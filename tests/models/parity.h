// Comparing against reference outputs: the fixtures' tolerance rule
// max|y − r| ≤ tol · max(1, max|r|), and a message that names the tensor and its error.
#pragma once

#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

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

}  // namespace anomalysd::test

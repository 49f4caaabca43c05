// Prototype-guided mask (eq. 12–15): exact NN distances against a naive loop, the variance-split
// threshold against brute force, rotations, masks and bank files.
#include <limits>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "anomalysd/anomaly/prototype.h"
#include "anomalysd/io/errors.h"
#include "test_support.h"

namespace anomalysd {
namespace {

TEST(NearestNeighbour, MatchesNaiveDoubleLoopAtAnyChunking) {
  torch::manual_seed(7);
  const torch::Tensor q = torch::randn({37, 6}), bank = torch::randn({53, 6});
  std::vector<float> naive(37);
  for (int i = 0; i < 37; ++i) {
    double best = std::numeric_limits<double>::infinity();
    for (int j = 0; j < 53; ++j) {
      double d = 0;
      for (int c = 0; c < 6; ++c) {
        const double diff = q[i][c].item<double>() - bank[j][c].item<double>();
        d += diff * diff;
      }
      best = std::min(best, d);
    }
    naive[i] = static_cast<float>(best);
  }
  const torch::Tensor expected = torch::tensor(naive);
  for (int64_t budget : {int64_t(4), int64_t(64), int64_t(1000), int64_t(1) << 30}) {
    SCOPED_TRACE(budget);
    EXPECT_TRUE(torch::allclose(nearest_neighbour_distance(q, bank, budget), expected, 1e-4, 1e-5));
  }
  // A query that is in the bank has distance exactly 0 (clamped, never negative).
  EXPECT_EQ(nearest_neighbour_distance(bank.narrow(0, 5, 1), bank).item<float>(), 0.0f);
  EXPECT_THROW(nearest_neighbour_distance(q, torch::randn({4, 5})), ShapeError);
}

double brute_force_threshold(const std::vector<double>& v) {
  auto var = [](const std::vector<double>& s) {
    double m = 0, q = 0;
    for (double x : s) m += x;
    m /= s.size();
    for (double x : s) q += (x - m) * (x - m);
    return q / s.size();
  };
  double best = std::numeric_limits<double>::infinity(), r_best = std::numeric_limits<double>::infinity();
  std::vector<double> candidates = v;
  std::sort(candidates.begin(), candidates.end());
  for (double r : candidates) {
    std::vector<double> hi, lo;
    for (double x : v) (x >= r ? hi : lo).push_back(x);
    if (hi.empty() || lo.empty()) continue;
    const double cost = var(hi) + var(lo);
    if (cost < best - 1e-12) {
      best = cost;
      r_best = r;
    }
  }
  return r_best;
}

TEST(VarianceSplit, MatchesBruteForceOnRandomData) {
  torch::manual_seed(11);
  for (int trial = 0; trial < 20; ++trial) {
    // Mixtures with ties (rounded values) and skew, as error maps have.
    const torch::Tensor v = (torch::cat({torch::randn({40}), 3 + 0.5 * torch::randn({trial + 3})}) * 4).round() / 4;
    std::vector<double> values(v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
    EXPECT_DOUBLE_EQ(variance_split_threshold(v), brute_force_threshold(values)) << "trial " << trial;
  }
}

TEST(VarianceSplit, HandChecked) {
  // {0, 0, 1, 10, 11}: splitting before 10 leaves Var{0,0,1} + Var{10,11} = 2/9 + 1/4.
  EXPECT_DOUBLE_EQ(variance_split_threshold(torch::tensor({10.0f, 0.0f, 11.0f, 1.0f, 0.0f})), 10.0);
  EXPECT_TRUE(std::isinf(variance_split_threshold(torch::full({5}, 2.0f))));  // no split: empty mask
  EXPECT_DOUBLE_EQ(variance_split_threshold(torch::tensor({1.0f, 2.0f})), 2.0);
}

TEST(PrototypeMask, ThresholdsAndUpsamples) {
  torch::Tensor error = torch::zeros({4, 4});
  error[1][2] = 5.0f;
  error[2][2] = 5.5f;
  const torch::Tensor mask = prototype_mask(error, 16, 16);
  ASSERT_EQ(mask.sizes(), torch::IntArrayRef({16, 16}));
  EXPECT_EQ(mask.sum().item<float>(), 2 * 16.0f);           // two cells, 4×4 pixels each
  EXPECT_EQ(mask.slice(0, 4, 12).slice(1, 8, 12).sum().item<float>(), 32.0f);
  EXPECT_EQ(prototype_mask(torch::zeros({4, 4}), 8, 8).sum().item<float>(), 0.0f);
}

TEST(Rotation, QuarterTurnsAreExactAndOthersKeepTheCentre) {
  const torch::Tensor img = torch::arange(2 * 3 * 4 * 4, torch::kFloat).view({2, 3, 4, 4});
  EXPECT_TRUE(torch::equal(rotate_images(img, 0), img));
  EXPECT_TRUE(torch::equal(rotate_images(img, 90), torch::rot90(img, 1, {2, 3})));
  EXPECT_TRUE(torch::equal(rotate_images(img, 360 + 180), torch::rot90(img, 2, {2, 3})));
  EXPECT_TRUE(torch::equal(rotate_images(rotate_images(img, 90), -90), img));
  // A 45° turn of a constant image keeps the centre pixel's value.
  const torch::Tensor flat = torch::ones({1, 1, 9, 9});
  EXPECT_NEAR(rotate_images(flat, 45)[0][0][4][4].item<float>(), 1.0f, 1e-5);
  EXPECT_LT(rotate_images(flat, 45)[0][0][0][0].item<float>(), 0.5f);  // corners rotate out
}

TEST(PrototypeBank, BuildsFromShotsAndFindsTheShotItself) {
  torch::manual_seed(3);
  // A small EfficientNet keeps the test fast; the bank logic is the same for B6.
  EfficientNetConfig config = EfficientNetConfig::b(0);
  EfficientNet net(config);
  net->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor shots = torch::rand({2, 3, 64, 64});
  PrototypeOptions options;  // four rotations; shallow taps, since a random deep net's features collapse
  options.taps = {1, 2};
  const torch::Tensor bank = build_prototype_bank(net, shots, options);
  const torch::Tensor psi = prototype_features(net, shots.narrow(0, 1, 1), options);
  // B0 taps: features[1] 16 ch at stride 2, features[2] 24 ch at stride 4 -> upsampled to 32×32.
  EXPECT_EQ(psi.sizes(), torch::IntArrayRef({1, 16 + 24, 32, 32}));
  EXPECT_EQ(bank.sizes(), torch::IntArrayRef({2 * 4 * 1024, 40}));
  // A shot's own features are in the bank: zero error everywhere, so an empty mask.
  const torch::Tensor error = prototype_error_map(psi, bank);
  // (‖a‖² + ‖b‖² − 2ab cancels in float32: allow a rounding error relative to ‖b‖².)
  EXPECT_LT(error.max().item<float>(), 1e-5 * bank.pow(2).sum(1).max().item<float>());
  // An unseen image is farther away.
  const float self_scale = bank.pow(2).sum(1).mean().item<float>();
  EXPECT_GT(prototype_error_map(prototype_features(net, torch::rand({1, 3, 64, 64}), options), bank).mean().item<float>(),
            1e-3 * self_scale);
}

}  // namespace
}  // namespace anomalysd

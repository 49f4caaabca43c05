// Metrics against hand-computed cases and against values computed independently with sklearn and
// the official MVTec AD PRO code (tests/metrics/data/make_reference.py).
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "anomalysd/metrics/metrics.h"

namespace anomalysd {
namespace {

torch::Tensor f(std::vector<float> v) { return torch::tensor(v); }
torch::Tensor l(std::vector<int64_t> v) { return torch::tensor(v); }

TEST(ImageMetrics, TiesFormOneStep) {
  const ImageMetrics m = image_metrics(f({0.5f, 0.5f, 0.5f, 0.5f}), l({0, 1, 0, 1}));
  EXPECT_DOUBLE_EQ(m.auroc, 0.5);
  EXPECT_DOUBLE_EQ(m.ap, 0.5);
  EXPECT_DOUBLE_EQ(m.f1_max, 2 * 0.5 / 1.5);
}

TEST(ImageMetrics, PartialTiesHandComputed) {
  // Thresholds 0.9: (FPR 0, TPR .5, P 1); 0.8: (.5, 1, 2/3); 0.1: (1, 1, .5).
  const ImageMetrics m = image_metrics(f({0.9f, 0.8f, 0.8f, 0.1f}), l({1, 0, 1, 0}));
  EXPECT_DOUBLE_EQ(m.auroc, 0.875);
  EXPECT_DOUBLE_EQ(m.ap, 0.5 * 1.0 + 0.5 * (2.0 / 3.0));
  EXPECT_DOUBLE_EQ(m.f1_max, 0.8);
}

TEST(ImageMetrics, PerfectInvertedAndUndefined) {
  EXPECT_DOUBLE_EQ(auroc(f({0.1f, 0.2f, 0.8f, 0.9f}), l({0, 0, 1, 1})), 1.0);
  EXPECT_DOUBLE_EQ(average_precision(f({0.1f, 0.2f, 0.8f, 0.9f}), l({0, 0, 1, 1})), 1.0);
  EXPECT_DOUBLE_EQ(f1_max(f({0.1f, 0.2f, 0.8f, 0.9f}), l({0, 0, 1, 1})), 1.0);
  EXPECT_DOUBLE_EQ(auroc(f({0.9f, 0.8f, 0.2f, 0.1f}), l({0, 0, 1, 1})), 0.0);
  EXPECT_TRUE(std::isnan(auroc(f({0.1f, 0.2f}), l({0, 0}))));  // no anomalous images
  EXPECT_TRUE(std::isnan(average_precision(f({0.1f, 0.2f}), l({1, 1}))));
  EXPECT_THROW(auroc(f({0.1f, NAN}), l({0, 1})), std::exception);
}

TEST(PixelMetrics, PerfectMapSingleRegion) {
  torch::Tensor mask = torch::zeros({4, 4}, torch::kByte);
  mask.slice(0, 0, 2).slice(1, 0, 2).fill_(1);
  PixelMetricAccumulator acc;
  acc.add(mask.to(torch::kFloat), mask);
  const PixelMetrics m = acc.compute();
  EXPECT_EQ(m.regions, 1);
  EXPECT_EQ(m.anomalous_pixels, 4);
  EXPECT_DOUBLE_EQ(m.auroc, 1.0);
  EXPECT_DOUBLE_EQ(m.pro, 1.0);
}

TEST(PixelMetrics, DiagonalNeighboursAreOneRegionAndLimitFallsBetweenThresholds) {
  // Mask pixels (0,0), (1,1), (1,2): one 8-connected region of 3 (two regions with 4-connectivity).
  torch::Tensor mask = torch::zeros({4, 4}, torch::kByte);
  mask[0][0] = 1;
  mask[1][1] = 1;
  mask[1][2] = 1;
  torch::Tensor map = torch::zeros({4, 4});
  map[0][0] = 1.0f;
  PixelMetricAccumulator acc;
  acc.add(map, mask);
  const PixelMetrics m = acc.compute(0.3);
  EXPECT_EQ(m.regions, 1);
  // Curve (0,0) → (0,1/3) → (1,1): PRO at FPR 0.3 interpolates to 1/3 + (2/3)·0.3.
  const double at_limit = 1.0 / 3 + (2.0 / 3) * 0.3;
  EXPECT_NEAR(m.pro, (1.0 / 3 + at_limit) / 2, 1e-12);
}

TEST(PixelMetrics, AllEqualScoresAndNoAnomalousPixels) {
  PixelMetricAccumulator acc;
  torch::Tensor mask = torch::zeros({3, 3}, torch::kByte);
  mask[1][1] = 1;
  acc.add(torch::full({3, 3}, 0.7f), mask);
  const PixelMetrics m = acc.compute(0.3);
  EXPECT_DOUBLE_EQ(m.auroc, 0.5);
  EXPECT_NEAR(m.pro, 0.15, 1e-12);  // the diagonal (0,0)–(1,1), integrated to 0.3 and normalised
  PixelMetricAccumulator normal_only;
  normal_only.add(torch::rand({3, 3}), torch::zeros({3, 3}, torch::kByte));
  const PixelMetrics n = normal_only.compute();
  EXPECT_TRUE(std::isnan(n.auroc));
  EXPECT_TRUE(std::isnan(n.pro));
  EXPECT_EQ(n.regions, 0);
}

TEST(PixelMetrics, TrapezoidInterpolatesAtTheLimit) {
  EXPECT_NEAR(trapezoid_up_to({0, 0.1, 0.5, 1}, {0, 0.2, 0.6, 1}, 0.3), 0.01 + 0.2 * (0.2 + 0.4) / 2, 1e-12);
  EXPECT_NEAR(trapezoid_up_to({0, 0.3, 1}, {0, 0.5, 1}, 0.3), 0.075, 1e-12);  // limit exactly on a point
}

nlohmann::json reference() {
  std::ifstream in(std::string(ANOMALYSD_SOURCE_DIR) + "/tests/metrics/data/reference_metrics.json");
  return nlohmann::json::parse(in);
}

TEST(MetricsReference, ImageMetricsMatchSklearn) {
  const auto ref = reference();
  for (const auto& c : ref["image_cases"]) {
    const auto scores = c["scores"].get<std::vector<float>>();
    const auto labels = c["labels"].get<std::vector<int64_t>>();
    const ImageMetrics m = image_metrics(torch::tensor(scores), torch::tensor(labels));
    SCOPED_TRACE(scores.size());
    EXPECT_NEAR(m.auroc, c["auroc"].get<double>(), 1e-12);
    EXPECT_NEAR(m.ap, c["ap"].get<double>(), 1e-12);
    EXPECT_NEAR(m.f1_max, c["f1_max"].get<double>(), 1e-12);
  }
}

TEST(MetricsReference, PixelMetricsMatchSklearnAndOfficialPro) {
  const auto ref = reference();
  for (const auto& c : ref["pixel_cases"]) {
    for (const double limit : {0.3, 0.05}) {
      PixelMetricAccumulator acc;
      for (std::size_t i = 0; i < c["maps"].size(); ++i) {
        const auto map = c["maps"][i].get<std::vector<std::vector<float>>>();
        const auto mask = c["masks"][i].get<std::vector<std::vector<int64_t>>>();
        torch::Tensor m = torch::empty({16, 16}), g = torch::empty({16, 16}, torch::kByte);
        for (int r = 0; r < 16; ++r)
          for (int k = 0; k < 16; ++k) {
            m[r][k] = map[r][k];
            g[r][k] = static_cast<uint8_t>(mask[r][k]);
          }
        acc.add(m, g);
      }
      const PixelMetrics p = acc.compute(limit);
      EXPECT_NEAR(p.pro, c[limit == 0.3 ? "pro_0.3" : "pro_0.05"].get<double>(), 1e-9) << "limit " << limit;
      EXPECT_NEAR(p.auroc, c["auroc"].get<double>(), 1e-12);
      EXPECT_NEAR(p.ap, c["ap"].get<double>(), 1e-12);
      EXPECT_NEAR(p.f1_max, c["f1_max"].get<double>(), 1e-12);
    }
  }
}

}  // namespace
}  // namespace anomalysd

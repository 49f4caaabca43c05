// Decision thresholds (metrics/threshold.h, CurveSummary::f1_threshold) against brute force, and
// the calibration file's checks (app/calibration.h).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "anomalysd/app/calibration.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/metrics/metrics.h"
#include "anomalysd/metrics/threshold.h"
#include "test_support.h"

namespace anomalysd {
namespace {

// Brute force: every distinct score as the threshold t (score ≥ t = anomalous); the best F1, the
// highest t among equals, and its confusion counts.
struct Brute {
  double f1 = -1, threshold = 0;
  int64_t tp = 0, fp = 0;
};
Brute brute_force_f1(const std::vector<float>& s, const std::vector<uint8_t>& l) {
  std::set<float, std::greater<float>> candidates(s.begin(), s.end());
  Brute best;
  for (float t : candidates) {
    int64_t tp = 0, fp = 0, fn = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
      const bool called = s[i] >= t;
      tp += called && l[i];
      fp += called && !l[i];
      fn += !called && l[i];
    }
    const double f1 = 2.0 * tp / (2.0 * tp + fp + fn);
    if (f1 > best.f1 + 1e-12) best = {f1, t, tp, fp};  // descending t: the first of equals is the highest
  }
  return best;
}

TEST(Threshold, F1OptimalThresholdEqualsBruteForceTiesIncluded) {
  // Hand-made: scores 0.9 (a), 0.8 (n), 0.7 (a), 0.7 (n), 0.3 (a), 0.1 (n).
  // t = 0.9: F1 = 2/(2+0+2) = 0.5; t = 0.8: 2/(2+1+2) = 0.4; t = 0.7 (the tie enters together):
  // tp 2, fp 2, fn 1 -> 4/7 = 0.571; t = 0.3: tp 3, fp 2 -> 6/8 = 0.75; t = 0.1: 6/9. Best 0.75 at 0.3.
  {
    const std::vector<float> s = {0.9f, 0.8f, 0.7f, 0.7f, 0.3f, 0.1f};
    const std::vector<uint8_t> l = {1, 0, 1, 0, 1, 0};
    const ImageMetrics m = image_metrics(torch::tensor(s), torch::tensor(std::vector<int64_t>(l.begin(), l.end())));
    EXPECT_NEAR(m.f1_max, 0.75, 1e-12);
    EXPECT_EQ(m.f1_threshold, 0.3f);
    EXPECT_EQ(m.f1_true_positives, 3);
    EXPECT_EQ(m.f1_false_positives, 2);
  }
  // Equal F1 at two thresholds: 0.9 a, 0.8 n, 0.7 n, 0.6 a, 0.1 n. t = 0.9: P 1, R 1/2 -> 2/3;
  // t = 0.6: P 1/2, R 1 -> 2/3 as well; the highest (fewest alarms) is kept.
  {
    const std::vector<float> s = {0.9f, 0.8f, 0.7f, 0.6f, 0.1f};
    const std::vector<int64_t> l = {1, 0, 0, 1, 0};
    const ImageMetrics m = image_metrics(torch::tensor(s), torch::tensor(l));
    EXPECT_NEAR(m.f1_max, 2.0 / 3.0, 1e-12);
    EXPECT_EQ(m.f1_threshold, 0.9f);
    EXPECT_EQ(m.f1_true_positives, 1);
    EXPECT_EQ(m.f1_false_positives, 0);
  }
  // Random cases with few score levels: ties within a threshold and equal F1s at two thresholds.
  std::mt19937 rng(5);
  int with_ties = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 2 + static_cast<int>(rng() % 40);
    std::vector<float> s(n);
    std::vector<uint8_t> l(n);
    for (int i = 0; i < n; ++i) {
      s[i] = static_cast<float>(rng() % 8) / 8.0f;  // few levels: many ties
      l[i] = rng() % 3 == 0;
    }
    l[0] = 1;
    l[1] = 0;
    const Brute b = brute_force_f1(s, l);
    const ImageMetrics m = image_metrics(torch::tensor(s), torch::tensor(std::vector<int64_t>(l.begin(), l.end())));
    ASSERT_NEAR(m.f1_max, b.f1, 1e-12) << "trial " << trial;
    ASSERT_EQ(m.f1_threshold, b.threshold) << "trial " << trial;
    ASSERT_EQ(m.f1_true_positives, b.tp) << "trial " << trial;
    ASSERT_EQ(m.f1_false_positives, b.fp) << "trial " << trial;
    for (float t : std::set<float>(s.begin(), s.end())) {
      int64_t tp = 0, fp = 0, fn = 0;
      for (int i = 0; i < n; ++i) {
        tp += s[i] >= t && l[i];
        fp += s[i] >= t && !l[i];
        fn += s[i] < t && l[i];
      }
      const double f1 = 2.0 * tp / (2.0 * tp + fp + fn);
      if (std::abs(f1 - b.f1) < 1e-12 && t != b.threshold) ++with_ties;
    }
  }
  EXPECT_GT(with_ties, 0) << "the random cases must include equal best F1s at two thresholds";
}

TEST(Threshold, PixelAccumulatorGivesTheF1ThresholdAndTheMapRange) {
  PixelMetricAccumulator acc;
  // 2×2 map, one anomalous pixel scoring 0.8; normals 0.1, 0.5, 0.9 (0.9 is a false alarm above it).
  const float map[4] = {0.1f, 0.5f, 0.9f, 0.8f};
  const uint8_t mask[4] = {0, 0, 0, 1};
  acc.add(map, mask, 2, 2);
  const PixelMetrics m = acc.compute();
  // t = 0.9: F1 0; t = 0.8: tp 1, fp 1 -> 2/3; t = 0.5: 2/4; t = 0.1: 2/5.
  EXPECT_EQ(m.f1_threshold, 0.8f);
  EXPECT_NEAR(m.f1_max, 2.0 / 3.0, 1e-12);
  EXPECT_EQ(m.map_min, 0.1f);
  EXPECT_EQ(m.map_max, 0.9f);
}

TEST(Threshold, FalseAlarmThresholdHitsTheRequestedQuantile) {
  // Exact: scores 1..100, target 5 %: at most 5 alarms, so t sits just above 95 (96..100 alarm).
  std::vector<double> s;
  for (int i = 1; i <= 100; ++i) s.push_back(i);
  FalseAlarmThreshold t = false_alarm_threshold(s, 0.05);
  EXPECT_GT(t.threshold, 95.0);
  EXPECT_LE(t.threshold, 96.0);
  EXPECT_EQ(t.false_alarms, 5);
  EXPECT_EQ(t.normal_images, 100);
  // 0.01 · 300 = 3 exactly, though 0.01 · 300 rounds below 3 in binary.
  std::vector<double> s300;
  for (int i = 0; i < 300; ++i) s300.push_back(i);
  EXPECT_EQ(false_alarm_threshold(s300, 0.01).false_alarms, 3);
  // A known distribution: uniform on [0, 1), 20000 draws, 1 % -> the 0.99 quantile.
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> draws(20000);
  for (auto& d : draws) d = u(rng);
  t = false_alarm_threshold(draws, 0.01);
  EXPECT_NEAR(t.threshold, 0.99, 0.003);
  const auto alarms = std::count_if(draws.begin(), draws.end(), [&](double d) { return d >= t.threshold; });
  EXPECT_EQ(alarms, 200);
  // Ties at the cut: none of a tied group may straddle it.
  t = false_alarm_threshold({1, 2, 3, 3, 3}, 0.2);  // one alarm allowed; the three 3s together are too many
  EXPECT_GT(t.threshold, 3.0);
  EXPECT_EQ(t.false_alarms, 0);
  // Too few images for the target: just above the highest normal score, and the resolution says why.
  t = false_alarm_threshold({0.2, 0.4, 0.3}, 0.01);
  EXPECT_GT(t.threshold, 0.4);
  EXPECT_LT(t.threshold, 0.4 + 1e-12);
  EXPECT_NEAR(t.resolution, 1.0 / 3.0, 1e-12);
  EXPECT_THROW(false_alarm_threshold({}, 0.01), InputError);
  EXPECT_THROW(false_alarm_threshold({1.0}, 1.0), InputError);
  EXPECT_THROW(false_alarm_threshold({1.0, NAN}, 0.1), InputError);
}

TEST(Threshold, NormalisationPutsTheThresholdAtHalfMonotoneAndClamped) {
  const ScoreScale s{2.0, 1.0, 6.0};
  EXPECT_EQ(s.normalize(2.0), 0.5);
  EXPECT_EQ(s.normalize(1.0), 0.0);
  EXPECT_EQ(s.normalize(6.0), 1.0);
  EXPECT_DOUBLE_EQ(s.normalize(1.5), 0.25);   // halfway from low to the threshold
  EXPECT_DOUBLE_EQ(s.normalize(4.0), 0.75);   // halfway from the threshold to high
  EXPECT_EQ(s.normalize(-10.0), 0.0);
  EXPECT_EQ(s.normalize(100.0), 1.0);
  double previous = -1;
  for (double x = -1; x <= 8; x += 0.01) {
    const double v = s.normalize(x);
    EXPECT_GE(v, previous) << x;
    EXPECT_EQ(v >= 0.5, x >= 2.0) << "the decision at 0.5 is the raw threshold's, at " << x;
    previous = v;
  }
  for (double q : {0.0, 0.1, 0.25, 0.5, 0.6, 0.9, 1.0}) EXPECT_NEAR(s.normalize(s.raw_at(q)), q, 1e-12) << q;
  EXPECT_EQ(s.threshold_at_sensitivity(0.5), 2.0);
  EXPECT_DOUBLE_EQ(s.threshold_at_sensitivity(0.75), 1.5);  // more sensitive: a lower cut
  EXPECT_DOUBLE_EQ(s.threshold_at_sensitivity(0.25), 4.0);
  // Degenerate sides are steps at the threshold.
  const ScoreScale step{2.0, 2.0, 2.0};
  EXPECT_EQ(step.normalize(1.9), 0.0);
  EXPECT_EQ(step.normalize(2.0), 0.5);
  EXPECT_EQ(step.normalize(2.1), 1.0);
}

TEST(Calibration, FileRoundTripsAndBadFilesAndOtherRunsAreNamed) {
  test::TempDir tmp;
  Calibration c;
  c.identity = {{"model", "/models/a"}, {"config", {{"config", "inference:\n  strength: 0.2\n"}, {"numeric_setup", "cpu float32"}}}};
  ClassCalibration k = calibrate_from_labelled({0.1, 0.2, 0.3, 0.9}, {0, 0, 1, 1}, 0.5, 0.8, 0.0, 1.2);
  k.shots = {"00ff", "aa00"};
  c.classes["bottle"] = k;
  EXPECT_EQ(k.image.threshold, 0.3f);
  EXPECT_EQ(k.accuracy(), 1.0);
  const std::string file = tmp.file("calibration.json");
  c.save(file);
  const Calibration back = Calibration::load(file);
  const ClassCalibration& b = back.classes.at("bottle");
  EXPECT_EQ(b.image.threshold, k.image.threshold);
  EXPECT_EQ(b.pixel.threshold, 0.5);
  EXPECT_EQ(b.true_positives, 2);
  EXPECT_EQ(b.false_positives, 0);
  EXPECT_EQ(calibration_for(back, file, c.identity, "bottle", {"aa00", "00ff"}).image.threshold, k.image.threshold);

  auto message = [&](auto&& f) {
    try {
      f();
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  nlohmann::json other = c.identity;
  other["config"]["config"] = "inference:\n  strength: 0.3\n";
  std::string m = message([&] { calibration_for(back, file, other, "bottle", {"aa00", "00ff"}); });
  EXPECT_NE(m.find(file), std::string::npos) << m;
  EXPECT_NE(m.find("strength: 0.3"), std::string::npos) << m;
  other = c.identity;
  other["model"] = "/models/b";
  m = message([&] { calibration_for(back, file, other, "bottle", {"aa00", "00ff"}); });
  EXPECT_NE(m.find("/models/b"), std::string::npos) << m;
  m = message([&] { calibration_for(back, file, c.identity, "cable", {"aa00", "00ff"}); });
  EXPECT_NE(m.find("no calibration for class 'cable' (it has: bottle)"), std::string::npos) << m;
  m = message([&] { calibration_for(back, file, c.identity, "bottle", {"aa00"}); });
  EXPECT_NE(m.find("other shots"), std::string::npos) << m;
  // Truncated, and a key missing: the file and the key named.
  const std::string text = test::read_bytes(file);
  test::write_bytes(file, text.substr(0, text.size() / 2));
  m = message([&] { Calibration::load(file); });
  EXPECT_NE(m.find(file), std::string::npos) << m;
  EXPECT_NE(m.find("invalid JSON"), std::string::npos) << m;
  nlohmann::json j = c.to_json();
  j["classes"]["bottle"]["image"].erase("threshold");
  test::write_bytes(file, j.dump());
  m = message([&] { Calibration::load(file); });
  EXPECT_NE(m.find("classes.bottle.image.threshold"), std::string::npos) << m;
  // Labelled calibration needs both kinds of image.
  EXPECT_THROW(calibrate_from_labelled({0.1, 0.2}, {0, 0}, NAN, NAN, 0, 1), InputError);
}

TEST(Calibration, FromNormalImagesCentresTheScaleOnTheThreshold) {
  const ClassCalibration c = calibrate_from_normal({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.5, 0.1);
  EXPECT_GT(c.image.threshold, 9.0);  // one alarm allowed of ten: just above the 9
  EXPECT_LE(c.image.threshold, 10.0);
  EXPECT_EQ(c.false_alarms, 1);
  EXPECT_EQ(c.image.low, 1.0);
  EXPECT_DOUBLE_EQ(c.image.high - c.image.threshold, c.image.threshold - 1.0);
  EXPECT_EQ(c.pixel.threshold, c.image.threshold);
  EXPECT_EQ(c.pixel.low, 0.5);
  EXPECT_DOUBLE_EQ(c.accuracy(), 0.9);
  EXPECT_EQ(c.normal_scores.count, 10);
  EXPECT_DOUBLE_EQ(c.normal_scores.mean, 5.5);
}

}  // namespace
}  // namespace anomalysd

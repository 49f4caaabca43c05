// Decision thresholds and the scores an operator reads: pure functions of scores.
//
// - F1-adaptive (anomalib's default): the threshold behind the F1-max of labelled scores
//   (CurveSummary::f1_threshold, metrics.h).
// - From normal images alone: the lowest threshold at which at most a given fraction of the normal
//   scores would be called anomalous (a quantile of the normal scores).
// - Normalised scores: a piecewise-linear map of raw scores onto [0, 1] with the threshold at 0.5
//   (the lowest calibration score at 0, the highest at 1, clamped outside) — anomalib's min–max
//   normalisation, made exact at both ends; monotone, so the decision "normalised ≥ 0.5" is the
//   decision "raw ≥ threshold".
#pragma once

#include <cstdint>
#include <vector>

namespace anomalysd {

struct FalseAlarmThreshold {
  double threshold = 0;      // score ≥ threshold = anomalous
  int64_t normal_images = 0; // how many normal scores the estimate rests on
  int64_t false_alarms = 0;  // of them, how many score ≥ threshold (≤ ⌊max_false_alarm · n⌋)
  // The smallest false-alarm rate these images can resolve (1/n): a target below it puts the
  // threshold just above the highest normal score.
  double resolution = 0;
};

// The lowest threshold t (a value just above one of the scores, or above all) such that
// #{s ≥ t} ≤ ⌊max_false_alarm · n⌋. max_false_alarm in [0, 1); scores finite, at least one.
FalseAlarmThreshold false_alarm_threshold(std::vector<double> normal_scores, double max_false_alarm);

// Raw score ↦ [0, 1]: low ↦ 0, threshold ↦ 0.5, high ↦ 1, linear in between, clamped outside.
// A degenerate side (low ≥ threshold, or high ≤ threshold) is a step at the threshold.
struct ScoreScale {
  double threshold = 0, low = 0, high = 0;

  double normalize(double score) const;
  // The raw score whose normalised value is `normalized` (the inverse on [low, high]):
  // raw_at(0.5) == threshold exactly.
  double raw_at(double normalized) const;
  // The raw decision threshold at a sensitivity in [0, 1]: an image is anomalous when its
  // normalised score ≥ 1 − sensitivity, i.e. raw ≥ raw_at(1 − sensitivity). 0.5 = the calibrated
  // threshold; higher flags more, lower fewer.
  double threshold_at_sensitivity(double sensitivity) const { return raw_at(1.0 - sensitivity); }
};

}  // namespace anomalysd

#include "anomalysd/metrics/threshold.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "anomalysd/io/errors.h"

namespace anomalysd {

FalseAlarmThreshold false_alarm_threshold(std::vector<double> scores, double max_false_alarm) {
  if (scores.empty()) throw InputError("a false-alarm threshold needs at least one normal score");
  if (!(max_false_alarm >= 0.0 && max_false_alarm < 1.0))
    throw InputError("the false-alarm target must be in [0, 1), got " + std::to_string(max_false_alarm));
  for (double s : scores)
    if (!std::isfinite(s)) throw InputError("a normal score is NaN or Inf");
  std::sort(scores.begin(), scores.end(), std::greater<double>());
  const auto n = static_cast<int64_t>(scores.size());
  // The tolerance keeps e.g. 0.01 · 300 = 3 from flooring to 2 through rounding.
  const auto allowed = static_cast<int64_t>(std::floor(max_false_alarm * static_cast<double>(n) + 1e-9));
  FalseAlarmThreshold out;
  out.normal_images = n;
  out.resolution = 1.0 / static_cast<double>(n);
  if (allowed >= n) {  // cannot happen for a target < 1; kept for safety
    out.threshold = scores.back();
    out.false_alarms = n;
    return out;
  }
  // Just above the (allowed + 1)-th highest score: every score above it (≤ allowed of them, ties
  // included) is a false alarm, it and the rest are not.
  out.threshold = std::nextafter(scores[static_cast<std::size_t>(allowed)], std::numeric_limits<double>::infinity());
  out.false_alarms = std::count_if(scores.begin(), scores.end(), [&](double s) { return s >= out.threshold; });
  return out;
}

double ScoreScale::normalize(double score) const {
  if (score == threshold) return 0.5;
  if (score < threshold) {
    if (!(low < threshold)) return 0.0;
    return std::clamp(0.5 * (score - low) / (threshold - low), 0.0, 0.5);
  }
  if (!(high > threshold)) return 1.0;
  return std::clamp(0.5 + 0.5 * (score - threshold) / (high - threshold), 0.5, 1.0);
}

double ScoreScale::raw_at(double normalized) const {
  const double q = std::clamp(normalized, 0.0, 1.0);
  if (q == 0.5) return threshold;
  if (q < 0.5) return low < threshold ? low + 2.0 * q * (threshold - low) : threshold;
  return high > threshold ? threshold + (2.0 * q - 1.0) * (high - threshold) : threshold;
}

}  // namespace anomalysd

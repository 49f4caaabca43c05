// Calibrations: per class, the decision threshold of the image score and of the anomaly map, and
// the score scales an operator reads (normalised so that 0.5 is the threshold), measured on data
// and stored with the identity of the run that measured them — model, config and shots — so that
// `infer --calibration` applies them only to the same model, config and shots.
//
// Two sources:
// - `eval` (labelled test images): the thresholds behind the image and the pixel F1-max it reports
//   (anomalib's F1-adaptive threshold); the scales span the lowest to the highest score seen.
// - `calibrate` (normal images only, as few-shot users have): the lowest threshold that keeps the
//   false alarms on the normal images within a target (a quantile of their scores); the pixel
//   threshold is the image one (an image's score is its map's maximum, so the predicted region
//   is what raised the alarm).
//
// calibration.json:
//   {"format": "anomalysd-calibration", "version": 1, "identity": {"model", "config"},
//    "classes": {"<class>": {"method", "image": {threshold, low, high}, "pixel": {...} | null,
//                            "shots": [pixel hashes], counts, F1s, normal-score statistics}}}
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "anomalysd/core/app_config.h"
#include "anomalysd/metrics/threshold.h"

namespace anomalysd {

// Summary statistics of a set of scores (NaN when empty).
struct ScoreStats {
  int64_t count = 0;
  double mean = 0, stddev = 0, min = 0, max = 0, p50 = 0, p95 = 0, p99 = 0;
  static ScoreStats of(std::vector<double> scores);
  nlohmann::json to_json() const;
};

struct ClassCalibration {
  std::string method;      // "f1-max" (labelled images) | "false-alarm" (normal images)
  ScoreScale image;        // image score: threshold, and the range normalised onto [0, 1]
  bool has_pixel = false;
  ScoreScale pixel;        // anomaly map values
  int64_t normal_images = 0, anomalous_images = 0;
  // f1-max: image and pixel F1 at the thresholds, and the images called anomalous there.
  double image_f1 = 0, pixel_f1 = 0;
  int64_t true_positives = 0, false_positives = 0;
  // false-alarm: the target, and how many of the normal images score at or above the threshold.
  double max_false_alarm = 0;
  int64_t false_alarms = 0;
  ScoreStats normal_scores;         // of the normal images the calibration saw
  std::vector<std::string> shots;   // image_set_identity of the class's shots

  // The share of the calibration's images that its image threshold labels correctly.
  double accuracy() const;
};

struct Calibration {
  nlohmann::json identity;  // calibration_identity(): model and config
  std::map<std::string, ClassCalibration> classes;

  nlohmann::json to_json() const;
  // FormatError naming the file and the key when it is missing, truncated or malformed.
  static Calibration load(const std::string& path);
  void save(const std::string& path) const;  // atomically
};

// The identity a calibration must share with the run that applies it.
nlohmann::json calibration_identity(const AppConfig& config, const std::string& model_dir);

// The class's calibration from `file`, if it was measured with this identity and these shots;
// otherwise InputError naming the file and what differs (or that the class has no entry).
ClassCalibration calibration_for(const Calibration& calibration, const std::string& file, const nlohmann::json& identity,
                                 const std::string& cls, const std::vector<std::string>& shots);

// From labelled images: scores [N] and labels (1 = anomalous), and the pixel F1-max threshold and
// map range when there were masks (NaN threshold: none).
ClassCalibration calibrate_from_labelled(const std::vector<double>& scores, const std::vector<uint8_t>& labels, double pixel_threshold,
                                         double pixel_f1, double map_min, double map_max);

// From normal images only: their scores and the lowest value of their maps.
ClassCalibration calibrate_from_normal(const std::vector<double>& normal_scores, double map_min, double max_false_alarm);

}  // namespace anomalysd

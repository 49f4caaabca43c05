// `anomalysd calibrate`: a class's decision threshold from normal images alone, for few-shot users
// who have no defective images. The normal images are scored with the model, config and shots that
// `infer` will use — a folder of extra good images (--normal), or, without one, the shots
// themselves, each against a prototype bank of the others (leave-one-out) — and the threshold is
// the lowest that keeps their false alarms within the target (--max-false-alarm: a quantile of the
// normal scores). The class's entry is added to the calibration file (a file of another model or
// config is refused), so that `infer --calibration FILE` applies it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "anomalysd/app/calibration.h"

namespace anomalysd {

struct CalibrateOptions {
  std::string config;                  // YAML file ("" = embedded default)
  std::vector<std::string> overrides;  // --set key=value
  std::string model;                   // pipeline folder (overrides model.path)
  std::string cls;
  std::string shots;                   // folder (or file) of the class's normal shots, as infer gets them
  std::string normal;                  // folder of further normal images; "" = leave-one-out over the shots
  bool recursive = false;
  std::string output;                  // calibration file (created, or the class added to it)
  double max_false_alarm = 0.01;
};

struct CalibrateSummary {
  ClassCalibration calibration;
  bool leave_one_out = false;
  std::vector<std::string> failed;  // unreadable normal images, skipped
  double seconds = 0;
  std::string output;
};

CalibrateSummary run_calibrate(const CalibrateOptions& options);

}  // namespace anomalysd

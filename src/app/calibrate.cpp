#include "anomalysd/app/calibrate.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>

#include <spdlog/spdlog.h>

#include "anomalysd/app/infer.h"
#include "anomalysd/app/method.h"
#include "anomalysd/app/run_identity.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/util/hash.h"
#include "anomalysd/util/progress.h"

namespace anomalysd {

namespace fs = std::filesystem;

CalibrateSummary run_calibrate(const CalibrateOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  // 1. options, and the file to add to (refused before any work when it is another run's)
  const AppConfig config = load_app_config(options.config, options.overrides);
  if (options.cls.empty()) throw InputError("--class is required");
  if (options.output.empty()) throw InputError("--output is required (the calibration file to write or add to)");
  if (options.shots.empty()) throw InputError("--shots is required: the normal shots that infer will use (they build the prototype bank)");
  if (!(options.max_false_alarm >= 0.0 && options.max_false_alarm < 1.0)) throw InputError("--max-false-alarm must be in [0, 1), e.g. 0.01");
  const std::string model_dir = model_dir_of(config, options.model);
  const std::vector<std::string> shots = list_images(options.shots);
  if (shots.empty()) throw FormatError(options.shots, "holds no shot images");
  const nlohmann::json identity = calibration_identity(config, model_dir);
  Calibration file;
  file.identity = identity;
  if (fs::exists(options.output)) {
    file = Calibration::load(options.output);
    if (file.identity != identity) {
      const std::string differs = identity_differences(file.identity, identity);
      throw InputError(options.output + ": holds the calibration of another model or config" + (differs.empty() ? std::string() : " (differs in: " + differs + ")") +
                       "; write this one to another file");
    }
  }
  const std::vector<std::string> shot_ids = image_set_identity(shots);
  const std::vector<std::string> normal = options.normal.empty() ? std::vector<std::string>{} : list_images(options.normal, options.recursive, {options.output});
  if (!options.normal.empty() && normal.empty()) throw FormatError(options.normal, "holds no images (PNG, JPEG, BMP or TIFF)");
  if (options.normal.empty() && shots.size() < 2)
    throw InputError("--shots holds 1 image: leave-one-out needs at least 2; give --normal DIR with further good images");

  // 2. the normal scores
  CalibrateSummary summary;
  summary.leave_one_out = options.normal.empty();
  summary.output = options.output;
  MethodRunner method(config, model_dir, true);
  std::vector<double> scores;
  double map_min = std::numeric_limits<double>::infinity();
  // A shot scored against its own bank is no fair sample of the normal scores: in --normal, left out.
  const std::set<std::string> shot_set(shot_ids.begin(), shot_ids.end());
  int64_t shots_left_out = 0;
  auto score = [&](const std::string& path) {
    try {
      const ModelImage image = read_model_image(path, config.resolution);
      if (!summary.leave_one_out && shot_set.count(hex(image.identity))) {
        ++shots_left_out;
        return;
      }
      const Detection d = method.detect(image);
      scores.push_back(d.score);
      map_min = std::min(map_min, d.map.min().item<double>());
    } catch (const InputError& e) {
      spdlog::error("skipped: {}", e.what());
      summary.failed.push_back(e.what());
    }
  };
  const std::vector<std::string>& images = summary.leave_one_out ? shots : normal;
  ProgressBar bar("calibrate " + options.cls, static_cast<int64_t>(images.size()), "img");
  if (summary.leave_one_out) {
    for (std::size_t i = 0; i < shots.size(); ++i) {
      std::vector<std::string> others = shots;
      others.erase(others.begin() + static_cast<std::ptrdiff_t>(i));
      method.set_class(options.cls, others);
      score(shots[i]);
      bar.advance();
    }
  } else {
    method.set_class(options.cls, shots);
    for (const auto& f : normal) {
      score(f);
      bar.advance();
    }
  }
  bar.finish();
  if (shots_left_out > 0) spdlog::info("left out {} image(s) of {} that are shots", shots_left_out, options.normal);
  if (scores.empty())
    throw InputError(shots_left_out > 0 && summary.failed.empty() ? options.normal + ": holds no normal images other than the shots"
                                                                   : "no normal image could be scored (each was named above)");

  // 3. the threshold, added to the file
  ClassCalibration c = calibrate_from_normal(scores, map_min, options.max_false_alarm);
  c.shots = shot_ids;
  file.classes[options.cls] = c;
  file.save(options.output);
  summary.calibration = c;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto n = c.normal_images;
  spdlog::info("class '{}': threshold {:.6g} from {} normal image(s) ({}): {} of them at or above it (target {:.3g}){}", options.cls, c.image.threshold, n,
               summary.leave_one_out ? "the shots, each against the others" : options.normal, c.false_alarms, options.max_false_alarm,
               options.max_false_alarm * static_cast<double>(n) < 1.0
                   ? fmt::format("; {} image(s) resolve a false-alarm rate of 1/{} at best, so the threshold sits just above the highest normal score", n, n)
                   : std::string());
  return summary;
}

}  // namespace anomalysd

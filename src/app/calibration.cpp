#include "anomalysd/app/calibration.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <ATen/ATen.h>

#include "anomalysd/app/run_identity.h"
#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/metrics/metrics.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "anomalysd-calibration";
constexpr int kVersion = 1;

double quantile(const std::vector<double>& sorted, double q) {  // linear interpolation (numpy's default)
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const auto i = static_cast<std::size_t>(std::floor(pos));
  const std::size_t j = std::min(i + 1, sorted.size() - 1);
  return sorted[i] + (pos - static_cast<double>(i)) * (sorted[j] - sorted[i]);
}

nlohmann::json scale_json(const ScoreScale& s) { return {{"threshold", s.threshold}, {"low", s.low}, {"high", s.high}}; }

// A finite number at `key` of `j`; FormatError naming the file and the key otherwise.
double number_at(const nlohmann::json& j, const std::string& key, const std::string& file, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) throw FormatError(file, "'" + where + key + "': missing or not a number");
  const double v = j[key].get<double>();
  if (!std::isfinite(v)) throw FormatError(file, "'" + where + key + "': not finite");
  return v;
}

ScoreScale scale_from(const nlohmann::json& j, const std::string& file, const std::string& where) {
  ScoreScale s;
  s.threshold = number_at(j, "threshold", file, where);
  s.low = number_at(j, "low", file, where);
  s.high = number_at(j, "high", file, where);
  if (s.low > s.threshold || s.high < s.threshold) throw FormatError(file, "'" + where + "': expected low <= threshold <= high");
  return s;
}

}  // namespace

ScoreStats ScoreStats::of(std::vector<double> s) {
  ScoreStats out;
  out.count = static_cast<int64_t>(s.size());
  if (s.empty()) {
    out.mean = out.stddev = out.min = out.max = out.p50 = out.p95 = out.p99 = std::numeric_limits<double>::quiet_NaN();
    return out;
  }
  std::sort(s.begin(), s.end());
  double sum = 0, sq = 0;
  for (double v : s) sum += v;
  out.mean = sum / static_cast<double>(s.size());
  for (double v : s) sq += (v - out.mean) * (v - out.mean);
  out.stddev = std::sqrt(sq / static_cast<double>(s.size()));
  out.min = s.front();
  out.max = s.back();
  out.p50 = quantile(s, 0.5);
  out.p95 = quantile(s, 0.95);
  out.p99 = quantile(s, 0.99);
  return out;
}

nlohmann::json ScoreStats::to_json() const {
  auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
  return {{"count", count}, {"mean", num(mean)}, {"std", num(stddev)}, {"min", num(min)},
          {"max", num(max)}, {"p50", num(p50)},  {"p95", num(p95)}, {"p99", num(p99)}};
}

double ClassCalibration::accuracy() const {
  const int64_t n = normal_images + anomalous_images;
  if (n == 0) return std::numeric_limits<double>::quiet_NaN();
  const int64_t correct = method == "f1-max" ? true_positives + (normal_images - false_positives) : normal_images - false_alarms;
  return static_cast<double>(correct) / static_cast<double>(n);
}

nlohmann::json Calibration::to_json() const {
  nlohmann::json classes_json = nlohmann::json::object();
  for (const auto& [name, c] : classes) {
    nlohmann::json j = {{"method", c.method},
                        {"image", scale_json(c.image)},
                        {"pixel", c.has_pixel ? scale_json(c.pixel) : nlohmann::json(nullptr)},
                        {"normal_images", c.normal_images},
                        {"anomalous_images", c.anomalous_images},
                        {"normal_scores", c.normal_scores.to_json()},
                        {"accuracy", c.accuracy()},
                        {"shots", c.shots}};
    if (c.method == "f1-max") {
      j["image_f1"] = c.image_f1;
      if (c.has_pixel) j["pixel_f1"] = c.pixel_f1;
      j["true_positives"] = c.true_positives;
      j["false_positives"] = c.false_positives;
    } else {
      j["max_false_alarm"] = c.max_false_alarm;
      j["false_alarms"] = c.false_alarms;
    }
    classes_json[name] = j;
  }
  return {{"format", kFormat}, {"version", kVersion}, {"identity", identity}, {"classes", classes_json}};
}

Calibration Calibration::load(const std::string& path) {
  const nlohmann::json j = read_json_file(path);  // missing or truncated: FormatError naming the file
  if (!j.is_object() || j.value("format", "") != kFormat) throw FormatError(path, "not a calibration file (expected \"format\": \"" + std::string(kFormat) + "\")");
  if (j.value("version", 0) != kVersion) throw FormatError(path, "calibration version " + j.value("version", nlohmann::json()).dump() + ", this build reads " + std::to_string(kVersion));
  if (!j.contains("identity") || !j["identity"].is_object()) throw FormatError(path, "'identity': missing");
  if (!j.contains("classes") || !j["classes"].is_object()) throw FormatError(path, "'classes': missing");
  Calibration c;
  c.identity = j["identity"];
  for (const auto& [name, e] : j["classes"].items()) {
    const std::string where = "classes." + name + ".";
    if (!e.is_object()) throw FormatError(path, "'" + where + "': not an object");
    ClassCalibration k;
    k.method = e.value("method", "");
    if (k.method != "f1-max" && k.method != "false-alarm") throw FormatError(path, "'" + where + "method': expected f1-max or false-alarm");
    if (!e.contains("image")) throw FormatError(path, "'" + where + "image': missing");
    k.image = scale_from(e["image"], path, where + "image.");
    k.has_pixel = e.contains("pixel") && !e["pixel"].is_null();
    if (k.has_pixel) k.pixel = scale_from(e["pixel"], path, where + "pixel.");
    k.normal_images = static_cast<int64_t>(number_at(e, "normal_images", path, where));
    k.anomalous_images = static_cast<int64_t>(number_at(e, "anomalous_images", path, where));
    if (k.method == "f1-max") {
      k.image_f1 = number_at(e, "image_f1", path, where);
      if (k.has_pixel) k.pixel_f1 = number_at(e, "pixel_f1", path, where);
      k.true_positives = static_cast<int64_t>(number_at(e, "true_positives", path, where));
      k.false_positives = static_cast<int64_t>(number_at(e, "false_positives", path, where));
    } else {
      k.max_false_alarm = number_at(e, "max_false_alarm", path, where);
      k.false_alarms = static_cast<int64_t>(number_at(e, "false_alarms", path, where));
    }
    if (e.contains("normal_scores") && e["normal_scores"].is_object()) {
      const auto& s = e["normal_scores"];
      k.normal_scores.count = s.value("count", int64_t{0});
      for (auto [key, field] : {std::pair{"mean", &ScoreStats::mean}, {"std", &ScoreStats::stddev}, {"min", &ScoreStats::min}, {"max", &ScoreStats::max},
                                {"p50", &ScoreStats::p50}, {"p95", &ScoreStats::p95}, {"p99", &ScoreStats::p99}})
        k.normal_scores.*field = s.contains(key) && s[key].is_number() ? s[key].get<double>() : std::numeric_limits<double>::quiet_NaN();
    }
    if (!e.contains("shots") || !e["shots"].is_array()) throw FormatError(path, "'" + where + "shots': missing");
    for (const auto& h : e["shots"]) {
      if (!h.is_string()) throw FormatError(path, "'" + where + "shots': expected image hashes");
      k.shots.push_back(h.get<std::string>());
    }
    c.classes[name] = k;
  }
  return c;
}

void Calibration::save(const std::string& path) const {
  if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
  write_file_atomically(path, json_text(to_json()));
}

nlohmann::json calibration_identity(const AppConfig& config, const std::string& model_dir) {
  return {{"model", fs::absolute(model_dir).lexically_normal().string()}, {"config", config_identity(config)}};
}

ClassCalibration calibration_for(const Calibration& c, const std::string& file, const nlohmann::json& identity, const std::string& cls,
                                 const std::vector<std::string>& shots) {
  if (c.identity != identity) {
    const std::string differs = identity_differences(c.identity, identity);
    throw InputError(file + ": calibrated on another model or config" + (differs.empty() ? std::string() : " (differs in: " + differs + ")") +
                     "; calibrate this one with `anomalysd eval` or `anomalysd calibrate`, or pass --threshold");
  }
  const auto it = c.classes.find(cls);
  if (it == c.classes.end()) {
    std::string have;
    for (const auto& [name, _] : c.classes) have += (have.empty() ? "" : ", ") + name;
    throw InputError(file + ": no calibration for class '" + cls + "' (it has: " + (have.empty() ? "none" : have) + ")");
  }
  std::vector<std::string> sorted = shots;
  std::sort(sorted.begin(), sorted.end());
  if (it->second.shots != sorted)
    throw InputError(file + ": class '" + cls + "' was calibrated with other shots (" + std::to_string(it->second.shots.size()) +
                     " image(s) then, " + std::to_string(sorted.size()) + " now, compared by their pixels); pass the same --shots, or calibrate again");
  return it->second;
}

ClassCalibration calibrate_from_labelled(const std::vector<double>& scores, const std::vector<uint8_t>& labels, double pixel_threshold,
                                         double pixel_f1, double map_min, double map_max) {
  if (scores.size() != labels.size() || scores.empty()) throw InputError("calibration: scores and labels must be non-empty and of equal length");
  std::vector<float> s(scores.begin(), scores.end());
  std::vector<uint8_t> l = labels;
  const ImageMetrics m = image_metrics(at::from_blob(s.data(), {static_cast<int64_t>(s.size())}, at::kFloat),
                                       at::from_blob(l.data(), {static_cast<int64_t>(l.size())}, at::kByte));
  if (m.positives == 0 || m.negatives == 0)
    throw InputError("calibration from labelled images needs normal and anomalous images (got " + std::to_string(m.negatives) + " and " +
                     std::to_string(m.positives) + "); use `anomalysd calibrate` for normal images alone");
  ClassCalibration c;
  c.method = "f1-max";
  const auto [lo, hi] = std::minmax_element(s.begin(), s.end());
  c.image = {m.f1_threshold, static_cast<double>(*lo), static_cast<double>(*hi)};
  c.image_f1 = m.f1_max;
  c.true_positives = m.f1_true_positives;
  c.false_positives = m.f1_false_positives;
  c.anomalous_images = m.positives;
  c.normal_images = m.negatives;
  std::vector<double> normal;
  for (std::size_t i = 0; i < scores.size(); ++i)
    if (!labels[i]) normal.push_back(scores[i]);
  c.normal_scores = ScoreStats::of(normal);
  if (std::isfinite(pixel_threshold)) {
    c.has_pixel = true;
    c.pixel = {pixel_threshold, std::min(map_min, pixel_threshold), std::max(map_max, pixel_threshold)};
    c.pixel_f1 = pixel_f1;
  }
  return c;
}

ClassCalibration calibrate_from_normal(const std::vector<double>& normal_scores, double map_min, double max_false_alarm) {
  const FalseAlarmThreshold t = false_alarm_threshold(normal_scores, max_false_alarm);
  ClassCalibration c;
  c.method = "false-alarm";
  c.normal_images = t.normal_images;
  c.max_false_alarm = max_false_alarm;
  c.false_alarms = t.false_alarms;
  c.normal_scores = ScoreStats::of(normal_scores);
  // No anomalous images: the scale runs from the lowest normal score (0) through the threshold
  // (0.5) to as far above it again (1).
  const double low = std::min(c.normal_scores.min, t.threshold);
  c.image = {t.threshold, low, t.threshold + (t.threshold - low)};
  c.has_pixel = true;
  const double pixel_low = std::min(map_min, t.threshold);
  c.pixel = {t.threshold, pixel_low, t.threshold + (t.threshold - pixel_low)};
  return c;
}

}  // namespace anomalysd

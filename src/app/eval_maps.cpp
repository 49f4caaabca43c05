#include "anomalysd/app/eval_maps.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "anomalysd/data/dataset.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/metrics/metrics.h"
#include "anomalysd/util/progress.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace {

std::string map_path(const std::string& maps, const TestSample& s) {
  return (fs::path(maps) / s.cls / "test" / s.defect / (s.id + ".tiff")).string();
}

// The first of the map folders that holds the sample's map (the first folder's path if none does).
std::string find_map(const EvalMapsOptions& options, const TestSample& s) {
  const std::string first = map_path(options.maps, s);
  if (fs::is_regular_file(first)) return first;
  for (const auto& dir : options.extra_maps) {
    const std::string p = map_path(dir, s);
    if (fs::is_regular_file(p)) return p;
  }
  return first;
}

}  // namespace

RunResults evaluate_maps(const EvalMapsOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const Dataset dataset = load_dataset(options.dataset, options.root, options.classes);
  if (!fs::is_directory(options.maps)) throw FormatError(options.maps, "maps folder not found");
  std::map<std::string, double> given_scores;
  std::vector<std::string> score_files;
  if (!options.scores_csv.empty()) score_files.push_back(options.scores_csv);
  score_files.insert(score_files.end(), options.extra_scores.begin(), options.extra_scores.end());
  for (const auto& file : score_files)
    for (const auto& [key, v] : read_scores_csv(file)) {
      const auto [it, inserted] = given_scores.emplace(key, v);
      if (!inserted && it->second != v) throw FormatError(file, "score of " + key + " differs from another score file's");
    }
  const bool with_scores = !score_files.empty();
  auto selected = [&](const TestSample& s) { return options.subset.empty() || options.subset.count(sample_key(s.cls, s.defect, s.id)) != 0; };

  // Every map must be there before any work starts.
  std::vector<std::string> missing;
  std::set<std::string> found;
  for (const auto& c : dataset.classes)
    for (const auto& s : c.test) {
      if (!selected(s)) continue;
      found.insert(sample_key(s.cls, s.defect, s.id));
      if (!fs::is_regular_file(find_map(options, s))) missing.push_back(find_map(options, s));
    }
  for (const auto& key : options.subset)
    if (!found.count(key)) throw InputError("sample " + key + " is not a test image of the dataset at " + options.root);
  if (!missing.empty()) {
    std::string list;
    for (std::size_t i = 0; i < missing.size() && i < 10; ++i) list += "\n  " + missing[i];
    if (missing.size() > 10) list += "\n  ... (" + std::to_string(missing.size()) + " in all)";
    throw InputError(std::to_string(missing.size()) + " anomaly map(s) missing:" + list);
  }

  RunResults results;
  results.dataset = options.dataset;
  results.method = options.method;
  results.setup = options.setup;
  results.config = {{"dataset", options.dataset}, {"root", options.root},          {"maps", options.maps},          {"scores_csv", options.scores_csv},
                    {"eval_size", options.eval_size}, {"fpr_limit", options.fpr_limit}, {"classes", options.classes}};
  for (const ClassData& full : dataset.classes) {
    ClassData c = full;
    c.test.clear();
    for (const auto& s : full.test)
      if (selected(s)) c.test.push_back(s);
    if (c.test.empty()) continue;
    const auto class_start = std::chrono::steady_clock::now();
    ProgressBar bar(c.name, static_cast<int64_t>(c.test.size()), "img");
    PixelMetricAccumulator pixels;
    std::vector<float> image_scores;
    std::vector<uint8_t> image_labels;
    for (const TestSample& s : c.test) {
      const auto [h, w] = read_image_size(s.image);
      cv::Mat mask = s.mask.empty() ? cv::Mat::zeros(h, w, CV_8U) : read_mask(s.mask);
      if (mask.rows != h || mask.cols != w)
        throw FormatError(s.mask, "mask is " + std::to_string(mask.cols) + "x" + std::to_string(mask.rows) + " but its image is " +
                                      std::to_string(w) + "x" + std::to_string(h));
      cv::Mat map = read_anomaly_map(find_map(options, s));
      const cv::Size size = options.eval_size > 0 ? cv::Size(static_cast<int>(options.eval_size), static_cast<int>(options.eval_size)) : mask.size();
      if (map.size() != size) cv::resize(map, map, size, 0, 0, cv::INTER_LINEAR);
      if (mask.size() != size) cv::resize(mask, mask, size, 0, 0, cv::INTER_NEAREST);
      if (c.has_masks) pixels.add(map.ptr<float>(), mask.ptr<uint8_t>(), map.rows, map.cols);
      const auto given = given_scores.find(sample_key(s.cls, s.defect, s.id));
      if (with_scores && given == given_scores.end())
        throw FormatError(score_files.front(), "no score for " + sample_key(s.cls, s.defect, s.id));
      double max_value;
      cv::minMaxLoc(map, nullptr, &max_value);
      image_scores.push_back(static_cast<float>(given != given_scores.end() ? given->second : max_value));
      image_labels.push_back(s.anomalous);
      bar.advance();
    }
    bar.finish();
    ClassResult r;
    r.name = c.name;
    r.test_images = static_cast<int64_t>(c.test.size());
    for (uint8_t l : image_labels) r.anomalous_images += l;
    const ImageMetrics im = image_metrics(at::from_blob(image_scores.data(), {static_cast<int64_t>(image_scores.size())}, at::kFloat),
                                          at::from_blob(image_labels.data(), {static_cast<int64_t>(image_labels.size())}, at::kByte));
    r.image_auroc = im.auroc;
    r.image_ap = im.ap;
    r.image_f1_max = im.f1_max;
    if (c.has_masks) {
      const PixelMetrics pm = pixels.compute(options.fpr_limit);
      r.pixel_auroc = pm.auroc;
      r.pixel_ap = pm.ap;
      r.pixel_f1_max = pm.f1_max;
      r.pixel_pro = pm.pro;
      r.pixel_f1_threshold = pm.f1_threshold;
      r.map_min = pm.map_min;
      r.map_max = pm.map_max;
    } else {
      r.pixel_auroc = r.pixel_ap = r.pixel_f1_max = r.pixel_pro = r.pixel_f1_threshold = std::numeric_limits<double>::quiet_NaN();
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - class_start).count();
    spdlog::info("{}: image AUROC {:.1f}, pixel AUROC {:.1f}, PRO {:.1f} ({:.1f} s)", c.name, 100 * r.image_auroc, 100 * r.pixel_auroc,
                 100 * r.pixel_pro, r.seconds);
    results.classes.push_back(r);
  }
  results.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return results;
}

}  // namespace anomalysd

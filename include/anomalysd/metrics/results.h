// Results of an evaluation: per-class metrics, means over classes as the paper reports them, and
// the files every evaluating command writes — metrics.json (everything, including the run's config,
// sampled shots, versions and timing), metrics.csv and a paper-style table.md (Table 1 layout).
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace anomalysd {

// Metric values are fractions in [0, 1]; NaN where undefined (e.g. pixel metrics without masks).
struct ClassResult {
  std::string name;
  double image_auroc = 0, image_ap = 0, image_f1_max = 0;
  double pixel_auroc = 0, pixel_ap = 0, pixel_f1_max = 0, pixel_pro = 0;
  int64_t test_images = 0, anomalous_images = 0;
  double seconds = 0;
  // Not metric columns (what a calibration needs; not in metrics.json): the map value behind the
  // pixel F1-max and the range of the maps' values.
  double pixel_f1_threshold = 0, map_min = 0, map_max = 0;
};

struct RunResults {
  std::string dataset;  // mvtec | visa | folder
  std::string method = "AnomalySD";
  std::string setup;    // e.g. "1-shot"
  std::string note;     // e.g. "first 10 test images per class": printed under the tables
  std::vector<ClassResult> classes;
  nlohmann::json config = nlohmann::json::object();
  nlohmann::json shots = nlohmann::json::object();
  nlohmann::json versions = nlohmann::json::object();
  double seconds = 0;

  ClassResult mean() const;  // mean over classes of each metric, NaNs left out
  nlohmann::json to_json() const;
  static RunResults from_json(const nlohmann::json& j, const std::string& where);
  static RunResults load(const std::string& path);
};

std::string results_csv(const RunResults& r);
// Table 1 layout: Setup | Method | image AUROC / AUPR / F1-max | pixel AUROC / PRO (percent, one
// decimal), then a per-class table with every metric.
std::string results_table(const RunResults& r);

// Table 1 of the paper across settings: one row per run (dataset, setup, method), mean metrics.
std::string settings_table(const std::vector<RunResults>& runs);

// Writes `json_path` and, beside it, metrics.csv and table.md — each atomically.
void write_results(const RunResults& r, const std::string& json_path);

// "class/defect/id": how samples are named in score files, subsets and shards.
std::string sample_key(const std::string& cls, const std::string& defect, const std::string& id);

// Reads a scores CSV (header class,defect,id,score) into sample key -> score.
std::map<std::string, double> read_scores_csv(const std::string& path);

// One table from several partial runs (e.g. classes evaluated on different machines). Dataset,
// method and setup must agree; a class may appear only once.
RunResults merge_results(const std::vector<RunResults>& runs, const std::vector<std::string>& sources);

}  // namespace anomalysd

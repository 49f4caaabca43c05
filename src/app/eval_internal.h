// The parts of `anomalysd eval` (app/eval.h), shared by its files: one run or shard (eval.cpp),
// --shard auto and the union of the shards (eval_shards.cpp). Private to the library.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "anomalysd/app/calibration.h"
#include "anomalysd/app/eval.h"
#include "anomalysd/app/eval_maps.h"
#include "anomalysd/data/dataset.h"
#include "anomalysd/metrics/results.h"

namespace anomalysd::eval_detail {

// <output>/maps/<class>/test/<defect>/<id>.tiff
std::string map_file(const std::filesystem::path& output, const TestSample& s);

// The ablation variants written from the same inpaintings: folder name, table label.
struct Variant {
  std::string name, label;
};
const std::vector<Variant>& ablation_variants();

// An ablation's metrics from its maps (`maps` options), labelled and recorded like the main
// results of the same run, written to <output>/variants/<name>/metrics.json.
RunResults write_variant_results(EvalMapsOptions maps, const RunResults& main, const Variant& v, const std::filesystem::path& output);

// `path` relative to `root` when inside it, else as given.
std::string relative_to(const std::string& path, const std::string& root);

// <output>/scores.csv: class,defect,id,score per image.
void write_scores(const std::filesystem::path& output, const std::map<std::string, double>& scores);

// An evaluation's calibration (app/calibration.h): per class of `results`, the thresholds behind
// its image and pixel F1-max, from the scores of its evaluated `samples`. A class without both
// normal and anomalous images gets none (logged).
Calibration eval_calibration(const RunResults& results, const std::map<std::string, double>& scores, const std::vector<TestSample>& samples,
                             const nlohmann::json& identity, const ShotSelection& shots);

// One run, or the shard --shard I/N names (eval.cpp); --shard auto (eval_shards.cpp).
EvalSummary run_eval_here(const EvalOptions& options);
EvalSummary run_eval_auto(const EvalOptions& options);

}  // namespace anomalysd::eval_detail

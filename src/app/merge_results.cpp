// `merge-results`: eval folders (shards of one run) and metrics files joined into one table.
#include "anomalysd/app/eval.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include <spdlog/spdlog.h>

#include "anomalysd/app/method.h"
#include "anomalysd/anomaly/scores.h"
#include "anomalysd/app/report.h"
#include "anomalysd/app/run_identity.h"
#include "anomalysd/app/calibration.h"
#include "anomalysd/core/distributed.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/util/hash.h"
#include "anomalysd/app/eval_maps.h"
#include "anomalysd/util/progress.h"
#include "anomalysd/core/version.h"

namespace anomalysd {

namespace fs = std::filesystem;

std::vector<RunResults> merge_runs(const std::vector<std::string>& inputs, const std::string& output, const std::string& root) {
  if (inputs.empty()) throw InputError("merge-results: no inputs");
  // Eval folders grouped by config hash (shards of one run); plain metrics files as they are.
  struct Group {
    nlohmann::json first;
    std::vector<std::string> folders;
    std::set<std::string> samples;
  };
  std::map<std::string, Group> groups;
  std::vector<std::string> group_order;
  std::vector<RunResults> parts;
  std::vector<std::string> part_sources;
  for (const auto& in : inputs) {
    const fs::path p(in);
    if (fs::is_directory(p) && fs::is_regular_file(p / "run.json")) {
      const nlohmann::json run = read_json_file((p / "run.json").string());
      if (run.value("format", "") != "anomalysd-eval-run") throw FormatError((p / "run.json").string(), "not an anomalysd eval run");
      const std::string key = run.value("config_hash", "") + "|" + run.value("setting", "") + "|" + run.value("method", "");
      if (!groups.count(key)) group_order.push_back(key);
      Group& g = groups[key];
      if (g.folders.empty()) g.first = run;
      g.folders.push_back(p.string());
      for (const auto& s : run.at("samples")) g.samples.insert(s.get<std::string>());
    } else {
      const std::string file = fs::is_directory(p) ? (p / "metrics.json").string() : in;
      parts.push_back(RunResults::load(file));
      part_sources.push_back(file);
    }
  }
  for (const auto& key : group_order) {
    const Group& g = groups[key];
    EvalMapsOptions m;
    m.dataset = g.first.at("dataset");
    m.root = root.empty() ? g.first.at("root").get<std::string>() : root;
    m.classes = g.first.at("classes").get<std::vector<std::string>>();
    m.method = g.first.value("method", "AnomalySD");
    m.setup = g.first.value("setting", "");
    m.maps = (fs::path(g.folders[0]) / "maps").string();
    m.scores_csv = (fs::path(g.folders[0]) / "scores.csv").string();
    for (std::size_t i = 1; i < g.folders.size(); ++i) {
      m.extra_maps.push_back((fs::path(g.folders[i]) / "maps").string());
      m.extra_scores.push_back((fs::path(g.folders[i]) / "scores.csv").string());
    }
    m.subset = g.samples;
    spdlog::info("merge-results: {} ({}) from {} folder(s), {} test images", m.setup, m.method, g.folders.size(), g.samples.size());
    RunResults r = evaluate_maps(m);
    nlohmann::json cfg = g.first;
    cfg.erase("samples");
    cfg["merged_from"] = g.folders;
    r.config = cfg;
    r.shots = g.first.value("shots", nlohmann::json::object());
    r.versions = g.first.value("versions", nlohmann::json::object());
    if (g.first.value("limit_per_class", 0) > 0)
      r.note = "first " + std::to_string(g.first.value("limit_per_class", 0)) + " test images per class (--limit-per-class)";
    parts.push_back(r);
    part_sources.push_back(g.folders[0]);
  }
  // Parts of one setting (dataset, setup, method) hold disjoint classes: joined into one table.
  std::vector<std::string> order;
  std::map<std::string, std::pair<std::vector<RunResults>, std::vector<std::string>>> settings;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::string key = parts[i].dataset + "|" + parts[i].setup + "|" + parts[i].method;
    if (!settings.count(key)) order.push_back(key);
    settings[key].first.push_back(parts[i]);
    settings[key].second.push_back(part_sources[i]);
  }
  std::vector<RunResults> merged;
  for (const auto& key : order) {
    auto& [runs, sources] = settings[key];
    merged.push_back(runs.size() == 1 ? runs[0] : merge_results(runs, sources));
  }
  fs::create_directories(output);
  if (merged.size() == 1) {
    write_results(merged[0], (fs::path(output) / "metrics.json").string());
  } else {
    for (const auto& r : merged) {
      std::string name = r.dataset + "_" + r.setup + "_" + r.method;
      for (char& c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
      fs::create_directories(fs::path(output) / name);
      write_results(r, (fs::path(output) / name / "metrics.json").string());
    }
    write_file_atomically((fs::path(output) / "table.md").string(), settings_table(merged));
  }
  return merged;
}

}  // namespace anomalysd

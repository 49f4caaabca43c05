// `eval --shard`: the shard plan (a fixed, per-class split of the test images) and --shard auto, which
// runs this process's shard and, when every shard is done, the metrics of their union.
#include "anomalysd/app/eval.h"
#include "app/eval_internal.h"

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

std::vector<TestSample> interleaved_by_defect(const std::vector<TestSample>& test) {
  std::map<std::string, std::vector<TestSample>> by_defect;
  for (const auto& s : test) by_defect[s.defect].push_back(s);
  std::vector<std::string> order;
  if (by_defect.count("good")) order.push_back("good");
  for (const auto& [d, v] : by_defect)
    if (d != "good") order.push_back(d);
  std::vector<TestSample> out;
  for (std::size_t i = 0; out.size() < test.size(); ++i)
    for (const auto& d : order)
      if (i < by_defect[d].size()) out.push_back(by_defect[d][i]);
  return out;
}

std::vector<TestSample> shard_of(const std::vector<TestSample>& test, int64_t index, int64_t count) {
  if (count <= 1) return test;
  std::vector<std::pair<uint64_t, std::size_t>> ranked;
  for (std::size_t i = 0; i < test.size(); ++i) ranked.emplace_back(fnv1a(sample_key(test[i].cls, test[i].defect, test[i].id)), i);
  std::sort(ranked.begin(), ranked.end());
  std::vector<std::size_t> mine;
  for (std::size_t r = 0; r < ranked.size(); ++r)
    if (static_cast<int64_t>(r % static_cast<std::size_t>(count)) == index) mine.push_back(ranked[r].second);
  std::sort(mine.begin(), mine.end());  // keep the listing order
  std::vector<TestSample> out;
  for (std::size_t i : mine) out.push_back(test[i]);
  return out;
}

std::pair<int64_t, int64_t> parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  try {
    if (slash == std::string::npos) throw std::invalid_argument("no slash");
    std::size_t a = 0, b = 0;
    const int64_t i = std::stoll(text.substr(0, slash), &a), n = std::stoll(text.substr(slash + 1), &b);
    if (a != slash || b != text.size() - slash - 1 || n < 1 || i < 0 || i >= n) throw std::invalid_argument("range");
    return {i, n};
  } catch (const std::exception&) {
    throw InputError("--shard " + text + ": expected I/N with 0 <= I < N, e.g. 0/4");
  }
}

namespace eval_detail {

namespace {

std::string shard_folder(const std::string& output, int64_t index, int64_t count) {
  return (fs::path(output) / "shards" / (std::to_string(index) + "-of-" + std::to_string(count))).string();
}

// Whether a shard folder holds a finished run of the same job (its metrics are written last).
bool shard_finished(const std::string& folder, const std::string& hash, int64_t index, int64_t count) {
  const fs::path run = fs::path(folder) / "run.json";
  if (!fs::is_regular_file(run) || !fs::is_regular_file(fs::path(folder) / "metrics.json")) return false;
  const nlohmann::json j = read_json_file(run.string());
  return j.value("config_hash", "") == hash && j.value("shard", nlohmann::json()) == nlohmann::json::array({index, count});
}

// The merged metrics, table and report of the union of the shards, in `o.output`; with
// --ablation-maps also the two ablations' metrics, in `o.output`/variants/<name>/.
void merge_shards(const EvalOptions& options, int64_t count, EvalSummary& summary) {
  std::vector<std::string> folders;
  for (int64_t i = 0; i < count; ++i) folders.push_back(shard_folder(options.output, i, count));
  const std::vector<RunResults> merged = merge_runs(folders, options.output);
  const RunResults& union_results = merged.at(0);
  // The report: every test image of the union, with its shard's score and map.
  const Dataset dataset = load_dataset(options.dataset, options.root, options.classes);
  std::map<std::string, std::string> by_key;  // sample key -> its shard's folder
  std::map<std::string, double> scores;
  for (const auto& folder : folders) {
    for (const auto& [k, v] : read_scores_csv((fs::path(folder) / "scores.csv").string())) scores[k] = v;
    const nlohmann::json run = read_json_file((fs::path(folder) / "run.json").string());
    for (const auto& key : run.at("samples")) by_key[key.get<std::string>()] = folder;
  }
  std::map<std::string, std::vector<ReportSample>> report_samples;
  for (const ClassData& c : dataset.classes)
    for (const TestSample& t : c.test) {
      const auto it = by_key.find(sample_key(t.cls, t.defect, t.id));
      if (it == by_key.end() || !scores.count(it->first)) continue;
      report_samples[t.cls].push_back({t, scores.at(it->first), map_file(it->second, t)});
    }
  // The calibration of the union (the shards share the run's identity: config, model, shots).
  std::vector<TestSample> merged_samples;
  for (const ClassData& c : dataset.classes)
    for (const TestSample& t : c.test)
      if (by_key.count(sample_key(t.cls, t.defect, t.id))) merged_samples.push_back(t);
  const nlohmann::json first_run = read_json_file((fs::path(folders.at(0)) / "run.json").string());
  const nlohmann::json& shard_identity = first_run.at("identity");
  const Calibration calibration =
      eval_calibration(union_results, scores, merged_samples, {{"model", shard_identity.at("model")}, {"config", shard_identity.at("config")}},
                       read_shots_file((fs::path(folders.at(0)) / "shots.json").string(), dataset));
  calibration.save((fs::path(options.output) / "calibration.json").string());
  ReportOptions ro;
  ro.title = "AnomalySD on " + options.dataset + ", " + union_results.setup + " (" + union_results.method + "), " + std::to_string(count) + " shards";
  ro.tables_markdown = {results_table(union_results)};
  for (const auto& [cls, c] : calibration.classes) ro.scales[cls] = {c.image, c.has_pixel ? c.pixel : c.image};
  write_report(options.output, report_samples, ro);
  summary.results = union_results;
  summary.merged = true;
  summary.variant_results.clear();
  for (const auto& v : ablation_variants()) {
    bool every = true;
    for (const auto& folder : folders) every = every && fs::is_regular_file(fs::path(folder) / "variants" / v.name / "scores.csv");
    if (!every) continue;
    EvalMapsOptions m;
    m.dataset = options.dataset;
    m.root = options.root;
    m.classes = union_results.config.value("classes", std::vector<std::string>{});
    m.setup = union_results.setup;
    for (std::size_t i = 0; i < folders.size(); ++i) {
      const fs::path dir = fs::path(folders[i]) / "variants" / v.name;
      (i == 0 ? m.maps : m.extra_maps.emplace_back()) = (dir / "maps").string();
      (i == 0 ? m.scores_csv : m.extra_scores.emplace_back()) = (dir / "scores.csv").string();
    }
    for (const auto& [key, folder] : by_key) m.subset.insert(key);
    summary.variant_results.push_back(write_variant_results(m, union_results, v, options.output));
  }
  spdlog::info("merged {} shard(s) into {}/{{metrics.json, metrics.csv, table.md, calibration.json, report.html, report.png}}{}", count, options.output,
               summary.variant_results.empty() ? "" : " and variants/*/metrics.json");
}

}  // namespace

EvalSummary run_eval_auto(const EvalOptions& options) {
  const AppConfig config = load_app_config(options.config, options.overrides);
  const LaunchEnv env = read_launch_env();
  const ArrayTask array = read_array_task();
  EvalOptions part = options;
  part.shard_auto = false;
  if (!env.distributed() && array.count == 0) {
    spdlog::info("--shard auto: a single process and no job array; evaluating every test image here");
    return run_eval_here(part);
  }
  const bool group_job = env.distributed();
  part.shard_index = group_job ? env.rank : array.index;
  part.shard_count = group_job ? env.world_size : array.count;
  part.output = shard_folder(options.output, part.shard_index, part.shard_count);
  // Device and threads per rank (neither is part of the maps' identity).
  const RuntimeConfig rank_runtime = runtime_for_rank(config.runtime, env);
  if (rank_runtime.device != config.runtime.device) part.overrides.push_back("device=" + rank_runtime.device);
  if (rank_runtime.threads != config.runtime.threads) part.overrides.push_back("threads=" + std::to_string(rank_runtime.threads));
  const auto group = ProcessGroup::create(group_job ? env : LaunchEnv{}, config.distributed, resolves_to_cuda(rank_runtime));
  spdlog::info("--shard auto: shard {}/{} ({}) in {}", part.shard_index, part.shard_count, group_job ? "process group" : "Slurm job array",
               part.output);
  try {
    EvalSummary summary = run_eval_here(part);
    summary.shard_output = part.output;
    summary.output = options.output;
    const std::string hash = read_json_file((fs::path(part.output) / "run.json").string()).value("config_hash", "");
    if (group_job) {
      group->barrier("eval-shards-done");  // as long as the others are alive, however long their shards take
      if (group->is_main()) merge_shards(options, part.shard_count, summary);
      group->finish();
      return summary;
    }
    // A job array has no group: the task that finds every shard finished writes the union.
    std::vector<int64_t> pending;
    for (int64_t i = 0; i < part.shard_count; ++i)
      if (!shard_finished(shard_folder(options.output, i, part.shard_count), hash, i, part.shard_count)) pending.push_back(i);
    if (pending.empty()) {
      merge_shards(options, part.shard_count, summary);
    } else {
      spdlog::info("shard {}/{} done; {} shard(s) still running or not started (first: {}); the last task to finish writes the merged table "
                   "(or run: anomalysd merge-results {}/shards/* --output {})",
                   part.shard_index, part.shard_count, pending.size(), pending.front(), options.output, options.output);
    }
    return summary;
  } catch (const std::exception& e) {
    group->report_failure(e.what());
    throw;
  }
}

}  // namespace eval_detail

}  // namespace anomalysd

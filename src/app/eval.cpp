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

namespace {

std::string map_file(const fs::path& output, const TestSample& s) {
  return (output / "maps" / s.cls / "test" / s.defect / (s.id + ".tiff")).string();
}

// The ablation variants written from the same inpaintings: folder name, table label.
struct Variant {
  std::string name, label;
};
const std::vector<Variant>& ablation_variants() {
  static const std::vector<Variant> v = {{"multiscale", "multi-scale masks only"}, {"prototype", "prototype mask only"}};
  return v;
}

// An ablation's metrics from its maps (`maps` options), labelled and recorded like the main
// results of the same run, written to <output>/variants/<name>/metrics.json.
RunResults write_variant_results(EvalMapsOptions maps, const RunResults& main, const Variant& v, const fs::path& output) {
  maps.method = main.method + " (" + v.label + ")";
  RunResults r = evaluate_maps(maps);
  r.note = main.note;
  r.config = main.config;
  r.config["variant"] = v.name;
  r.shots = main.shots;
  r.versions = main.versions;
  fs::create_directories(output / "variants" / v.name);
  write_results(r, (output / "variants" / v.name / "metrics.json").string());
  return r;
}

std::string relative_to(const std::string& path, const std::string& root) {
  const fs::path rel = fs::path(path).lexically_normal().lexically_relative(fs::path(root).lexically_normal());
  if (rel.empty() || rel.string().rfind("..", 0) == 0) return path;
  return rel.generic_string();
}

void write_scores(const fs::path& output, const std::map<std::string, double>& scores) {
  std::ostringstream csv;
  csv << "class,defect,id,score\n";
  for (const auto& [key, v] : scores) {
    std::string line = key;
    std::replace(line.begin(), line.end(), '/', ',');
    csv << line << "," << std::setprecision(9) << v << "\n";
  }
  write_file_atomically((output / "scores.csv").string(), csv.str());
}

// An evaluation's calibration (app/calibration.h): per class of `results`, the thresholds behind
// its image and pixel F1-max, from the scores of its evaluated `samples`. A class without both
// normal and anomalous images gets none (logged).
Calibration eval_calibration(const RunResults& results, const std::map<std::string, double>& scores, const std::vector<TestSample>& samples,
                             const nlohmann::json& identity, const ShotSelection& shots) {
  Calibration calibration;
  calibration.identity = identity;
  for (const ClassResult& r : results.classes) {
    std::vector<double> class_scores;
    std::vector<uint8_t> labels;
    for (const TestSample& s : samples) {
      const auto it = scores.find(sample_key(s.cls, s.defect, s.id));
      if (s.cls != r.name || it == scores.end()) continue;
      // As the metrics rank them: float32 (a score read back from scores.csv is the same float).
      class_scores.push_back(static_cast<double>(static_cast<float>(it->second)));
      labels.push_back(s.anomalous ? 1 : 0);
    }
    if (r.anomalous_images == 0 || r.anomalous_images == r.test_images) {
      spdlog::warn("class '{}': no calibration written (it needs normal and anomalous test images; `anomalysd calibrate` needs normal ones only)", r.name);
      continue;
    }
    ClassCalibration c = calibrate_from_labelled(class_scores, labels, r.pixel_f1_threshold, r.pixel_f1_max, r.map_min, r.map_max);
    c.shots = image_set_identity(shots.shots.count(r.name) ? shots.shots.at(r.name) : std::vector<std::string>{});
    calibration.classes[r.name] = c;
  }
  return calibration;
}

}  // namespace

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

nlohmann::json shots_to_json(const ShotSelection& shots, const std::string& root) {
  ShotSelection rel = shots;
  for (auto& [cls, files] : rel.shots)
    for (auto& f : files) f = relative_to(f, root);
  return rel.to_json();
}

ShotSelection read_shots_file(const std::string& path, const Dataset& dataset) {
  ShotSelection s = ShotSelection::from_json(read_json_file(path), path);
  std::set<std::string> test_images;
  for (const auto& c : dataset.classes)
    for (const auto& t : c.test) test_images.insert(fs::absolute(t.image).lexically_normal().string());
  for (const auto& c : dataset.classes) {
    const auto it = s.shots.find(c.name);
    if (it == s.shots.end()) throw FormatError(path, "has no shots for class '" + c.name + "'");
    if (static_cast<int64_t>(it->second.size()) != s.k)
      throw FormatError(path, "class '" + c.name + "' has " + std::to_string(it->second.size()) + " shots, the file says k = " + std::to_string(s.k));
    for (auto& f : it->second) {
      const fs::path p = fs::path(f).is_absolute() ? fs::path(f) : fs::path(dataset.root) / f;
      if (!fs::is_regular_file(p)) throw FormatError(path, "shot image of class '" + c.name + "' not found: " + p.string());
      if (test_images.count(fs::absolute(p).lexically_normal().string()))
        throw FormatError(path, "shot image " + p.string() + " is a test image: shots must come from the training images");
      f = p.string();
    }
  }
  return s;
}

namespace {

EvalSummary run_eval_auto(const EvalOptions& o);
EvalSummary run_eval_here(const EvalOptions& o);

}  // namespace

EvalSummary run_eval(const EvalOptions& o) {
  if (o.shard_auto) return run_eval_auto(o);
  // Started as one of several ranks (torchrun, srun) without --shard auto, every rank would compute
  // every map into the same folder.
  const LaunchEnv env = read_launch_env();
  if (env.distributed() && o.shard_count == 1)
    throw InputError("started as rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) + " (" + env.launcher +
                     "): pass --shard auto to split the test images among the ranks (or --shard I/N per process)");
  return run_eval_here(o);
}

namespace {

EvalSummary run_eval_here(const EvalOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const AppConfig config = load_app_config(o.config, o.overrides);
  if (o.output.empty()) throw InputError("--output is required");
  if (o.shard_count < 1 || o.shard_index < 0 || o.shard_index >= o.shard_count) throw InputError("--shard: expected I/N with 0 <= I < N");
  const Dataset dataset = load_dataset(o.dataset, o.root, o.classes);
  const std::string model_dir = model_dir_of(config, o.model);

  // 1. shots: sampled with the run's seed, or the record given (finetune's, or another run's)
  ShotSelection shots;
  if (!o.shots_file.empty()) {
    shots = read_shots_file(o.shots_file, dataset);
    if (o.shots >= 0 && o.shots != shots.k)
      throw InputError("--shots " + std::to_string(o.shots) + " but " + o.shots_file + " records k = " + std::to_string(shots.k));
  } else {
    if (o.shots < 0) throw InputError("give --shots K (or --shots-file)");
    shots = sample_shots(dataset, o.shots, static_cast<uint64_t>(config.runtime.seed));
  }
  const nlohmann::json shots_json = shots_to_json(shots, dataset.root);
  const fs::path model_shots = fs::path(model_dir) / "shots.json";
  if (fs::is_regular_file(model_shots)) {
    const nlohmann::json trained = read_json_file(model_shots.string());
    bool same = trained.value("k", -1) == shots.k;
    for (const auto& c : dataset.classes)
      same = same && trained.contains("shots") && trained["shots"].contains(c.name) && trained["shots"][c.name] == shots_json["shots"][c.name];
    if (!same)
      spdlog::warn("!!! the model was fine-tuned on other shots than this evaluation uses ({} vs {}): its results are not the "
                   "paper's protocol. Pass --shots-file {} to evaluate on the images it was tuned on. !!!",
                   model_shots.string(), o.shots_file.empty() ? "freshly sampled" : o.shots_file, model_shots.string());
  }

  // 2. the test images of this run: limited (interleaving defects), then this shard's share
  std::vector<TestSample> todo;
  std::map<std::string, std::vector<TestSample>> per_class;
  for (const ClassData& c : dataset.classes) {
    std::vector<TestSample> list = interleaved_by_defect(c.test);
    if (o.limit_per_class > 0 && static_cast<int64_t>(list.size()) > o.limit_per_class) list.resize(static_cast<std::size_t>(o.limit_per_class));
    list = shard_of(list, o.shard_index, o.shard_count);
    per_class[c.name] = list;
    todo.insert(todo.end(), list.begin(), list.end());
  }
  std::vector<std::string> sample_keys;
  for (const auto& s : todo) sample_keys.push_back(sample_key(s.cls, s.defect, s.id));
  // Ground truth is read at the end; a broken mask is named now, before hours of inpainting.
  for (const auto& s : todo) {
    if (s.mask.empty()) continue;
    const cv::Mat mask = read_mask(s.mask);
    const auto [h, w] = read_image_size(s.image);
    if (mask.rows != h || mask.cols != w)
      throw FormatError(s.mask, "mask is " + std::to_string(mask.cols) + "x" + std::to_string(mask.rows) + " but its image is " +
                                    std::to_string(w) + "x" + std::to_string(h));
  }

  // 3. run.json: what determines the maps, hashed; a rerun with another hash is refused
  std::vector<std::string> class_names;
  for (const auto& c : dataset.classes) class_names.push_back(c.name);
  const std::string setting = o.setting.empty() ? std::to_string(shots.k) + "-shot" : o.setting;
  const nlohmann::json identity = {{"config", config_identity(config)}, {"model", fs::absolute(model_dir).lexically_normal().string()},
                                   {"dataset", o.dataset}, {"classes", class_names}, {"shots", shots_json},
                                   {"limit_per_class", o.limit_per_class}};
  const std::string hash = hex(fnv1a(json_compact(identity)));
  const fs::path out(o.output);
  const fs::path run_json = out / "run.json";
  if (fs::is_regular_file(run_json)) {
    const nlohmann::json previous = read_json_file(run_json.string());
    const std::string before = previous.value("config_hash", "");
    const bool same_shard = previous.value("shard", nlohmann::json::array({0, 1})) == nlohmann::json::array({o.shard_index, o.shard_count});
    if (before != hash || !same_shard) {
      const std::string differs = identity_differences(previous.value("identity", nlohmann::json()), identity);
      if (!o.overwrite)
        throw InputError(o.output + ": holds a run with another config, model, shots, numeric setup or shard (config hash " + before + ", now " +
                         hash + (differs.empty() ? std::string() : "; differs in: " + differs) +
                         "); rerun the same command to resume it, pass --overwrite to discard it, or choose another --output");
      spdlog::warn("--overwrite: discarding the previous run in {}", o.output);
      for (const char* p : {"maps", "report", "variants"}) fs::remove_all(out / p);
      for (const char* f : {"scores.csv", "metrics.json", "metrics.csv", "table.md", "report.html", "report.png", "run.json", "shots.json",
                            "calibration.json"})
        fs::remove(out / f);
    }
  }
  fs::create_directories(out / "maps");
  if (const int n = remove_stale_temporaries(o.output)) spdlog::info("removed {} temporary file(s) of an interrupted run", n);
  const nlohmann::json run = {{"format", "anomalysd-eval-run"},
                              {"config_hash", hash},
                              {"identity", identity},
                              {"config", config.to_yaml()},
                              {"model", model_dir},
                              {"dataset", o.dataset},
                              {"root", o.root},
                              {"classes", class_names},
                              {"k", shots.k},
                              {"shots", shots_json},
                              {"limit_per_class", o.limit_per_class},
                              {"shard", {o.shard_index, o.shard_count}},
                              {"samples", sample_keys},
                              {"setting", setting},
                              {"method", o.method},
                              {"versions", {{"anomalysd", project_version()}, {"libtorch", libtorch_version()}}}};
  write_file_atomically(run_json.string(), json_text(run));
  write_file_atomically((out / "shots.json").string(), json_text(shots_json));

  // 4. resume: an image is done when its map and its score are both there
  const bool variants = o.ablation_maps && config.inference.multiscale && config.inference.prototype_mask && shots.k > 0;
  if (o.ablation_maps && !variants)
    spdlog::warn("ablation maps need multi-scale and prototype masks and at least one shot; not written");
  std::map<std::string, double> scores;
  if (fs::is_regular_file(out / "scores.csv")) scores = read_scores_csv((out / "scores.csv").string());
  std::map<std::string, std::map<std::string, double>> variant_scores;
  if (variants)
    for (const auto& v : ablation_variants()) {
      const fs::path dir = out / "variants" / v.name;
      fs::create_directories(dir / "maps");
      if (fs::is_regular_file(dir / "scores.csv")) variant_scores[v.name] = read_scores_csv((dir / "scores.csv").string());
    }
  auto done = [&](const TestSample& s) {
    const std::string key = sample_key(s.cls, s.defect, s.id);
    if (!fs::is_regular_file(map_file(out, s)) || !scores.count(key)) return false;
    if (variants)
      for (const auto& v : ablation_variants())
        if (!fs::is_regular_file(map_file(out / "variants" / v.name, s)) || !variant_scores[v.name].count(key)) return false;
    return true;
  };
  std::vector<TestSample> pending;
  for (const auto& s : todo)
    if (!done(s)) pending.push_back(s);
  EvalSummary summary;
  summary.output = o.output;
  summary.images = static_cast<int64_t>(todo.size());
  summary.resumed = summary.images - static_cast<int64_t>(pending.size());
  if (summary.resumed > 0) spdlog::info("resuming: {} of {} maps already in {}", summary.resumed, summary.images, o.output);

  // 5. per class once: conditioning, λ, prototype bank; per image: map and score
  if (!pending.empty()) {
    MethodRunner method(config, model_dir, shots.k > 0);
    ProgressBar bar("eval " + o.dataset + " " + setting, static_cast<int64_t>(pending.size()), "img");
    std::string current;
    std::map<std::string, std::pair<double, int64_t>> class_time;
    for (const TestSample& s : pending) {
      if (s.cls != current) {
        method.set_class(s.cls, shots.shots.count(s.cls) ? shots.shots.at(s.cls) : std::vector<std::string>{});
        current = s.cls;
      }
      const auto t0 = std::chrono::steady_clock::now();
      const ModelImage image = read_model_image(s.image, config.resolution);
      const Detection d = method.detect(image);
      summary.unet_calls += d.unet_calls;
      // At the ground truth's size (= the image's): the official evaluation layout.
      const cv::Mat map = map_to_size(d.map, image.original.rows, image.original.cols);
      // The score first, then the map: an image counts as done only when its map exists, so a
      // kill between the two recomputes it.
      if (variants) {  // the ablations' maps first: the main map marks the image done
        for (const auto& v : ablation_variants()) {
          const torch::Tensor part = gaussian_blur(v.name == "multiscale" ? d.s_ms : d.s_pg, config.inference.blur_sigma);
          const fs::path dir = out / "variants" / v.name;
          variant_scores[v.name][sample_key(s.cls, s.defect, s.id)] = image_score(part);
          write_scores(dir, variant_scores[v.name]);
          fs::create_directories(fs::path(map_file(dir, s)).parent_path());
          write_map_tiff(map_file(dir, s), map_to_size(part, image.original.rows, image.original.cols));
        }
      }
      scores[sample_key(s.cls, s.defect, s.id)] = d.score;
      write_scores(out, scores);
      fs::create_directories(fs::path(map_file(out, s)).parent_path());
      write_map_tiff(map_file(out, s), map);
      auto& [secs, n] = class_time[s.cls];
      secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++n;
      ++summary.computed;
      bar.advance();
    }
    bar.finish();
    for (const auto& [cls, t] : class_time) summary.seconds_per_class[cls] = t.first / static_cast<double>(t.second);
  }

  // 6. metrics on this run's maps and scores, tables, report
  EvalMapsOptions m;
  m.dataset = o.dataset;
  m.root = o.root;
  m.maps = (out / "maps").string();
  m.scores_csv = (out / "scores.csv").string();
  m.classes = class_names;
  m.method = o.method;
  m.setup = setting;
  m.subset = std::set<std::string>(sample_keys.begin(), sample_keys.end());
  RunResults results = evaluate_maps(m);
  std::vector<std::string> notes;
  if (o.limit_per_class > 0) notes.push_back("first " + std::to_string(o.limit_per_class) + " test images per class (--limit-per-class)");
  if (o.shard_count > 1)
    notes.push_back("shard " + std::to_string(o.shard_index) + "/" + std::to_string(o.shard_count) +
                    " only: merge the shards with `anomalysd merge-results` for the full metrics");
  for (std::size_t i = 0; i < notes.size(); ++i) results.note += (i ? "; " : "") + notes[i];
  results.config = run;
  results.config.erase("samples");
  results.shots = shots_json;
  results.versions = run["versions"];
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  results.seconds = summary.seconds;
  write_results(results, (out / "metrics.json").string());
  // 7. calibration.json: per class the thresholds behind the image and the pixel F1-max, for
  //    `infer --calibration` (not for one shard: it saw a part of the images).
  Calibration calibration;
  if (o.shard_count == 1) {
    calibration = eval_calibration(results, scores, todo, calibration_identity(config, model_dir), shots);
    calibration.save((out / "calibration.json").string());
  }
  if (variants)
    for (const auto& v : ablation_variants()) {
      EvalMapsOptions vm = m;
      vm.maps = (out / "variants" / v.name / "maps").string();
      vm.scores_csv = (out / "variants" / v.name / "scores.csv").string();
      summary.variant_results.push_back(write_variant_results(vm, results, v, out));
    }

  std::map<std::string, std::vector<ReportSample>> report_samples;
  for (const auto& s : todo) report_samples[s.cls].push_back({s, scores.at(sample_key(s.cls, s.defect, s.id)), map_file(out, s)});
  ReportOptions ro;
  ro.title = "AnomalySD on " + o.dataset + ", " + setting + " (" + o.method + ")";
  ro.tables_markdown = {results_table(results)};
  for (const auto& [cls, c] : calibration.classes) ro.scales[cls] = {c.image, c.has_pixel ? c.pixel : c.image};
  write_report(o.output, report_samples, ro);

  double computed_seconds = 0;
  for (const auto& [cls, secs] : summary.seconds_per_class)
    computed_seconds += secs * static_cast<double>(std::count_if(pending.begin(), pending.end(), [&](const TestSample& t) { return t.cls == cls; }));
  summary.seconds_per_image = summary.computed ? computed_seconds / static_cast<double>(summary.computed) : 0.0;
  summary.results = results;
  return summary;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
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
void merge_shards(const EvalOptions& o, int64_t count, EvalSummary& summary) {
  std::vector<std::string> folders;
  for (int64_t i = 0; i < count; ++i) folders.push_back(shard_folder(o.output, i, count));
  const std::vector<RunResults> merged = merge_runs(folders, o.output);
  const RunResults& union_results = merged.at(0);
  // The report: every test image of the union, with its shard's score and map.
  const Dataset dataset = load_dataset(o.dataset, o.root, o.classes);
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
  calibration.save((fs::path(o.output) / "calibration.json").string());
  ReportOptions ro;
  ro.title = "AnomalySD on " + o.dataset + ", " + union_results.setup + " (" + union_results.method + "), " + std::to_string(count) + " shards";
  ro.tables_markdown = {results_table(union_results)};
  for (const auto& [cls, c] : calibration.classes) ro.scales[cls] = {c.image, c.has_pixel ? c.pixel : c.image};
  write_report(o.output, report_samples, ro);
  summary.results = union_results;
  summary.merged = true;
  summary.variant_results.clear();
  for (const auto& v : ablation_variants()) {
    bool every = true;
    for (const auto& folder : folders) every = every && fs::is_regular_file(fs::path(folder) / "variants" / v.name / "scores.csv");
    if (!every) continue;
    EvalMapsOptions m;
    m.dataset = o.dataset;
    m.root = o.root;
    m.classes = union_results.config.value("classes", std::vector<std::string>{});
    m.setup = union_results.setup;
    for (std::size_t i = 0; i < folders.size(); ++i) {
      const fs::path dir = fs::path(folders[i]) / "variants" / v.name;
      (i == 0 ? m.maps : m.extra_maps.emplace_back()) = (dir / "maps").string();
      (i == 0 ? m.scores_csv : m.extra_scores.emplace_back()) = (dir / "scores.csv").string();
    }
    for (const auto& [key, folder] : by_key) m.subset.insert(key);
    summary.variant_results.push_back(write_variant_results(m, union_results, v, o.output));
  }
  spdlog::info("merged {} shard(s) into {}/{{metrics.json, metrics.csv, table.md, calibration.json, report.html, report.png}}{}", count, o.output,
               summary.variant_results.empty() ? "" : " and variants/*/metrics.json");
}

EvalSummary run_eval_auto(const EvalOptions& o) {
  const AppConfig config = load_app_config(o.config, o.overrides);
  const LaunchEnv env = read_launch_env();
  const ArrayTask array = read_array_task();
  EvalOptions part = o;
  part.shard_auto = false;
  if (!env.distributed() && array.count == 0) {
    spdlog::info("--shard auto: a single process and no job array; evaluating every test image here");
    return run_eval_here(part);
  }
  const bool group_job = env.distributed();
  part.shard_index = group_job ? env.rank : array.index;
  part.shard_count = group_job ? env.world_size : array.count;
  part.output = shard_folder(o.output, part.shard_index, part.shard_count);
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
    summary.output = o.output;
    const std::string hash = read_json_file((fs::path(part.output) / "run.json").string()).value("config_hash", "");
    if (group_job) {
      group->barrier("eval-shards-done");  // as long as the others are alive, however long their shards take
      if (group->is_main()) merge_shards(o, part.shard_count, summary);
      group->finish();
      return summary;
    }
    // A job array has no group: the task that finds every shard finished writes the union.
    std::vector<int64_t> pending;
    for (int64_t i = 0; i < part.shard_count; ++i)
      if (!shard_finished(shard_folder(o.output, i, part.shard_count), hash, i, part.shard_count)) pending.push_back(i);
    if (pending.empty()) {
      merge_shards(o, part.shard_count, summary);
    } else {
      spdlog::info("shard {}/{} done; {} shard(s) still running or not started (first: {}); the last task to finish writes the merged table "
                   "(or run: anomalysd merge-results {}/shards/* --output {})",
                   part.shard_index, part.shard_count, pending.size(), pending.front(), o.output, o.output);
    }
    return summary;
  } catch (const std::exception& e) {
    group->report_failure(e.what());
    throw;
  }
}

}  // namespace

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

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

namespace eval_detail {

std::string map_file(const fs::path& output, const TestSample& s) {
  return (output / "maps" / s.cls / "test" / s.defect / (s.id + ".tiff")).string();
}

const std::vector<Variant>& ablation_variants() {
  static const std::vector<Variant> v = {{"multiscale", "multi-scale masks only"}, {"prototype", "prototype mask only"}};
  return v;
}

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

}  // namespace eval_detail

using namespace eval_detail;

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

EvalSummary run_eval(const EvalOptions& options) {
  if (options.shard_auto) return run_eval_auto(options);
  // Started as one of several ranks (torchrun, srun) without --shard auto, every rank would compute
  // every map into the same folder.
  const LaunchEnv env = read_launch_env();
  if (env.distributed() && options.shard_count == 1)
    throw InputError("started as rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) + " (" + env.launcher +
                     "): pass --shard auto to split the test images among the ranks (or --shard I/N per process)");
  return run_eval_here(options);
}

namespace eval_detail {

EvalSummary run_eval_here(const EvalOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const AppConfig config = load_app_config(options.config, options.overrides);
  if (options.output.empty()) throw InputError("--output is required");
  if (options.shard_count < 1 || options.shard_index < 0 || options.shard_index >= options.shard_count) throw InputError("--shard: expected I/N with 0 <= I < N");
  const Dataset dataset = load_dataset(options.dataset, options.root, options.classes);
  const std::string model_dir = model_dir_of(config, options.model);

  // 1. shots: sampled with the run's seed, or the record given (finetune's, or another run's)
  ShotSelection shots;
  if (!options.shots_file.empty()) {
    shots = read_shots_file(options.shots_file, dataset);
    if (options.shots >= 0 && options.shots != shots.k)
      throw InputError("--shots " + std::to_string(options.shots) + " but " + options.shots_file + " records k = " + std::to_string(shots.k));
  } else {
    if (options.shots < 0) throw InputError("give --shots K (or --shots-file)");
    shots = sample_shots(dataset, options.shots, static_cast<uint64_t>(config.runtime.seed));
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
                   model_shots.string(), options.shots_file.empty() ? "freshly sampled" : options.shots_file, model_shots.string());
  }

  // 2. the test images of this run: limited (interleaving defects), then this shard's share
  std::vector<TestSample> todo;
  std::map<std::string, std::vector<TestSample>> per_class;
  for (const ClassData& c : dataset.classes) {
    std::vector<TestSample> list = interleaved_by_defect(c.test);
    if (options.limit_per_class > 0 && static_cast<int64_t>(list.size()) > options.limit_per_class) list.resize(static_cast<std::size_t>(options.limit_per_class));
    list = shard_of(list, options.shard_index, options.shard_count);
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
  const std::string setting = options.setting.empty() ? std::to_string(shots.k) + "-shot" : options.setting;
  const nlohmann::json identity = {{"config", config_identity(config)}, {"model", fs::absolute(model_dir).lexically_normal().string()},
                                   {"dataset", options.dataset}, {"classes", class_names}, {"shots", shots_json},
                                   {"limit_per_class", options.limit_per_class}};
  const std::string hash = hex(fnv1a(json_compact(identity)));
  const fs::path out(options.output);
  const fs::path run_json = out / "run.json";
  if (fs::is_regular_file(run_json)) {
    const nlohmann::json previous = read_json_file(run_json.string());
    const std::string before = previous.value("config_hash", "");
    const bool same_shard = previous.value("shard", nlohmann::json::array({0, 1})) == nlohmann::json::array({options.shard_index, options.shard_count});
    if (before != hash || !same_shard) {
      const std::string differs = identity_differences(previous.value("identity", nlohmann::json()), identity);
      if (!options.overwrite)
        throw InputError(options.output + ": holds a run with another config, model, shots, numeric setup or shard (config hash " + before + ", now " +
                         hash + (differs.empty() ? std::string() : "; differs in: " + differs) +
                         "); rerun the same command to resume it, pass --overwrite to discard it, or choose another --output");
      spdlog::warn("--overwrite: discarding the previous run in {}", options.output);
      for (const char* p : {"maps", "report", "variants"}) fs::remove_all(out / p);
      for (const char* f : {"scores.csv", "metrics.json", "metrics.csv", "table.md", "report.html", "report.png", "run.json", "shots.json",
                            "calibration.json"})
        fs::remove(out / f);
    }
  }
  fs::create_directories(out / "maps");
  if (const int n = remove_stale_temporaries(options.output)) spdlog::info("removed {} temporary file(s) of an interrupted run", n);
  const nlohmann::json run = {{"format", "anomalysd-eval-run"},
                              {"config_hash", hash},
                              {"identity", identity},
                              {"config", config.to_yaml()},
                              {"model", model_dir},
                              {"dataset", options.dataset},
                              {"root", options.root},
                              {"classes", class_names},
                              {"k", shots.k},
                              {"shots", shots_json},
                              {"limit_per_class", options.limit_per_class},
                              {"shard", {options.shard_index, options.shard_count}},
                              {"samples", sample_keys},
                              {"setting", setting},
                              {"method", options.method},
                              {"versions", {{"anomalysd", project_version()}, {"libtorch", libtorch_version()}}}};
  write_file_atomically(run_json.string(), json_text(run));
  write_file_atomically((out / "shots.json").string(), json_text(shots_json));

  // 4. resume: an image is done when its map and its score are both there
  const bool variants = options.ablation_maps && config.inference.multiscale && config.inference.prototype_mask && shots.k > 0;
  if (options.ablation_maps && !variants)
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
  summary.output = options.output;
  summary.images = static_cast<int64_t>(todo.size());
  summary.resumed = summary.images - static_cast<int64_t>(pending.size());
  if (summary.resumed > 0) spdlog::info("resuming: {} of {} maps already in {}", summary.resumed, summary.images, options.output);

  // 5. per class once: conditioning, λ, prototype bank; per image: map and score
  if (!pending.empty()) {
    MethodRunner method(config, model_dir, shots.k > 0);
    ProgressBar bar("eval " + options.dataset + " " + setting, static_cast<int64_t>(pending.size()), "img");
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
  m.dataset = options.dataset;
  m.root = options.root;
  m.maps = (out / "maps").string();
  m.scores_csv = (out / "scores.csv").string();
  m.classes = class_names;
  m.method = options.method;
  m.setup = setting;
  m.subset = std::set<std::string>(sample_keys.begin(), sample_keys.end());
  RunResults results = evaluate_maps(m);
  std::vector<std::string> notes;
  if (options.limit_per_class > 0) notes.push_back("first " + std::to_string(options.limit_per_class) + " test images per class (--limit-per-class)");
  if (options.shard_count > 1)
    notes.push_back("shard " + std::to_string(options.shard_index) + "/" + std::to_string(options.shard_count) +
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
  if (options.shard_count == 1) {
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
  ro.title = "AnomalySD on " + options.dataset + ", " + setting + " (" + options.method + ")";
  ro.tables_markdown = {results_table(results)};
  for (const auto& [cls, c] : calibration.classes) ro.scales[cls] = {c.image, c.has_pixel ? c.pixel : c.image};
  write_report(options.output, report_samples, ro);

  double computed_seconds = 0;
  for (const auto& [cls, secs] : summary.seconds_per_class)
    computed_seconds += secs * static_cast<double>(std::count_if(pending.begin(), pending.end(), [&](const TestSample& t) { return t.cls == cls; }));
  summary.seconds_per_image = summary.computed ? computed_seconds / static_cast<double>(summary.computed) : 0.0;
  summary.results = results;
  return summary;
}

}  // namespace eval_detail

}  // namespace anomalysd

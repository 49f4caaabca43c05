#include "anomalysd/app/demo.h"
#include "app/demo_internal.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "anomalysd/anomaly/inpaint.h"
#include "anomalysd/app/eval.h"
#include "anomalysd/app/finetune.h"
#include "anomalysd/app/method.h"
#include "anomalysd/app/report.h"
#include "anomalysd/data/dataset.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/data/synthetic.h"
#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/metrics/eval_maps.h"
#include "anomalysd/models/clip_text.h"
#include "anomalysd/tools/components.h"
#include "anomalysd/train/optim.h"
#include "anomalysd/util/progress.h"
#include "anomalysd/core/version.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace demo_detail {

Plan plan_for(bool quick, const std::vector<std::string>& changes) {
  Plan p;
  if (quick) {
    p.train = 4;
    p.test_good = 8;
    p.test_bad = 8;
    p.bootstrap_images = 24;
    p.vae_steps = 200;
    p.unet_steps = 250;
    p.finetune_unet = 40;
    p.finetune_decoder = 10;
  }
  for (const std::string& c : changes) {
    const auto eq = c.find('=');
    if (eq == std::string::npos) throw InputError("--plan " + c + ": expected key=value");
    const std::string k = c.substr(0, eq), v = c.substr(eq + 1);
    auto list = [&] {
      std::vector<int64_t> out;
      std::stringstream ss(v);
      for (std::string item; std::getline(ss, item, ',');) out.push_back(std::stoll(item));
      return out;
    };
    try {
      if (k == "size") p.size = std::stoi(v);
      else if (k == "train") p.train = std::stoi(v);
      else if (k == "test_good") p.test_good = std::stoi(v);
      else if (k == "test_bad") p.test_bad = std::stoi(v);
      else if (k == "bootstrap_images") p.bootstrap_images = std::stoi(v);
      else if (k == "vae_steps") p.vae_steps = std::stoi(v);
      else if (k == "vae_batch") p.vae_batch = std::stoi(v);
      else if (k == "vae_lr") p.vae_lr = std::stod(v);
      else if (k == "unet_steps") p.unet_steps = std::stoi(v);
      else if (k == "unet_batch") p.unet_batch = std::stoi(v);
      else if (k == "unet_lr") p.unet_lr = std::stod(v);
      else if (k == "finetune_unet") p.finetune_unet = std::stoi(v);
      else if (k == "finetune_decoder") p.finetune_decoder = std::stoi(v);
      else if (k == "limit_per_class") p.limit_per_class = std::stoi(v);
      else if (k == "vae_channels") p.vae_channels = list();
      else if (k == "unet_channels") p.unet_channels = list();
      else throw InputError("--plan " + c + ": unknown key '" + k + "'");
    } catch (const std::logic_error&) {
      throw InputError("--plan " + c + ": bad value");
    }
  }
  return p;
}

}  // namespace demo_detail

using demo_detail::bootstrap;
using demo_detail::Plan;
using demo_detail::plan_for;

DemoSummary run_demo(const DemoOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const Plan plan = plan_for(o.quick, o.plan);
  const fs::path out(o.output), cache(o.cache);
  fs::create_directories(out);
  fs::create_directories(cache / "features");
  // The config: the embedded demo config (or the file given), written beside the results.
  const std::string config_file = o.config.empty() ? (out / "demo.yaml").string() : o.config;
  if (o.config.empty()) write_file_atomically(config_file, embedded_demo_config());
  std::vector<std::string> overrides = {"features.efficientnet=" + (cache / "features" / "efficientnet_b6.safetensors").string(),
                                        "features.alexnet=" + (cache / "features" / "alexnet.safetensors").string(),
                                        "features.lpips=" + (cache / "features" / "lpips.safetensors").string(),
                                        "resolution=" + std::to_string(plan.size)};
  overrides.insert(overrides.end(), o.overrides.begin(), o.overrides.end());
  const AppConfig config = load_app_config(config_file, overrides);
  apply_runtime(config.runtime);
  DemoSummary summary;
  summary.output = o.output;

  // 1. data
  spdlog::info("demo 1/5: the synthetic benchmark (anomalysd make-synthetic)");
  SyntheticOptions so;
  so.output = (out / "data").string();
  so.seed = static_cast<uint64_t>(config.runtime.seed);
  so.size = plan.size;
  so.train = plan.train;
  so.test_good = plan.test_good;
  so.test_bad = plan.test_bad;
  fs::remove_all(so.output);
  make_synthetic(so);

  // 2. feature weights and the bootstrap (cached)
  spdlog::info("demo 2/5: feature networks (anomalysd init-weights) and the bootstrap pre-training");
  const std::pair<const char*, std::string> features[] = {{"efficientnet_b6", config.features.efficientnet},
                                                          {"alexnet", config.features.alexnet},
                                                          {"lpips", config.features.lpips}};
  for (const auto& [arch, path] : features)
    if (o.rebuild || !fs::is_regular_file(path)) init_feature_weights(arch, static_cast<uint64_t>(config.runtime.seed), path);
  const std::string base = bootstrap(cache, plan, config, config_file, o.rebuild, &summary.bootstrap_seconds);
  summary.cache_used = summary.bootstrap_seconds == 0;

  // 3. 1-shot fine-tuning of the UNet and the decoder on the benchmark's shots
  spdlog::info("demo 3/5: 1-shot fine-tuning (anomalysd finetune)");
  const auto t_ft = std::chrono::steady_clock::now();
  FinetuneOptions f;
  f.config = config_file;
  f.overrides = overrides;
  if (plan.finetune_unet > 0) f.overrides.push_back("train.unet_steps=" + std::to_string(plan.finetune_unet));
  if (plan.finetune_decoder > 0) f.overrides.push_back("train.decoder_steps=" + std::to_string(plan.finetune_decoder));
  f.model = base;
  f.dataset = "folder";
  f.root = so.output;
  f.shots = 1;
  f.output = (out / "finetune").string();
  f.overwrite = true;
  const FinetuneSummary tuned = run_finetune(f);
  summary.finetune_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_ft).count();

  // 4. evaluations
  spdlog::info("demo 4/5: evaluation (anomalysd eval) of each setting");
  const auto t_eval = std::chrono::steady_clock::now();
  auto eval = [&](const std::string& name, const std::string& model, int64_t shots, const std::string& method, const std::string& setting,
                  const std::vector<std::string>& extra, bool ablations) {
    EvalOptions e;
    e.config = config_file;
    e.overrides = overrides;
    e.overrides.insert(e.overrides.end(), extra.begin(), extra.end());
    e.dataset = "folder";
    e.root = so.output;
    e.model = model;
    e.output = (out / "eval" / name).string();
    e.overwrite = true;
    e.method = method;
    e.setting = setting;
    e.ablation_maps = ablations;
    e.limit_per_class = plan.limit_per_class;
    if (shots > 0)
      e.shots_file = (fs::path(model) / "shots.json").string();
    else
      e.shots = 0;
    fs::remove_all(e.output);
    return run_eval(e);
  };
  const EvalSummary full = eval("full", tuned.model_dir, 1, "AnomalySD", "1-shot", {}, true);
  const EvalSummary zero = eval("zero-shot", base, 0, "AnomalySD w/o fine-tuning (base model, S_ms)", "0-shot", {}, false);
  const EvalSummary fast = eval("fast", tuned.model_dir, 1, "AnomalySD, CPU setting (grid2x2, 4 steps)", "1-shot",
                                {"inference.mask_packing=grid2x2", "inference.steps=4", "inference.mask_batch=9"}, false);
  const RunResults baseline = mean_image_baseline(so.output, (out / "eval" / "baseline" / "maps").string());
  summary.eval_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_eval).count();

  // 5. the table and the pictures
  spdlog::info("demo 5/5: results");
  summary.table = {full.results};
  summary.table.insert(summary.table.end(), full.variant_results.begin(), full.variant_results.end());
  summary.table.push_back(zero.results);
  summary.table.push_back(fast.results);
  summary.table.push_back(baseline);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::ostringstream md;
  md << "# AnomalySD demo: synthetic benchmark, " << full.results.classes.size() << " classes, " << plan.size << "x" << plan.size << "\n\n";
  md << settings_table(summary.table) << "\n";
  md << "Per class, full method:\n\n" << results_table(full.results) << "\n";
  char timing[512];
  std::snprintf(timing, sizeof timing,
                "Time: %.0f s in all (bootstrap %s, fine-tuning %.0f s, evaluations %.0f s); eval of the full method %.2f s per image.\n",
                summary.seconds, summary.cache_used ? "cached" : (std::to_string(static_cast<int>(summary.bootstrap_seconds)) + " s").c_str(),
                summary.finetune_seconds, summary.eval_seconds, full.seconds_per_image);
  md << timing;
  md << "\nFeature networks use random weights (no download): EfficientNet-B6, AlexNet and the LPIPS layers come from "
        "`anomalysd init-weights`; the SD pipeline is a small one pre-trained here on other synthetic images.\n";
  write_file_atomically((out / "table.md").string(), md.str());
  nlohmann::json all = {{"format", "anomalysd-demo"}, {"settings", nlohmann::json::array()},
                        {"timing", {{"seconds", summary.seconds}, {"bootstrap_seconds", summary.bootstrap_seconds},
                                    {"finetune_seconds", summary.finetune_seconds}, {"eval_seconds", summary.eval_seconds},
                                    {"full_seconds_per_image", full.seconds_per_image}, {"cache_used", summary.cache_used}}},
                        {"quick", o.quick}};
  for (const auto& r : summary.table) all["settings"].push_back(r.to_json());
  write_file_atomically((out / "metrics.json").string(), json_text(all));
  // The pictures of the full method, with the whole table.
  const Dataset dataset = load_dataset("folder", so.output);
  const auto scores = read_scores_csv((out / "eval" / "full" / "scores.csv").string());
  std::map<std::string, std::vector<ReportSample>> samples;
  for (const auto& c : dataset.classes)
    for (const auto& s : c.test) {
      const auto it = scores.find(sample_key(s.cls, s.defect, s.id));
      if (it == scores.end()) continue;
      samples[s.cls].push_back({s, it->second, (out / "eval" / "full" / "maps" / s.cls / "test" / s.defect / (s.id + ".tiff")).string()});
    }
  ReportOptions ro;
  ro.title = "AnomalySD demo on the synthetic benchmark";
  ro.tables_markdown = {settings_table(summary.table), results_table(full.results), timing};
  write_report(o.output, samples, ro);
  return summary;
}

}  // namespace anomalysd

// anomalysd — the command-line front end. Each subcommand parses its options, calls one library
// function and prints or writes the result; no algorithm lives here.
//
// Exit codes: 0 success; 1 unexpected failure; 2 bad input (a missing, corrupt or malformed
// file, an invalid config key, a bad command-line option).
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <tuple>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "anomalysd/app/calibrate.h"
#include "anomalysd/app/bootstrap.h"
#include "anomalysd/app/demo.h"
#include "anomalysd/app/eval.h"
#include "anomalysd/app/finetune.h"
#include "anomalysd/app/infer.h"
#include "anomalysd/core/app_config.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/data/photo_benchmark.h"
#include "anomalysd/data/synthetic.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/inspect.h"
#include "anomalysd/io/safetensors.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/app/eval_maps.h"
#include "anomalysd/models/attention_kernels.h"
#include "anomalysd/metrics/results.h"
#include "anomalysd/tools/components.h"
#include "anomalysd/core/runtime.h"
#include "anomalysd/util/logging.h"
#include "anomalysd/core/version.h"

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitBadInput = 2;
constexpr int kExitSomeFilesFailed = 3;  // infer: some images could not be read (the rest were written)

struct InspectOptions {
  std::string file;
  bool json = false;
};

int run_inspect(const InspectOptions& opts) {
  const auto file = anomalysd::SafetensorsFile::open(opts.file);
  if (opts.json)
    std::cout << anomalysd::inspect_json(file).dump(2) << "\n";
  else
    std::cout << anomalysd::inspect_table(file);
  return 0;
}

struct ConfigOptions {
  std::string file;
  std::vector<std::string> overrides;
};

int run_config(const ConfigOptions& opts) {
  const anomalysd::AppConfig config = anomalysd::load_app_config(opts.file, opts.overrides);
  std::cout << "# resolved config (" << (opts.file.empty() ? "embedded default" : opts.file) << ")\n" << config.to_yaml();
  return 0;
}

struct ForwardOptions {
  anomalysd::ForwardRequest request;
  std::string inputs;
  std::string output;
};

int run_forward(const ForwardOptions& opts) {
  std::map<std::string, at::Tensor> inputs;
  if (!opts.inputs.empty()) inputs = anomalysd::load_all(opts.inputs);
  const auto outputs = anomalysd::run_forward(opts.request, inputs);
  anomalysd::save_safetensors(opts.output, outputs, {{"format", "pt"}, {"component", opts.request.component}});
  for (const auto& [name, t] : outputs) {
    std::string shape;
    for (int64_t d : t.sizes()) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
    spdlog::info("{}: {} [{}]", name, c10::toString(t.scalar_type()), shape);
  }
  return 0;
}

struct BenchOptions {
  std::string component;
  std::string config;
  std::vector<int64_t> batches{1};
  int64_t repeats = 3;
  int64_t size = 0;
  int64_t threads = 0;
  std::string gemm = "auto";
  std::string attention = "auto";
  bool profile = false;
  std::vector<int64_t> attention_blocks;  // fused kernel: query rows, key columns
  std::string dtype = "float32";
};

int run_bench(const BenchOptions& opts) {
  anomalysd::RuntimeConfig rc;
  rc.device = "cpu";
  rc.threads = opts.threads;
  rc.cpu_gemm = opts.gemm;
  rc.attention = opts.attention;
  rc.dtype = opts.dtype;
  const anomalysd::Runtime rt = anomalysd::apply_runtime(rc);
  if (!opts.attention_blocks.empty()) anomalysd::set_fused_attention_blocks({opts.attention_blocks.at(0), opts.attention_blocks.at(1)});
  const std::string bf16 = anomalysd::cpu_native_bf16();
  std::printf("CPU GEMM: %s; attention: %s; %d threads; dtype %s (CPU bfloat16: %s)\n", rt.gemm.c_str(), opts.attention.c_str(), rt.threads,
              anomalysd::precision_name(rt.dtype), bf16.empty() ? "emulated" : bf16.c_str());
  std::printf("%-11s %5s %12s %14s %12s %s\n", "component", "batch", "median s", "s per sample", "peak RSS GiB", "runs (s)");
  for (const int64_t batch : opts.batches) {
    const auto f = opts.component == "eval-maps" ? anomalysd::bench_eval_maps(batch, opts.size > 0 ? opts.size : 512, opts.repeats)
                                              : anomalysd::bench_component(opts.component, opts.config, batch, opts.repeats, opts.size, opts.profile,
                                                                                 anomalysd::precision_name(rt.dtype));
    std::string runs;
    for (double s : f.seconds) runs += (runs.empty() ? "" : " ") + std::to_string(s).substr(0, 6);
    std::printf("%-11s %5lld %12.2f %14.2f %12.2f %s\n", f.what.c_str(), static_cast<long long>(f.batch), f.median_s,
                f.median_s / static_cast<double>(f.batch), f.peak_rss_gib, runs.c_str());
    if (!f.profile.empty()) std::printf("\nprofile of one more run (batch %lld):\n%s\n", static_cast<long long>(f.batch), f.profile.c_str());
    std::fflush(stdout);
  }
  return 0;
}

// SIGINT / SIGTERM end `infer --watch` cleanly (the image in progress is finished and written).
std::atomic<bool> g_stop{false};
extern "C" void request_stop(int) { g_stop.store(true); }

int run_infer_cli(anomalysd::InferOptions opts) {
  if (opts.watch) {
    opts.stop = &g_stop;
    std::signal(SIGINT, request_stop);
    std::signal(SIGTERM, request_stop);
  }
  const anomalysd::InferSummary s = anomalysd::run_infer(opts);
  std::printf("images: %lld scored, %lld failed; %lld already done (resumed)\n", static_cast<long long>(s.images), static_cast<long long>(s.failures),
              static_cast<long long>(s.resumed));
  for (const auto& f : s.failed) std::printf("  failed: %s\n", f.c_str());
  if (!s.decision.empty()) std::printf("verdicts: %lld of %lld anomalous (decision: %s)\n", static_cast<long long>(s.anomalous),
                                       static_cast<long long>(s.images), s.decision.c_str());
  if (s.images > 0)
    std::printf("time: %.1f s, %.2f s per image; masks per image: %lld; UNet calls per image: %.1f\n", s.seconds, s.seconds_per_image,
                static_cast<long long>(s.masks_per_image), s.unet_calls_per_image);
  std::printf("wrote %s/{maps/*.tiff, overlays/*.png%s, results.jsonl, scores.csv, scores.json}\n", s.output.c_str(),
              s.decision.empty() ? "" : ", masks/*.png");
  return s.failures > 0 ? kExitSomeFilesFailed : 0;
}

int run_calibrate_cli(const anomalysd::CalibrateOptions& opts) {
  const anomalysd::CalibrateSummary s = anomalysd::run_calibrate(opts);
  const auto& c = s.calibration;
  std::printf("class %s: image threshold %.6g from %lld normal image(s) (%s); %lld of them at or above it (target %.3g)\n", opts.cls.c_str(),
              c.image.threshold, static_cast<long long>(c.normal_images), s.leave_one_out ? "leave-one-out over the shots" : opts.normal.c_str(),
              static_cast<long long>(c.false_alarms), opts.max_false_alarm);
  std::printf("normal scores: mean %.4g, std %.4g, max %.4g\n", c.normal_scores.mean, c.normal_scores.stddev, c.normal_scores.max);
  for (const auto& f : s.failed) std::printf("  failed: %s\n", f.c_str());
  std::printf("wrote %s; use it with: anomalysd infer --calibration %s --class %s --shots %s ...\n", s.output.c_str(), s.output.c_str(), opts.cls.c_str(),
              opts.shots.c_str());
  return s.failed.empty() ? 0 : kExitSomeFilesFailed;
}

int run_finetune_cli(const anomalysd::FinetuneOptions& opts) {
  const anomalysd::FinetuneSummary s = anomalysd::run_finetune(opts);
  std::printf("fine-tuned on %lld image(s): %lld UNet step(s), %lld decoder step(s)%s\n", static_cast<long long>(s.images),
              static_cast<long long>(s.unet_steps), static_cast<long long>(s.decoder_steps),
              s.start_step > 0 ? (", resumed at step " + std::to_string(s.start_step)).c_str() : "");
  if (s.unet_steps > 0 && s.steps_run > 0) std::printf("UNet loss: %.5f -> %.5f\n", s.first_unet_loss, s.last_unet_loss);
  if (s.decoder_steps > 0 && s.steps_run > 0) std::printf("decoder loss: %.5f -> %.5f\n", s.first_decoder_loss, s.last_decoder_loss);
  std::printf("time: %.1f s, %.3f steps/s\n", s.seconds, s.steps_per_second);
  if (!s.finished) {
    std::printf("stopped early (--stop-after); continue with --resume\n");
    return 0;
  }
  std::printf("wrote %s (pipeline folder + shots.json); evaluate it with: anomalysd eval --model %s --shots-file %s/shots.json ...\n",
              s.model_dir.c_str(), s.model_dir.c_str(), s.model_dir.c_str());
  return 0;
}

struct InitWeightsCli {
  std::string arch;
  uint64_t seed = 0;
  std::string output;
};

struct EvalMapsCli {
  anomalysd::EvalMapsOptions options;
  std::string output;
};

int run_eval_maps(const EvalMapsCli& opts) {
  anomalysd::RunResults results = anomalysd::evaluate_maps(opts.options);
  results.versions = {{"anomalysd", anomalysd::project_version()}, {"libtorch", anomalysd::libtorch_version()}};
  const auto parent = std::filesystem::path(opts.output).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  anomalysd::write_results(results, opts.output);
  std::cout << anomalysd::results_table(results);
  spdlog::info("wrote {} (+ metrics.csv, table.md beside it)", opts.output);
  return 0;
}

struct MergeCli {
  std::vector<std::string> inputs;
  std::string output;
  std::string root;
};

int run_merge(const MergeCli& opts) {
  const auto merged = anomalysd::merge_runs(opts.inputs, opts.output, opts.root);
  if (merged.size() == 1)
    std::cout << anomalysd::results_table(merged[0]);
  else
    std::cout << anomalysd::settings_table(merged);
  spdlog::info("wrote {}/ ({})", opts.output, merged.size() == 1 ? "metrics.json, metrics.csv, table.md" : "table.md and one folder per setting");
  return 0;
}

struct EvalCli {
  anomalysd::EvalOptions options;
  std::string shard;
};

int run_eval_cli(EvalCli opts) {
  if (opts.shard == "auto")
    opts.options.shard_auto = true;
  else if (!opts.shard.empty())
    std::tie(opts.options.shard_index, opts.options.shard_count) = anomalysd::parse_shard(opts.shard);
  const anomalysd::EvalSummary s = anomalysd::run_eval(opts.options);
  if (!s.shard_output.empty())
    std::printf("%s\n", s.merged ? ("the union of every shard (" + s.shard_output + "/.. holds each)").c_str()
                                   : ("this shard only (" + s.shard_output + "); the merged table is written to " + s.output).c_str());
  std::cout << anomalysd::results_table(s.results);
  if (!s.variant_results.empty()) {
    std::vector<anomalysd::RunResults> all{s.results};
    all.insert(all.end(), s.variant_results.begin(), s.variant_results.end());
    std::cout << "\n" << anomalysd::settings_table(all);
  }
  std::printf("\nimages: %lld (%lld computed now, %lld from a previous run); UNet calls now: %lld\n", static_cast<long long>(s.images),
              static_cast<long long>(s.computed), static_cast<long long>(s.resumed), static_cast<long long>(s.unet_calls));
  if (s.computed > 0) {
    std::printf("time: %.1f s; %.2f s per image", s.seconds, s.seconds_per_image);
    for (const auto& [cls, sec] : s.seconds_per_class) std::printf("; %s %.2f", cls.c_str(), sec);
    std::printf("\n");
  }
  if (s.merged)
    std::printf("wrote %s/{metrics.json, metrics.csv, table.md, report.html, report.png} and each shard's run under %s/shards/\n",
                s.output.c_str(), s.output.c_str());
  else
    std::printf("wrote %s/{run.json, shots.json, maps/, scores.csv, metrics.json, metrics.csv, table.md, report.html, report.png}\n",
                (s.shard_output.empty() ? s.output : s.shard_output).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"anomalysd: few-shot multi-class anomaly detection with Stable Diffusion inpainting (AnomalySD)"};
  app.require_subcommand(0, 1);
  bool show_version = false;
  std::string log_level = "info";
  app.add_flag("--version", show_version, "Print versions (anomalysd, LibTorch, BLAS, CUDA) and exit");
  app.add_option("--log-level", log_level, "trace | debug | info | warn | error | off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->capture_default_str();

  InspectOptions inspect;
  CLI::App* inspect_cmd = app.add_subcommand("inspect", "List the tensors and metadata of a safetensors file");
  inspect_cmd->add_option("file", inspect.file, "FILE.safetensors")->required();
  inspect_cmd->add_flag("--json", inspect.json, "Machine-readable output");

  ConfigOptions config;
  CLI::App* config_cmd = app.add_subcommand("config", "Validate a YAML config and print it fully resolved");
  config_cmd->add_option("file", config.file, "CONFIG.yaml (default: the embedded default config)");
  config_cmd->add_option("--set", config.overrides, "Override a key: --set a.b.c=value (repeatable)");

  ForwardOptions forward;
  CLI::App* forward_cmd = app.add_subcommand("forward", "Run one model component on named input tensors (checks converted checkpoints)");
  forward_cmd->add_option("--component", forward.request.component,
                          "unet | vae-encode | vae-decode | text-encoder | tokenizer | efficientnet | alexnet | lpips | inpaint")
      ->required()
      ->check(CLI::IsMember(anomalysd::forward_components()));
  forward_cmd->add_option("--model", forward.request.model_dir, "The component's folder (config.json + weights), or the tokenizer folder");
  forward_cmd->add_option("--inputs", forward.inputs, "IN.safetensors with the named inputs");
  forward_cmd->add_option("--output", forward.output, "OUT.safetensors for the named outputs")->required();
  forward_cmd->add_option("--variant", forward.request.variant, "Weight variant, e.g. fp16 (loads *.fp16.safetensors)");
  forward_cmd->add_option("--device", forward.request.device, "cpu | cuda | cuda:N | auto")->capture_default_str();
  forward_cmd->add_option("--dtype", forward.request.dtype, "float32 | float16 | bfloat16")->capture_default_str();
  forward_cmd->add_option("--text", forward.request.texts, "Prompt for the tokenizer (repeatable)");
  forward_cmd->add_option("--weights", forward.request.weights, "efficientnet / alexnet / lpips: torchvision-named weights");
  forward_cmd->add_option("--lpips-weights", forward.request.lpips_weights, "lpips: the lin layers' weights");
  forward_cmd->add_option("--negative-text", forward.request.negative_text, "inpaint: negative prompt (used when --guidance-scale > 1)");
  forward_cmd->add_option("--strength", forward.request.strength, "inpaint: noise strength lambda in [0, 1]")->capture_default_str();
  forward_cmd->add_option("--steps", forward.request.steps, "inpaint: DDIM steps of the full schedule")->capture_default_str();
  forward_cmd->add_option("--guidance-scale", forward.request.guidance_scale, "inpaint: classifier-free guidance (1 = off)")->capture_default_str();

  anomalysd::InferOptions infer;
  CLI::App* infer_cmd = app.add_subcommand("infer", "Anomaly maps and scores for a folder of images of one class");
  infer_cmd->add_option("--config", infer.config, "YAML config (default: the embedded default)");
  infer_cmd->add_option("--model", infer.model, "Inpainting pipeline folder (overrides model.path)");
  infer_cmd->add_option("--input", infer.input, "Image file or folder of images")->required();
  infer_cmd->add_option("--class", infer.cls, "Class name: selects the prompts and lambda")->required();
  infer_cmd->add_option("--shots", infer.shots, "Folder (or file) of normal images of the class; none = 0-shot");
  infer_cmd->add_option("--output", infer.output, "Output folder")->required();
  infer_cmd->add_option("--calibration", infer.calibration, "calibration.json (eval's, or calibrate's): the class's image and pixel thresholds");
  infer_cmd->add_option("--threshold", infer.threshold, "Raw image score at or above which an image is anomalous (overrides the calibration)");
  infer_cmd->add_option("--pixel-threshold", infer.pixel_threshold, "Raw map value at or above which a pixel is a defect (overrides the calibration)");
  infer_cmd->add_option("--sensitivity", infer.sensitivity, "Shift the decision: anomalous when the normalised score >= 1 - sensitivity")
      ->capture_default_str();
  infer_cmd->add_option("--map-max", infer.map_max, "Without a threshold: the top of the overlays' colour scale (default: 2x the first image's score)");
  infer_cmd->add_flag("--recursive", infer.recursive, "Images in subfolders too (relative paths kept in the outputs)");
  infer_cmd->add_flag("--watch", infer.watch, "Keep the model loaded and process each new image that appears in --input, until Ctrl-C / SIGTERM");
  infer_cmd->add_option("--move-done", infer.move_done, "--watch: move each finished image into this folder");
  infer_cmd->add_option("--settle", infer.settle_seconds, "--watch: seconds a file must stay unchanged before it is read")->capture_default_str();
  infer_cmd->add_option("--poll", infer.poll_seconds, "--watch: seconds between looks at the folder")->capture_default_str();
  infer_cmd->add_flag("--overwrite", infer.overwrite, "Discard another run in --output (the same command resumes without it)");
  infer_cmd->add_option("--set", infer.overrides, "Override a config key: --set a.b.c=value (repeatable)");

  anomalysd::CalibrateOptions calibrate;
  CLI::App* calibrate_cmd = app.add_subcommand("calibrate", "A class's decision threshold from normal images alone, for infer --calibration");
  calibrate_cmd->add_option("--config", calibrate.config, "YAML config (default: the embedded default); the same as infer's");
  calibrate_cmd->add_option("--model", calibrate.model, "Inpainting pipeline folder (overrides model.path)");
  calibrate_cmd->add_option("--class", calibrate.cls, "Class name")->required();
  calibrate_cmd->add_option("--shots", calibrate.shots, "Folder (or file) of the class's normal shots, as infer will get them")->required();
  calibrate_cmd->add_option("--normal", calibrate.normal, "Folder of further normal images (default: leave-one-out over the shots)");
  calibrate_cmd->add_flag("--recursive", calibrate.recursive, "--normal: subfolders too");
  calibrate_cmd->add_option("--max-false-alarm", calibrate.max_false_alarm, "Target share of normal images called anomalous")->capture_default_str();
  calibrate_cmd->add_option("--output", calibrate.output, "Calibration file to write, or to add the class to")->required();
  calibrate_cmd->add_option("--set", calibrate.overrides, "Override a config key: --set a.b.c=value (repeatable)");

  anomalysd::FinetuneOptions finetune;
  CLI::App* finetune_cmd = app.add_subcommand("finetune", "Few-shot multi-class fine-tuning of the inpainting UNet and the VAE decoder");
  finetune_cmd->add_option("--config", finetune.config, "YAML config (default: the embedded default); train.* keys");
  finetune_cmd->add_option("--model", finetune.model, "Base inpainting pipeline folder (overrides model.path)");
  finetune_cmd->add_option("--dataset", finetune.dataset, "mvtec | visa | folder")->check(CLI::IsMember({"mvtec", "visa", "folder"}))->capture_default_str();
  finetune_cmd->add_option("--root", finetune.root, "Dataset folder")->required();
  finetune_cmd->add_option("--shots", finetune.shots, "K normal shots per class")->capture_default_str();
  finetune_cmd->add_option("--output", finetune.output, "Output folder")->required();
  finetune_cmd->add_option("--classes", finetune.classes, "Classes (default: all)");
  finetune_cmd->add_flag("--resume", finetune.resume, "Continue from the newest complete checkpoint");
  finetune_cmd->add_flag("--overwrite", finetune.overwrite, "Discard a previous run in --output");
  finetune_cmd->add_flag("--save-masks", finetune.save_masks, "Write the foreground and sample training masks to <output>/masks");
  finetune_cmd->add_option("--variant", finetune.save_variant, "Save the weights as fp16 (*.fp16.safetensors)")->check(CLI::IsMember({"", "fp16"}));
  finetune_cmd->add_option("--stop-after", finetune.stop_after, "Run at most N steps, checkpoint and stop (continue with --resume)");
  finetune_cmd->add_option("--set", finetune.overrides, "Override a config key: --set train.unet_steps=100 (repeatable)");

  anomalysd::SyntheticOptions synthetic;
  CLI::App* synthetic_cmd = app.add_subcommand("make-synthetic", "Write a synthetic few-shot benchmark (MVTec-AD layout) with pixel-exact masks");
  synthetic_cmd->add_option("--output", synthetic.output, "Output folder")->required();
  synthetic_cmd->add_option("--seed", synthetic.seed, "Random seed")->capture_default_str();
  synthetic_cmd->add_option("--classes", synthetic.classes, "weave marble washer pill (default), tiles nut");
  synthetic_cmd->add_option("--size", synthetic.size, "Image side in pixels")->capture_default_str();
  synthetic_cmd->add_option("--train", synthetic.train, "Normal training images per class")->capture_default_str();
  synthetic_cmd->add_option("--test-good", synthetic.test_good, "Normal test images per class")->capture_default_str();
  synthetic_cmd->add_option("--test-bad", synthetic.test_bad, "Anomalous test images per class")->capture_default_str();

  anomalysd::DemoOptions demo;
  CLI::App* demo_cmd = app.add_subcommand("demo", "The whole method on a synthetic benchmark: bootstrap, 1-shot fine-tuning, evaluation, table");
  demo_cmd->add_option("--output", demo.output, "Results folder")->capture_default_str();
  demo_cmd->add_option("--cache", demo.cache, "Bootstrap model and feature weights (reused when present)")->capture_default_str();
  demo_cmd->add_option("--config", demo.config, "Config (default: the embedded configs/demo.yaml)");
  demo_cmd->add_flag("--quick", demo.quick, "A reduced run (fewer images and steps), as CI runs it");
  demo_cmd->add_flag("--rebuild", demo.rebuild, "Ignore the cache: bootstrap again");
  demo_cmd->add_option("--set", demo.overrides, "Override a config key (repeatable)");
  demo_cmd->add_option("--benchmark", demo.benchmark, "synthetic, or photos: the held-out real photographs (make-photo-benchmark)")
      ->check(CLI::IsMember({"synthetic", "photos"}))
      ->capture_default_str();
  demo_cmd->add_option("--bootstrap", demo.bootstrap, "Start from an `anomalysd bootstrap` output instead of the cached bootstrap");

  anomalysd::PhotoBenchmarkOptions photo_bench;
  CLI::App* photo_bench_cmd = app.add_subcommand(
      "make-photo-benchmark", "Write the held-out real-photograph benchmark (MVTec-AD layout; GIMP's patterns, planted defects, exact masks)");
  photo_bench_cmd->add_option("--output", photo_bench.output, "Output folder")->required();
  photo_bench_cmd->add_option("--seed", photo_bench.seed, "Random seed")->capture_default_str();
  photo_bench_cmd->add_option("--classes", photo_bench.classes, "burlap leather walnut stone paper (default: all)");
  photo_bench_cmd->add_option("--size", photo_bench.size, "Image side in pixels")->capture_default_str();
  photo_bench_cmd->add_option("--train", photo_bench.train, "Normal training images per class")->capture_default_str();
  photo_bench_cmd->add_option("--test-good", photo_bench.test_good, "Normal test images per class")->capture_default_str();
  photo_bench_cmd->add_option("--test-bad", photo_bench.test_bad, "Anomalous test images per class")->capture_default_str();

  anomalysd::BootstrapOptions boot;
  bool no_photos = false;
  CLI::App* boot_cmd = app.add_subcommand(
      "bootstrap", "Train a small SD inpainting pipeline from scratch on your normal images (CPU; not SD's pre-training, not the paper's setting)");
  boot_cmd->add_option("--dataset", boot.dataset, "folder | mvtec | visa")->check(CLI::IsMember({"folder", "mvtec", "visa"}))->capture_default_str();
  boot_cmd->add_option("--root", boot.root, "Dataset root (each class's train/good images are used)")->required();
  boot_cmd->add_option("--classes", boot.classes, "Classes (default: all)");
  boot_cmd->add_option("--output", boot.output, "Output folder: model/, features/, anomalysd.yaml")->required();
  boot_cmd->add_option("--config", boot.config, "Config (default: the embedded configs/demo.yaml)");
  boot_cmd->add_option("--set", boot.overrides, "Override a config key (repeatable)");
  boot_cmd->add_option("--plan", boot.plan, "The scale: key=value (size, vae_steps, unet_steps, vae_channels, unet_channels, ...; repeatable)");
  boot_cmd->add_flag("--no-photos", no_photos, "Train on your images only, without the shipped real photographs");
  boot_cmd->add_flag("--overwrite", boot.overwrite, "Discard a previous run (finished or not) in --output");
  boot_cmd->add_option("--stop-after", boot.stop_after, "Run at most N training steps, checkpoint and stop (rerun to resume)");
  boot_cmd->add_option("--minutes", boot.minutes,
                       "A time budget: the VAE and UNet steps scaled down (never up) to end in about this many minutes on this machine")
      ->check(CLI::PositiveNumber);
  demo_cmd->add_option("--plan", demo.plan, "Change the demo's scale: key=value (size, vae_steps, unet_steps, ...; repeatable)");

  InitWeightsCli init_weights;
  anomalysd::PretrainFeaturesOptions pretrain;
  CLI::App* pretrain_cmd = app.add_subcommand("pretrain-features", "Train AlexNet/EfficientNet-B6 feature weights on your own normal images and photographs (as the demo's bootstrap)");
  pretrain_cmd->add_option("--data", pretrain.data, "A folder dataset: each class's train/good images");
  pretrain_cmd->add_option("--photos", pretrain.photos, "A folder of photographs (each one a class)");
  pretrain_cmd->add_option("--textures", pretrain.texture_classes, "The --data classes that are textures (default: none)");
  pretrain_cmd->add_option("--output", pretrain.output, "Folder for alexnet/efficientnet_b6/lpips .safetensors")->required();
  pretrain_cmd->add_option("--size", pretrain.size, "Image side")->capture_default_str();
  pretrain_cmd->add_option("--crops", pretrain.crops, "Crops per photograph")->capture_default_str();
  pretrain_cmd->add_option("--alexnet-steps", pretrain.alexnet_steps, "AlexNet steps")->capture_default_str();
  pretrain_cmd->add_option("--efficientnet-steps", pretrain.efficientnet_steps, "EfficientNet-B6 steps")->capture_default_str();
  pretrain_cmd->add_flag("--efficientnet-deep", pretrain.efficientnet_deep, "Also train EfficientNet's stages after the method's taps");
  pretrain_cmd->add_option("--batch", pretrain.batch, "Batch size")->capture_default_str();
  pretrain_cmd->add_option("--lr", pretrain.lr, "Adam learning rate")->capture_default_str();
  pretrain_cmd->add_option("--seed", pretrain.seed, "Random seed")->capture_default_str();
  CLI::App* init_cmd = app.add_subcommand("init-weights", "Write seeded random feature-network weights (tests, demos without downloads)");
  init_cmd->add_option("--arch", init_weights.arch, "efficientnet_b6 (or _b0.._b7) | alexnet | lpips")->required();
  init_cmd->add_option("--seed", init_weights.seed, "Random seed")->capture_default_str();
  init_cmd->add_option("--output", init_weights.output, "FILE.safetensors")->required();

  BenchOptions bench;
  CLI::App* bench_cmd = app.add_subcommand("bench", "Time a real-size component built from its config.json with random weights (CPU)");
  bench_cmd->add_option("component", bench.component,
                        "unet | unet-train | unet-train-checkpointed | vae-encode | vae-decode | attention | efficientnet | prototype-bank | nn-error-map | lpips | eval-maps")->required();
  bench_cmd->add_option("--config", bench.config, "unet / vae: the component's config.json (e.g. sd2-inpainting/unet/config.json)");
  bench_cmd->add_option("--batch", bench.batches, "Batch sizes (repeatable)")->capture_default_str();
  bench_cmd->add_option("--repeats", bench.repeats, "Timed runs after one warm-up")->capture_default_str();
  bench_cmd->add_option("--size", bench.size, "Spatial size: latent for unet (default sample_size), image for vae (512)");
  bench_cmd->add_option("--threads", bench.threads, "Intra-op threads (0 = all cores)")->capture_default_str();
  bench_cmd->add_option("--gemm", bench.gemm, "CPU GEMM of Linear layers: auto | onednn | blas (config key cpu_gemm)")
      ->check(CLI::IsMember({"auto", "onednn", "blas"}))
      ->capture_default_str();
  bench_cmd->add_option("--attention", bench.attention, "Attention kernel: auto | sdpa | fused | chunked (config key attention)")
      ->check(CLI::IsMember({"auto", "sdpa", "fused", "chunked"}))
      ->capture_default_str();
  bench_cmd->add_option("--attention-blocks", bench.attention_blocks, "Fused attention's block: query rows and key columns (tuning; default 256 rows, key columns from the cache size)")
      ->expected(2);
  bench_cmd->add_option("--dtype", bench.dtype, "unet / vae-*: float32 | bfloat16 | float16 | auto (config key dtype; float16 needs LibTorch >= 2 on the CPU)")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16", "auto"}))
      ->capture_default_str();
  bench_cmd->add_flag("--profile", bench.profile, "After the timed runs, profile one more and print the time per LibTorch operator");

  EvalMapsCli eval_maps;
  CLI::App* eval_maps_cmd = app.add_subcommand("eval-maps", "Evaluate any method's anomaly maps (MVTec AD evaluation layout) on a dataset");
  eval_maps_cmd->add_option("--dataset", eval_maps.options.dataset, "mvtec | visa | folder")
      ->check(CLI::IsMember({"mvtec", "visa", "folder"}))
      ->capture_default_str();
  eval_maps_cmd->add_option("--root", eval_maps.options.root, "Dataset folder")->required();
  eval_maps_cmd->add_option("--maps", eval_maps.options.maps, "Maps folder: <class>/test/<defect>/<id>.tiff")->required();
  eval_maps_cmd->add_option("--classes", eval_maps.options.classes, "Classes to evaluate (default: all)");
  eval_maps_cmd->add_option("--scores", eval_maps.options.scores_csv, "Image scores CSV (class,defect,id,score); default: max of the map");
  eval_maps_cmd->add_option("--eval-size", eval_maps.options.eval_size, "Evaluate at N×N instead of the GT size (bounds memory)");
  eval_maps_cmd->add_option("--fpr-limit", eval_maps.options.fpr_limit, "PRO integration limit")->capture_default_str();
  eval_maps_cmd->add_option("--method", eval_maps.options.method, "Method name for the table")->capture_default_str();
  eval_maps_cmd->add_option("--setup", eval_maps.options.setup, "Setup for the table, e.g. 1-shot");
  eval_maps_cmd->add_option("--output", eval_maps.output, "metrics JSON file (metrics.csv and table.md are written beside it)")->required();

  MergeCli merge;
  CLI::App* merge_cmd = app.add_subcommand(
      "merge-results", "Merge eval shards (metrics on the union of their maps), partial results and settings into tables");
  merge_cmd->add_option("inputs", merge.inputs, "eval output folders, result folders or metrics.json files")->required();
  merge_cmd->add_option("--output", merge.output, "Output folder")->required();
  merge_cmd->add_option("--root", merge.root, "Dataset root, when it moved since the eval runs (run.json records theirs)");

  EvalCli eval;
  CLI::App* eval_cmd = app.add_subcommand("eval", "Evaluate AnomalySD on MVTec-AD / VisA / a folder dataset (resumable, shardable)");
  eval_cmd->add_option("--config", eval.options.config, "YAML config (default: the embedded default)");
  eval_cmd->add_option("--dataset", eval.options.dataset, "mvtec | visa | folder")->check(CLI::IsMember({"mvtec", "visa", "folder"}))->capture_default_str();
  eval_cmd->add_option("--root", eval.options.root, "Dataset folder")->required();
  eval_cmd->add_option("--model", eval.options.model, "Inpainting pipeline folder (overrides model.path)");
  eval_cmd->add_option("--shots", eval.options.shots, "K normal shots per class (0 = zero-shot)");
  eval_cmd->add_option("--output", eval.options.output, "Output folder (rerun the same command to resume)")->required();
  eval_cmd->add_option("--classes", eval.options.classes, "Classes (default: all)");
  eval_cmd->add_option("--shots-file", eval.options.shots_file, "Reuse a shots.json (the one finetune wrote for a fine-tuned model)");
  eval_cmd->add_option("--shard", eval.shard,
                       "I/N: evaluate the I-th of N shares of the test images; auto: the share of this rank (torchrun, srun) or Slurm "
                       "array task, in <output>/shards/, with the merged table written to <output> at the end");
  eval_cmd->add_option("--limit-per-class", eval.options.limit_per_class, "Only the first N test images of each class (normal and anomalous alike)");
  eval_cmd->add_option("--setting", eval.options.setting, "Table label of the setting (default: K-shot)");
  eval_cmd->add_option("--method", eval.options.method, "Table label of the method (e.g. for ablations)")->capture_default_str();
  eval_cmd->add_flag("--overwrite", eval.options.overwrite, "Discard a previous run in --output made with another config");
  eval_cmd->add_flag("--ablation-maps", eval.options.ablation_maps,
                     "Also write the maps of 'multi-scale masks only' and 'prototype mask only' from the same inpaintings");
  eval_cmd->add_option("--set", eval.options.overrides, "Override a config key: --set a.b.c=value (repeatable)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : kExitBadInput;
  }

  try {
    anomalysd::setup_logging(log_level);
    if (show_version) {
      std::cout << anomalysd::version_report();
      return 0;
    }
    if (inspect_cmd->parsed()) return run_inspect(inspect);
    if (config_cmd->parsed()) return run_config(config);
    if (forward_cmd->parsed()) return run_forward(forward);
    if (bench_cmd->parsed()) return run_bench(bench);
    if (infer_cmd->parsed()) return run_infer_cli(infer);
    if (calibrate_cmd->parsed()) return run_calibrate_cli(calibrate);
    if (eval_cmd->parsed()) return run_eval_cli(eval);
    if (finetune_cmd->parsed()) return run_finetune_cli(finetune);
    if (demo_cmd->parsed()) {
      const auto s = anomalysd::run_demo(demo);
      std::cout << anomalysd::settings_table(s.table);
      std::printf("\ntime: %.0f s (bootstrap %s, fine-tuning %.0f s, evaluations %.0f s)\n", s.seconds,
                  s.cache_used ? "cached" : (std::to_string(static_cast<int>(s.bootstrap_seconds)) + " s").c_str(), s.finetune_seconds,
                  s.eval_seconds);
      std::printf("wrote %s/{table.md, metrics.json, report.png, report.html}\n", s.output.c_str());
      if (!s.shots.empty()) {
        const std::string cls = s.shots.begin()->first;
        std::string sets;
        for (const auto& x : s.overrides)
          // configs/demo.yaml already holds the default cache's feature weights and 64 px
          if (x.find("=models/demo/bootstrap/features/") == std::string::npos && x != "resolution=64") sets += " --set " + x;
        std::printf("inspect a folder with the demo's model and the full method's calibration:\n  anomalysd infer --config %s%s --model %s "
                    "--class %s --shots %s/shots/%s --calibration %s/eval/full/calibration.json --input %s/data/%s/test --recursive "
                    "--output results/inspect-%s\n",
                    demo.config.empty() ? "configs/demo.yaml" : s.config_file.c_str(), sets.c_str(), s.model.c_str(), cls.c_str(), s.output.c_str(),
                    cls.c_str(), s.output.c_str(), s.output.c_str(), cls.c_str(), cls.c_str());
      }
      if (!s.beats_mean_image) {
        std::fprintf(stderr, "demo: the full method does not beat the mean-image baseline at both image and pixel level\n");
        return 3;
      }
      return 0;
    }
    if (photo_bench_cmd->parsed()) {
      const auto s = anomalysd::make_photo_benchmark(photo_bench);
      std::printf("wrote %lld images of %zu classes to %s (sources: %s/SOURCES.txt)\n", static_cast<long long>(s.images), s.classes.size(),
                  photo_bench.output.c_str(), photo_bench.output.c_str());
      return 0;
    }
    if (boot_cmd->parsed()) {
      boot.photos = !no_photos;
      const auto s = anomalysd::run_bootstrap(boot);
      if (!s.finished) {
        std::printf("stopped early: run the same command again to resume\n");
        return 0;
      }
      std::printf("wrote %s (pipeline), %s (feature weights), %s\nnext: anomalysd finetune --config %s --model %s --dataset %s --root %s "
                  "--shots 1 --output results/finetune\n",
                  s.model.c_str(), s.features_dir.c_str(), s.config_file.c_str(), s.config_file.c_str(), s.model.c_str(), boot.dataset.c_str(),
                  boot.root.c_str());
      return 0;
    }
    if (synthetic_cmd->parsed()) {
      const auto s = anomalysd::make_synthetic(synthetic);
      std::printf("wrote %lld images of %lld classes to %s\n", static_cast<long long>(s.images), static_cast<long long>(s.classes),
                  synthetic.output.c_str());
      return 0;
    }
    if (pretrain_cmd->parsed()) {
      anomalysd::run_pretrain_features(pretrain);
      return 0;
    }
    if (init_cmd->parsed()) {
      const auto parent = std::filesystem::path(init_weights.output).parent_path();
      if (!parent.empty()) std::filesystem::create_directories(parent);
      anomalysd::init_feature_weights(init_weights.arch, init_weights.seed, init_weights.output);
      return 0;
    }
    if (eval_maps_cmd->parsed()) return run_eval_maps(eval_maps);
    if (merge_cmd->parsed()) return run_merge(merge);
    std::cout << app.help();
    return 0;
  } catch (const anomalysd::InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitFailure;
  }
}

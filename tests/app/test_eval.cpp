// `anomalysd eval` end to end on a small generated dataset with the tiny pipeline: outputs,
// resume without recomputation, shards merged = unsharded exactly, shot records, bad inputs.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <nlohmann/json.hpp>

#include "anomalysd/app/calibration.h"
#include "anomalysd/app/eval.h"
#include "anomalysd/app/method.h"
#include "anomalysd/core/runtime.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/app/eval_maps.h"
#include "app/app_fixtures.h"
#include "test_support.h"

namespace anomalysd {
namespace {

namespace fs = std::filesystem;

struct EvalFixture {
  test::TempDir tmp;
  fs::path data = tmp.path() / "data";
  std::vector<std::string> overrides;
  std::string model;

  explicit EvalFixture(const fs::path& fixtures) {
    overrides = test::small_run_overrides(tmp.path() / "weights");
    test::make_textured_dataset(data, {"alpha", "beta"}, 3, 3, 3);
    model = (fixtures / "pipeline_sd2_inpaint_tiny").string();
  }
  EvalOptions options(const std::string& out, int64_t shots = 1) const {
    EvalOptions o;
    o.overrides = overrides;
    o.dataset = "folder";
    o.root = data.string();
    o.model = model;
    o.shots = shots;
    o.output = (tmp.path() / out).string();
    return o;
  }
};

using test::expect_same_metrics;

TEST(Eval, EndToEndResumeAndShards) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  EvalFixture f(fixtures);
  const EvalSummary full = run_eval(f.options("full"));
  EXPECT_EQ(full.images, 12);
  EXPECT_EQ(full.computed, 12);
  // UNet calls = images × ⌈masks / mask_batch⌉ × steps run: 1 + 4 grid masks + the prototype
  // mask = 6 ≤ 8 (one batch), ⌊10 · 0.4⌋ = 4 steps.
  EXPECT_EQ(full.unet_calls, 12 * 1 * 4);
  const fs::path out = f.tmp.path() / "full";
  for (const char* file : {"run.json", "shots.json", "scores.csv", "metrics.json", "metrics.csv", "table.md", "report.html", "report.png"})
    EXPECT_TRUE(fs::is_regular_file(out / file)) << file;
  EXPECT_TRUE(fs::is_regular_file(out / "maps/alpha/test/square/002.tiff"));
  EXPECT_TRUE(fs::is_regular_file(out / "maps/beta/test/good/000.tiff"));
  ASSERT_EQ(full.results.classes.size(), 2u);
  for (const auto& c : full.results.classes) {
    EXPECT_EQ(c.test_images, 6);
    EXPECT_GE(c.image_auroc, 0.0);
    EXPECT_LE(c.image_auroc, 1.0);
    EXPECT_FALSE(std::isnan(c.pixel_auroc));
  }
  const std::string table = test::read_bytes((out / "table.md").string());
  EXPECT_NE(table.find("| 1-shot | AnomalySD |"), std::string::npos) << table;
  // calibration.json: per class the thresholds behind the F1-max it reports, with the run's
  // identity; its threshold labels the class's images as its counts say (scores.csv).
  const Calibration calibration = Calibration::load((out / "calibration.json").string());
  ASSERT_EQ(calibration.classes.size(), 2u);
  EXPECT_EQ(calibration.identity.at("model").get<std::string>(), fs::absolute(f.model).lexically_normal().string());
  const auto scores = read_scores_csv((out / "scores.csv").string());
  for (const auto& r : full.results.classes) {
    const ClassCalibration& c = calibration.classes.at(r.name);
    EXPECT_EQ(c.image_f1, r.image_f1_max) << r.name;
    EXPECT_EQ(c.pixel_f1, r.pixel_f1_max) << r.name;
    EXPECT_EQ(c.normal_images + c.anomalous_images, r.test_images) << r.name;
    EXPECT_EQ(c.shots.size(), 1u) << r.name;
    int64_t tp = 0, fp = 0;
    for (const auto& [key, score] : scores)
      if (key.rfind(r.name + "/", 0) == 0 && static_cast<float>(score) >= static_cast<float>(c.image.threshold))
        (key.find("/good/") == std::string::npos ? tp : fp) += 1;
    EXPECT_EQ(tp, c.true_positives) << r.name;
    EXPECT_EQ(fp, c.false_positives) << r.name;
    EXPECT_NEAR(2.0 * tp / static_cast<double>(tp + fp + c.anomalous_images), c.image_f1, 1e-12) << r.name;
  }

  // Resume: the same command recomputes nothing; losing two maps recomputes exactly those two.
  const EvalSummary again = run_eval(f.options("full"));
  EXPECT_EQ(again.computed, 0);
  EXPECT_EQ(again.unet_calls, 0);
  EXPECT_EQ(again.resumed, 12);
  expect_same_metrics(again.results, full.results);
  fs::remove(out / "maps/alpha/test/good/001.tiff");
  fs::remove(out / "maps/beta/test/square/000.tiff");
  const EvalSummary resumed = run_eval(f.options("full"));
  EXPECT_EQ(resumed.computed, 2);
  EXPECT_EQ(resumed.resumed, 10);
  expect_same_metrics(resumed.results, full.results);

  // Another config in the same folder: refused, unless --overwrite; so is another numeric setup
  // (mask batch, CPU GEMM, dtype), which changes the maps' last bits. The message names it.
  auto refusal = [&](const std::string& override_) {
    EvalOptions other = f.options("full");
    other.overrides.push_back(override_);
    try {
      run_eval(other);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("(not refused)");
  };
  EXPECT_NE(refusal("inference.alpha=0.2").find("'alpha: 0.2"), std::string::npos) << refusal("inference.alpha=0.2");
  EXPECT_NE(refusal("inference.mask_batch=4").find("'mask_batch: 4"), std::string::npos) << refusal("inference.mask_batch=4");
  EXPECT_NE(refusal("dtype=bfloat16").find("dtype=bfloat16"), std::string::npos) << refusal("dtype=bfloat16");
  // One part in half precision is another numeric setup too, named part by part.
  const std::string decoder = refusal("precision.vae_decoder=bfloat16");
  EXPECT_NE(decoder.find("vae_decoder=bfloat16"), std::string::npos) << decoder;
  const nlohmann::json run = read_json_file((out / "run.json").string());
  const std::string setup = run["identity"]["config"]["numeric_setup"];
  EXPECT_NE(setup.find("device=cpu dtype=float32"), std::string::npos) << setup;
  const bool blas = setup.find("cpu_gemm=BLAS") != std::string::npos;
  EXPECT_TRUE(blas || setup.find("cpu_gemm=oneDNN") != std::string::npos) << setup;
  const std::string flipped = refusal(std::string("cpu_gemm=") + (blas ? "onednn" : "blas"));
  EXPECT_NE(flipped.find("numeric setup"), std::string::npos) << flipped;
  // The thread count only changes speed: a resume with another one is accepted.
  EvalOptions threads = f.options("full");
  threads.overrides.push_back("threads=2");
  EXPECT_EQ(run_eval(threads).computed, 0);

  // Two shards, merged: the unsharded metrics, exactly.
  EvalOptions s0 = f.options("shard0"), s1 = f.options("shard1");
  s0.shard_index = 0;
  s0.shard_count = 2;
  s1.shard_index = 1;
  s1.shard_count = 2;
  const EvalSummary a = run_eval(s0), b = run_eval(s1);
  EXPECT_EQ(a.images + b.images, 12);
  EXPECT_EQ(a.images, 6);  // balanced: 3 of each class's 6
  const auto merged = merge_runs({(f.tmp.path() / "shard0").string(), (f.tmp.path() / "shard1").string()},
                                 (f.tmp.path() / "merged").string());
  ASSERT_EQ(merged.size(), 1u);
  expect_same_metrics(merged[0], full.results);
  EXPECT_TRUE(fs::is_regular_file(f.tmp.path() / "merged/table.md"));

  // Two settings in one table: the 1-shot run and a 0-shot run.
  run_eval(f.options("zero", 0));
  const auto both = merge_runs({out.string(), (f.tmp.path() / "zero").string()}, (f.tmp.path() / "table1").string());
  ASSERT_EQ(both.size(), 2u);
  const std::string t1 = test::read_bytes((f.tmp.path() / "table1/table.md").string());
  EXPECT_NE(t1.find("| folder | 1-shot | AnomalySD |"), std::string::npos) << t1;
  EXPECT_NE(t1.find("| folder | 0-shot | AnomalySD |"), std::string::npos) << t1;
}

TEST(Eval, ShotsFileIsUsedAndCheckedAndLimitKeepsBothLabels) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  EvalFixture f(fixtures);
  const nlohmann::json record = {{"k", 1}, {"seed", 0}, {"shots", {{"alpha", {"alpha/train/good/002.png"}}, {"beta", {"beta/train/good/001.png"}}}}};
  const fs::path shots = f.tmp.path() / "shots.json";
  test::write_bytes(shots.string(), record.dump());
  EvalOptions o = f.options("run");
  o.shots = -1;
  o.shots_file = shots.string();
  o.limit_per_class = 4;
  const EvalSummary s = run_eval(o);
  EXPECT_EQ(s.images, 8);
  const nlohmann::json used = read_json_file((f.tmp.path() / "run/shots.json").string());
  EXPECT_EQ(used["shots"], record["shots"]);
  for (const auto& c : s.results.classes) {
    EXPECT_EQ(c.test_images, 4);
    EXPECT_EQ(c.anomalous_images, 2);  // interleaved: good, square, good, square
  }
  EXPECT_NE(s.results.note.find("first 4"), std::string::npos);

  // A record naming a missing image, or a test image, is an error naming the file and the image.
  nlohmann::json bad = record;
  bad["shots"]["alpha"] = {"alpha/train/good/999.png"};
  test::write_bytes(shots.string(), bad.dump());
  o.output = (f.tmp.path() / "run2").string();
  try {
    run_eval(o);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("999.png"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("shots.json"), std::string::npos) << e.what();
  }
  bad["shots"]["alpha"] = {"alpha/test/good/000.png"};
  test::write_bytes(shots.string(), bad.dump());
  try {
    run_eval(o);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("is a test image"), std::string::npos) << e.what();
  }
}

TEST(Eval, UnetCallsAreExactlyImagesTimesMaskBatchesTimesSteps) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  EvalFixture f(fixtures);
  // The paper's masks: 𝒦 = {1, 2, 4, 8} (85) + the prototype mask = 86 in ⌈86/8⌉ = 11 batches;
  // grid2x2 packing: 1 + 4 + 4 + 4 + 1 = 14 masks in 2 batches. 4 images (2 per class), 4 steps.
  EvalOptions paper = f.options("paper");
  paper.limit_per_class = 2;
  paper.overrides.push_back("inference.scales=[1,2,4,8]");
  const EvalSummary p = run_eval(paper);
  EXPECT_EQ(p.computed, 4);
  EXPECT_EQ(p.unet_calls, 4 * 11 * 4);
  EvalOptions packed = f.options("packed");
  packed.limit_per_class = 2;
  packed.overrides.push_back("inference.scales=[1,2,4,8]");
  packed.overrides.push_back("inference.mask_packing=grid2x2");
  EXPECT_EQ(run_eval(packed).unet_calls, 4 * 2 * 4);
  // A resume computes nothing: 0 calls.
  const EvalSummary again = run_eval(paper);
  EXPECT_EQ(again.computed, 0);
  EXPECT_EQ(again.unet_calls, 0);
}

TEST(Eval, Bfloat16RunsEndToEndOnTheCpuWithFiniteMapsCloseToFloat32) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  EvalFixture f(fixtures);
  // dtype bfloat16: the SD networks as PipelinePrecision::for_dtype says, the latents and the
  // scheduler in float32; LPIPS, EfficientNet, the nearest-neighbour search and the score maths in
  // float32 (MethodRunner).
  EvalOptions fp32 = f.options("fp32"), bf16 = f.options("bf16");
  fp32.limit_per_class = bf16.limit_per_class = 3;
  bf16.overrides.push_back("dtype=bfloat16");
  {
    MethodRunner runner(load_app_config("", bf16.overrides), f.model, /*with_prototype=*/true);
    EXPECT_EQ(runner.pipeline().unet->conv_in->weight.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(runner.pipeline().precision(), PipelinePrecision::for_dtype(torch::kBFloat16)) << runner.pipeline().precision().describe();
    EXPECT_EQ(runner.lpips()->parameters().front().scalar_type(), torch::kFloat) << "LPIPS follows dtype";
    ASSERT_TRUE(runner.efficientnet());
    EXPECT_EQ(runner.efficientnet()->parameters().front().scalar_type(), torch::kFloat) << "EfficientNet follows dtype";
  }
  const EvalSummary a = run_eval(fp32), b = run_eval(bf16);
  ASSERT_EQ(b.computed, 6);
  double worst = 0, largest = 0;
  for (const auto& e : fs::recursive_directory_iterator(f.tmp.path() / "bf16/maps")) {
    if (!e.is_regular_file()) continue;
    const fs::path rel = fs::relative(e.path(), f.tmp.path() / "bf16/maps");
    const cv::Mat mb = read_anomaly_map(e.path().string()), ma = read_anomaly_map((f.tmp.path() / "fp32/maps" / rel).string());
    ASSERT_TRUE(cv::checkRange(mb)) << rel << ": NaN or Inf in the bfloat16 map";
    double lo = 0, hi = 0;
    cv::minMaxLoc(ma, &lo, &hi);
    largest = std::max(largest, hi);
    worst = std::max(worst, cv::norm(ma, mb, cv::NORM_INF) / hi);
  }
  // bfloat16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.2 %) at every UNet layer, step and
  // decode, so the inpaintings differ by a few grey levels, and D, a squared feature difference,
  // by more: measured 4 % of the map's largest value here (2-core Xeon, LibTorch 1.13); 10 % leaves
  // room for another CPU's bfloat16 kernels while a NaN, a float16 overflow or a wrong cast fails.
  EXPECT_LT(worst, 0.10) << "largest relative difference of a bfloat16 map to its float32 map";
  EXPECT_GT(largest, 0.0);
  std::printf("bfloat16 vs float32 maps: largest difference %.3f of the map's maximum\n", worst);
}

// `dtype: auto` is the dtype it resolves to on this machine (a cached probe on the CPU): its run
// has that dtype's identity, so a rerun that names the dtype resumes it, and the other dtype is
// refused as another numeric setup.
TEST(Eval, DtypeAutoRunsAndResumesAsTheDtypeItResolvesTo) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  EvalFixture f(fixtures);
  RuntimeConfig cpu_auto;
  cpu_auto.device = "cpu";
  cpu_auto.dtype = "auto";
  const std::string chosen = resolved_dtype(cpu_auto);
  ASSERT_TRUE(chosen == "float32" || chosen == "bfloat16") << chosen;
  EvalOptions automatic = f.options("auto");
  automatic.limit_per_class = 2;
  automatic.overrides.push_back("dtype=auto");
  const EvalSummary a = run_eval(automatic);
  ASSERT_EQ(a.computed, 4);
  EvalOptions named = automatic;
  named.overrides.back() = "dtype=" + chosen;
  const EvalSummary b = run_eval(named);
  EXPECT_EQ(b.computed, 0) << "naming the dtype auto chose is the same run";
  EXPECT_EQ(b.resumed, 4);
  EvalOptions other = automatic;
  other.overrides.back() = std::string("dtype=") + (chosen == "float32" ? "bfloat16" : "float32");
  EXPECT_THROW(run_eval(other), InputError);
}

TEST(Eval, DistanceSizeRunsLpipsOnResizedImagesAndIsANoOpAtTheModelResolution) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  EvalFixture f(fixtures);
  // inference.distance_size: both images resized to N × N for AlexNet, the map resized back. At the
  // model resolution (the small runs' 32²) nothing is resized: the maps are the default's, bit for
  // bit; at 96² AlexNet sees a finer grid (its first tap 23 × 23 instead of 7 × 7), so they differ.
  EvalOptions plain = f.options("plain"), same = f.options("same"), larger = f.options("larger");
  plain.limit_per_class = same.limit_per_class = larger.limit_per_class = 2;
  same.overrides.push_back("inference.distance_size=32");
  larger.overrides.push_back("inference.distance_size=96");
  run_eval(plain);
  run_eval(same);
  run_eval(larger);
  int maps = 0;
  double changed = 0;
  for (const auto& e : fs::recursive_directory_iterator(f.tmp.path() / "plain/maps")) {
    if (!e.is_regular_file()) continue;
    const fs::path rel = fs::relative(e.path(), f.tmp.path() / "plain/maps");
    const cv::Mat a = read_anomaly_map(e.path().string());
    const cv::Mat b = read_anomaly_map((f.tmp.path() / "same/maps" / rel).string());
    const cv::Mat c = read_anomaly_map((f.tmp.path() / "larger/maps" / rel).string());
    ASSERT_EQ(c.size(), a.size()) << rel;
    ASSERT_TRUE(cv::checkRange(c)) << rel;
    EXPECT_EQ(cv::norm(a, b, cv::NORM_INF), 0.0) << rel;
    double hi = 0;
    cv::minMaxLoc(a, nullptr, &hi);
    changed = std::max(changed, cv::norm(a, c, cv::NORM_INF) / hi);
    ++maps;
  }
  EXPECT_GT(maps, 0);
  EXPECT_GT(changed, 0.05) << "distance_size=96 left every map as it was";
}

TEST(Eval, BadInputsNameTheFile) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  EvalFixture f(fixtures);
  EvalOptions o = f.options("run");
  o.classes = {"alpha", "gamma"};
  try {
    run_eval(o);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("gamma: class folder not found"), std::string::npos) << e.what();
  }
  // An unreadable ground truth: named before any map is computed.
  test::write_bytes((f.data / "beta/ground_truth/square/001_mask.png").string(), "garbage");
  o.classes = {};
  try {
    run_eval(o);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("001_mask.png"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(f.tmp.path() / "run/maps/alpha"));
  EXPECT_EQ(parse_shard("1/4"), (std::pair<int64_t, int64_t>{1, 4}));
  EXPECT_THROW(parse_shard("4/4"), InputError);
  EXPECT_THROW(parse_shard("x"), InputError);
}

TEST(Eval, ShardsAndLimitOrderAreDeterministicAndBalanced) {
  std::vector<TestSample> test;
  for (const char* d : {"good", "crack", "hole"})
    for (int i = 0; i < 5; ++i) test.push_back({"c", d, std::to_string(i), "", "", std::string(d) != "good"});
  const auto order = interleaved_by_defect(test);
  ASSERT_EQ(order.size(), 15u);
  EXPECT_EQ(order[0].defect, "good");
  EXPECT_EQ(order[1].defect, "crack");
  EXPECT_EQ(order[2].defect, "hole");
  std::set<std::string> seen;
  std::size_t total = 0;
  for (int64_t i = 0; i < 4; ++i) {
    const auto part = shard_of(test, i, 4);
    EXPECT_GE(part.size(), 3u);
    EXPECT_LE(part.size(), 4u);
    for (const auto& s : part) seen.insert(s.defect + s.id);
    total += part.size();
  }
  EXPECT_EQ(total, 15u);
  EXPECT_EQ(seen.size(), 15u);
  // By identity: reordering the listing does not move an image to another shard.
  std::vector<TestSample> reversed(test.rbegin(), test.rend());
  std::set<std::string> a, b;
  for (const auto& s : shard_of(test, 1, 4)) a.insert(s.defect + s.id);
  for (const auto& s : shard_of(reversed, 1, 4)) b.insert(s.defect + s.id);
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace anomalysd

namespace anomalysd {
namespace {

TEST(Eval, KilledAtRandomMomentsLosesAtMostTheImageInFlight) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  EvalFixture f(fixtures);
  const EvalSummary whole = run_eval(f.options("whole"));
  std::string args = "--log-level warn eval --dataset folder --root " + f.data.string() + " --model " + f.model + " --shots 1 --output " +
                     (f.tmp.path() / "killed").string();
  for (const auto& o : f.overrides) args += " --set " + o;
  // Each kill lands after the N-th map of the run has appeared (N one or two past the maps
  // already there), so that it falls mid-run: some maps written, the run not finished.
  const fs::path maps = f.tmp.path() / "killed/maps";
  auto maps_written = [&] {
    int n = 0;
    if (fs::is_directory(maps))
      for (const auto& e : fs::recursive_directory_iterator(maps))
        if (e.is_regular_file() && e.path().extension() == ".tiff") ++n;
    return n;
  };
  std::mt19937_64 rng(11);
  int mid_run_kills = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const int target = maps_written() + 1 + static_cast<int>(rng() % 2);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", (std::string("exec ") + ANOMALYSD_CLI + " " + args + " > /dev/null 2>&1").c_str(), nullptr);
      _exit(127);
    }
    int status = 0;
    bool exited = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (maps_written() < target && std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    // A random moment within the next image: between two files, inside a write, or in the UNet.
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 40));
    if (!exited) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    const bool killed = !exited && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    if (killed && maps_written() >= 1 && maps_written() < 12 && !fs::exists(f.tmp.path() / "killed/metrics.json")) ++mid_run_kills;
    // Every map that exists is whole; the scores file parses.
    if (fs::is_directory(maps))
      for (const auto& e : fs::recursive_directory_iterator(maps))
        if (e.is_regular_file()) EXPECT_NO_THROW(read_anomaly_map(e.path().string())) << e.path();
    if (fs::is_regular_file(f.tmp.path() / "killed/scores.csv"))
      EXPECT_NO_THROW(read_scores_csv((f.tmp.path() / "killed/scores.csv").string()));
  }
  // The kills landed mid-run (maps written, the run unfinished), not before the start or after the end.
  EXPECT_GE(mid_run_kills, 4);
  EXPECT_LT(maps_written(), 12);
  const EvalSummary finished = run_eval(f.options("killed"));
  expect_same_metrics(finished.results, whole.results);
  // Only complete files under the final names: no temporary file is left behind.
  for (const auto& e : fs::recursive_directory_iterator(f.tmp.path() / "killed"))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

}  // namespace
}  // namespace anomalysd

namespace anomalysd {
namespace {

TEST(Eval, HostileDatasetFolders) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  EvalFixture f(fixtures);
  // A symlink loop and a dangling link among the test images: skipped by the listing.
  fs::create_symlink(f.data / "alpha/test/good/loop.png", f.data / "alpha/test/good/loop.png");
  fs::create_symlink(f.data / "alpha/test/good/gone.png", f.data / "alpha/test/good/dangling.png");
  // A test image whose name is not UTF-8: evaluated like the others.
  fs::copy_file(f.data / "beta/test/good/000.png", f.data / "beta/test/good" / std::string("n\xff\xfe.png"));
  EvalOptions o = f.options("run");
  const EvalSummary s = run_eval(o);
  EXPECT_EQ(s.images, 13);
  EXPECT_TRUE(fs::is_regular_file(f.tmp.path() / "run/maps/beta/test/good" / std::string("n\xff\xfe.tiff")));
  EXPECT_NO_THROW(read_json_file((f.tmp.path() / "run/run.json").string()));
  // A ground truth whose size differs from its image's: an error naming the mask, before any work.
  cv::imwrite((f.data / "alpha/ground_truth/square/001_mask.png").string(), cv::Mat::zeros(20, 20, CV_8U));
  o.output = (f.tmp.path() / "run2").string();
  try {
    run_eval(o);
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("001_mask.png: mask is 20x20 but its image is 32x32"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(f.tmp.path() / "run2/maps/alpha"));
}

}  // namespace
}  // namespace anomalysd

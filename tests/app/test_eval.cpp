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

#include "anomalysd/app/eval.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/metrics/eval_maps.h"
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

void expect_same_metrics(const RunResults& a, const RunResults& b) {
  ASSERT_EQ(a.classes.size(), b.classes.size());
  for (std::size_t i = 0; i < a.classes.size(); ++i) {
    EXPECT_EQ(a.classes[i].name, b.classes[i].name);
    EXPECT_EQ(a.classes[i].image_auroc, b.classes[i].image_auroc);
    EXPECT_EQ(a.classes[i].image_ap, b.classes[i].image_ap);
    EXPECT_EQ(a.classes[i].pixel_auroc, b.classes[i].pixel_auroc);
    EXPECT_EQ(a.classes[i].pixel_pro, b.classes[i].pixel_pro);
    EXPECT_EQ(a.classes[i].test_images, b.classes[i].test_images);
  }
}

TEST(Eval, EndToEndResumeAndShards) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  EvalFixture f(fixtures);
  const EvalSummary full = run_eval(f.options("full"));
  EXPECT_EQ(full.images, 12);
  EXPECT_EQ(full.computed, 12);
  // masks per image: 1 + 4 + prototype (one batch of ≤ 8) × ⌊10 · 0.4⌋ steps, when the prototype mask is not empty
  EXPECT_GE(full.unet_calls, 12 * 4);
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

  // Another config in the same folder: refused, unless --overwrite.
  EvalOptions other = f.options("full");
  other.overrides.push_back("inference.alpha=0.2");
  EXPECT_THROW(run_eval(other), InputError);

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
  std::mt19937_64 rng(11);
  for (int attempt = 0; attempt < 5; ++attempt) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", (std::string("exec ") + ANOMALYSD_CLI + " " + args + " > /dev/null 2>&1").c_str(), nullptr);
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 1200));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    // Every map that exists is whole; the scores file parses.
    const fs::path maps = f.tmp.path() / "killed/maps";
    if (fs::is_directory(maps))
      for (const auto& e : fs::recursive_directory_iterator(maps))
        if (e.is_regular_file()) EXPECT_NO_THROW(read_anomaly_map(e.path().string())) << e.path();
    if (fs::is_regular_file(f.tmp.path() / "killed/scores.csv"))
      EXPECT_NO_THROW(read_scores_csv((f.tmp.path() / "killed/scores.csv").string()));
  }
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

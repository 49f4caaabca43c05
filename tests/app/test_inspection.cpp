// `infer` on an inspection line: killed and resumed, a watched folder, calibration from normal
// images and its refusals (app/infer.h, app/calibrate.h).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "anomalysd/app/calibrate.h"
#include "anomalysd/app/calibration.h"
#include "anomalysd/app/infer.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/io/append_log.h"
#include "anomalysd/io/errors.h"
#include "app/app_fixtures.h"
#include "test_support.h"

namespace anomalysd {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A smooth textured image (test::smooth_image); `defect` paints a bright square.
cv::Mat part_image(int seed, bool defect = false, int size = 32) {
  cv::Mat out = test::smooth_image(size, size, seed);
  if (defect) cv::rectangle(out, cv::Rect(size / 3, size / 3, size / 4, size / 4), cv::Scalar(255, 255, 255), cv::FILLED);
  return out;
}

// The options of a small `infer` run of class "part" on the tiny pipeline.
InferOptions part_run(const std::vector<std::string>& overrides, const std::string& model, const fs::path& input, const fs::path& output) {
  InferOptions o;
  o.overrides = overrides;
  o.model = model;
  o.cls = "part";
  o.input = input.string();
  o.output = output.string();
  return o;
}

std::string cli_args(const std::vector<std::string>& overrides) {
  std::string s;
  for (const auto& o : overrides) s += " --set " + o;
  return s;
}

// Starts the CLI in the background, its output in `log`.
pid_t spawn_cli(const std::string& args, const fs::path& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", (std::string("exec ") + ANOMALYSD_CLI + " " + args + " > '" + log.string() + "' 2>&1").c_str(), nullptr);
    _exit(127);
  }
  return pid;
}

// Waits for a child up to `seconds`; its exit code, or -1 (killed then) / -signal.
int wait_child(pid_t pid, double seconds) {
  int status = 0;
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1000;
}

bool wait_for(const std::function<bool()>& condition, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return condition();
}

std::vector<nlohmann::json> records(const fs::path& out) {
  std::vector<nlohmann::json> r;
  for (const auto& line : read_line_log((out / "results.jsonl").string())) r.push_back(nlohmann::json::parse(line));
  return r;
}

std::map<std::string, double> scores_by_path(const fs::path& out) {
  std::map<std::string, double> m;
  for (const auto& r : records(out)) m[r["path"].get<std::string>()] = r["score"].get<double>();
  return m;
}

TEST(Inspection, KilledMidRunThenRerunScoresEveryImageOnceAsAnUninterruptedRun) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  test::TempDir tmp;
  const auto overrides = test::small_run_overrides(tmp.path() / "weights");
  const fs::path in = tmp.path() / "in", shots = tmp.path() / "shots";
  fs::create_directories(in / "line2");
  fs::create_directories(shots);
  for (int i = 0; i < 10; ++i) cv::imwrite((in / (i < 5 ? "" : "line2") / ("img" + std::to_string(i) + ".png")).string(), part_image(100 + i, i % 3 == 0));
  cv::imwrite((shots / "good.png").string(), part_image(7));
  const std::string model = (fixtures / "pipeline_sd2_inpaint_tiny").string();

  InferOptions o = part_run(overrides, model, in, tmp.path() / "whole");
  o.shots = shots.string();
  o.recursive = true;
  o.threshold = 0.5;
  ASSERT_EQ(run_infer(o).images, 10);
  const auto whole = scores_by_path(o.output);
  ASSERT_EQ(whole.size(), 10u);
  EXPECT_TRUE(whole.count("line2/img7.png"));  // relative paths kept
  EXPECT_TRUE(fs::is_regular_file(fs::path(o.output) / "maps/line2/img7.tiff"));
  EXPECT_TRUE(fs::is_regular_file(fs::path(o.output) / "masks/line2/img7.png"));

  const fs::path killed = tmp.path() / "killed";
  const std::string args = "infer --model " + model + " --class part --input " + in.string() + " --shots " + shots.string() +
                           " --recursive --threshold 0.5 --output " + killed.string() + cli_args(overrides);
  int mid_run_kills = 0;
  for (int attempt = 0; attempt < 3; ++attempt) {
    const std::size_t before = records(killed).size();
    const pid_t pid = spawn_cli(args, tmp.path() / "log.txt");
    wait_for([&] { return records(killed).size() >= before + 2; }, 120);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    const std::size_t n = records(killed).size();
    if (WIFSIGNALED(status) && n > before && n < 10) ++mid_run_kills;
  }
  EXPECT_GE(mid_run_kills, 2) << "the kills must land mid-run";
  // A power cut's torn last line: cut off on resume, that image computed again.
  {
    std::ofstream torn(killed / "results.jsonl", std::ios::app);
    torn << "{\"path\": \"img9.png\", \"sco";
  }
  std::string log;
  EXPECT_EQ(test::run_cli(args, &log), 0) << log;
  EXPECT_NE(log.find("torn last line"), std::string::npos) << log;
  const auto r = records(killed);
  std::set<std::string> paths;
  for (const auto& j : r) EXPECT_TRUE(paths.insert(j["path"].get<std::string>()).second) << "scored twice: " << j["path"];
  EXPECT_EQ(r.size(), 10u);
  EXPECT_EQ(scores_by_path(killed), whole);
  // scores.csv holds each image once, in agreement with the records.
  std::ifstream csv(killed / "scores.csv");
  int lines = 0;
  for (std::string line; std::getline(csv, line);) ++lines;
  EXPECT_EQ(lines, 11);
  // The decision is part of the run: another threshold is refused, naming it.
  EXPECT_EQ(test::run_cli(args + " --sensitivity 0.7", &log), 2) << log;
  EXPECT_NE(log.find("decision"), std::string::npos) << log;
}

TEST(Inspection, WatchTakesEachNewFileOnceSlowAndCorruptOnesIncludedAndStopsOnSigterm) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  test::TempDir tmp;
  const auto overrides = test::small_run_overrides(tmp.path() / "weights");
  const fs::path watch = tmp.path() / "watch", done = tmp.path() / "done", out = tmp.path() / "out", log = tmp.path() / "log.txt";
  fs::create_directories(watch);
  const std::string model = (fixtures / "pipeline_sd2_inpaint_tiny").string();
  const std::string args = "infer --watch --settle 0.6 --poll 0.1 --move-done " + done.string() + " --model " + model +
                           " --class part --threshold 0.5 --input " + watch.string() + " --output " + out.string() + cli_args(overrides);
  const pid_t pid = spawn_cli(args, log);
  ASSERT_TRUE(wait_for([&] { return test::read_bytes(log.string()).find("watching") != std::string::npos; }, 120)) << test::read_bytes(log.string());

  // 1. written under a hidden name, then renamed: the usual way to drop a file
  cv::imwrite((tmp.path() / "a.png").string(), part_image(1));
  fs::copy_file(tmp.path() / "a.png", watch / ".a.png.part");
  fs::rename(watch / ".a.png.part", watch / "a.png");
  // 2. written slowly in place, in pieces 0.3 s apart (the settle time is 0.6 s)
  cv::imwrite((tmp.path() / "slow.png").string(), part_image(2, true));
  const std::string bytes = test::read_bytes((tmp.path() / "slow.png").string());
  {
    std::ofstream slow(watch / "slow.png", std::ios::binary);
    for (int piece = 0; piece < 5; ++piece) {
      slow.write(bytes.data() + piece * bytes.size() / 5, static_cast<std::streamsize>((piece + 1) * bytes.size() / 5 - piece * bytes.size() / 5));
      slow.flush();
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  }
  // 3. corrupt
  test::write_bytes((watch / "corrupt.png").string(), std::string("\x89PNG\r\n\x1a\nbroken", 14));

  EXPECT_TRUE(wait_for([&] { return records(out).size() >= 2 && test::read_bytes(log.string()).find("corrupt.png") != std::string::npos; }, 120))
      << test::read_bytes(log.string());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // more polls: nothing is taken twice
  kill(pid, SIGTERM);
  EXPECT_EQ(wait_child(pid, 60), 3) << "a clean stop, exit 3 for the corrupt file:\n" << test::read_bytes(log.string());
  const std::string text = test::read_bytes(log.string());
  EXPECT_NE(text.find("watch stopped"), std::string::npos) << text;

  const auto r = records(out);
  ASSERT_EQ(r.size(), 2u) << text;
  std::set<std::string> paths;
  for (const auto& j : r) paths.insert(j["path"].get<std::string>());
  EXPECT_EQ(paths, (std::set<std::string>{"a.png", "slow.png"}));
  size_t corrupt_mentions = 0;
  for (size_t p = text.find("skipped: " + (watch / "corrupt.png").string()); p != std::string::npos;
       p = text.find("skipped: " + (watch / "corrupt.png").string(), p + 1))
    ++corrupt_mentions;
  EXPECT_EQ(corrupt_mentions, 1u) << "a corrupt file is reported once, not on every poll";
  EXPECT_EQ(text.find("skipped: " + (watch / "slow.png").string()), std::string::npos) << "the slow file was read before it was complete";
  EXPECT_TRUE(fs::is_regular_file(done / "a.png"));
  EXPECT_TRUE(fs::is_regular_file(done / "slow.png"));
  EXPECT_FALSE(fs::exists(watch / "a.png"));
  EXPECT_TRUE(fs::exists(watch / "corrupt.png"));
  EXPECT_TRUE(fs::is_regular_file(out / "scores.json"));
  // The slow file was read whole: its score is the batch run's on the complete image.
  fs::create_directories(tmp.path() / "batch");
  fs::copy_file(tmp.path() / "slow.png", tmp.path() / "batch/slow.png");
  InferOptions o = part_run(overrides, model, tmp.path() / "batch", tmp.path() / "batch_out");
  o.threshold = 0.5;
  run_infer(o);
  EXPECT_EQ(scores_by_path(out).at("slow.png"), scores_by_path(o.output).at("slow.png"));
  for (const auto& j : records(out)) EXPECT_TRUE(j.contains("label") && j.contains("mask")) << j;
}

TEST(Inspection, WatchedFolderThatDisappearsIsAClearErrorAndKeepsTheResults) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  test::TempDir tmp;
  const auto overrides = test::small_run_overrides(tmp.path() / "weights");
  const fs::path watch = tmp.path() / "watch", out = tmp.path() / "out", log = tmp.path() / "log.txt";
  fs::create_directories(watch);
  cv::imwrite((watch / "a.png").string(), part_image(1));
  const pid_t pid = spawn_cli("infer --watch --settle 0 --poll 0.1 --model " + (fixtures / "pipeline_sd2_inpaint_tiny").string() +
                                  " --class part --input " + watch.string() + " --output " + out.string() + cli_args(overrides),
                              log);
  ASSERT_TRUE(wait_for([&] { return records(out).size() == 1; }, 120)) << test::read_bytes(log.string());
  fs::remove_all(watch);
  EXPECT_EQ(wait_child(pid, 60), 2) << test::read_bytes(log.string());
  EXPECT_NE(test::read_bytes(log.string()).find("the watched folder is gone"), std::string::npos) << test::read_bytes(log.string());
  EXPECT_EQ(records(out).size(), 1u);
  EXPECT_TRUE(fs::is_regular_file(out / "scores.json"));
}

TEST(Inspection, CalibrateFromNormalShotsThenInferAppliesItAndRefusesAnotherRun) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  test::TempDir tmp;
  const auto overrides = test::small_run_overrides(tmp.path() / "weights");
  const std::string model = (fixtures / "pipeline_sd2_inpaint_tiny").string();
  const fs::path shots = tmp.path() / "shots", test_dir = tmp.path() / "test", file = tmp.path() / "calibration.json";
  fs::create_directories(shots);
  fs::create_directories(test_dir);
  for (int i = 0; i < 4; ++i) cv::imwrite((shots / ("s" + std::to_string(i) + ".png")).string(), part_image(10 + i));
  for (int i = 0; i < 6; ++i) cv::imwrite((test_dir / ("t" + std::to_string(i) + ".png")).string(), part_image(30 + i, i >= 3));

  CalibrateOptions c;
  c.overrides = overrides;
  c.model = model;
  c.cls = "part";
  c.shots = shots.string();
  c.output = file.string();
  c.max_false_alarm = 0.0;
  const CalibrateSummary s = run_calibrate(c);
  EXPECT_TRUE(s.leave_one_out);
  EXPECT_EQ(s.calibration.normal_images, 4);
  EXPECT_EQ(s.calibration.false_alarms, 0);
  EXPECT_GT(s.calibration.image.threshold, s.calibration.normal_scores.max);  // a 0 % target: above every normal score
  // From a folder of further normal images, one of them a shot (left out: scored against its own bank).
  const fs::path normal = tmp.path() / "normal";
  fs::create_directories(normal);
  for (int i = 0; i < 3; ++i) cv::imwrite((normal / ("n" + std::to_string(i) + ".png")).string(), part_image(50 + i));
  fs::copy_file(shots / "s0.png", normal / "copy_of_a_shot.png");
  c.cls = "other";
  c.normal = normal.string();
  const CalibrateSummary from_folder = run_calibrate(c);  // added to the same file
  EXPECT_FALSE(from_folder.leave_one_out);
  EXPECT_EQ(from_folder.calibration.normal_images, 3);
  EXPECT_EQ(Calibration::load(file.string()).classes.size(), 2u);

  InferOptions o = part_run(overrides, model, test_dir, tmp.path() / "out");
  o.shots = shots.string();
  o.calibration = file.string();
  const InferSummary r = run_infer(o);
  EXPECT_EQ(r.images, 6);
  const float cut = static_cast<float>(s.calibration.image.threshold);
  for (const auto& j : records(o.output)) {
    const double score = j["score"].get<double>();
    EXPECT_EQ(j["label"] == "anomalous", static_cast<float>(score) >= cut) << j;
    EXPECT_NEAR(j["normalized"].get<double>(), s.calibration.image.normalize(score), 1e-12);
    EXPECT_EQ(j["normalized"].get<double>() >= 0.5, static_cast<float>(score) >= cut) << j;
    const cv::Mat mask = cv::imread(j["mask"].get<std::string>(), cv::IMREAD_UNCHANGED);
    ASSERT_EQ(mask.rows, 32);
    // The pixel threshold is the image one here: a mask is drawn exactly where an alarm was raised.
    EXPECT_EQ(cv::countNonZero(mask) > 0, j["label"] == "anomalous") << j;
  }

  // Refusals: exit 2, a line naming the file and what is wrong, nothing written.
  const std::string base = "infer --model " + model + " --input " + test_dir.string() + " --shots " + shots.string() + cli_args(overrides);
  auto refused = [&](const std::string& extra, const std::string& expected) {
    const fs::path out = tmp.path() / "refused";
    std::string log;
    EXPECT_EQ(test::run_cli(base + " --output " + out.string() + " " + extra, &log), 2) << log;
    EXPECT_NE(log.find(expected), std::string::npos) << "expected '" << expected << "' in:\n" << log;
    EXPECT_FALSE(fs::exists(out)) << extra;
  };
  refused("--class part --calibration " + file.string() + " --set inference.alpha=0.25", file.string() + ": calibrated on another model or config");
  refused("--class part --calibration " + file.string() + " --set inference.alpha=0.25", "alpha: 0.25");
  refused("--class nut --calibration " + file.string(), "no calibration for class 'nut' (it has: other, part)");
  const std::string text = test::read_bytes(file.string());
  test::write_bytes(tmp.file("truncated.json"), text.substr(0, text.size() - 40));
  refused("--class part --calibration " + tmp.file("truncated.json"), tmp.file("truncated.json") + ": invalid JSON");
  fs::remove(shots / "s3.png");
  refused("--class part --calibration " + file.string(), "other shots");
}

}  // namespace
}  // namespace anomalysd

// `finetune` and `eval` as one job of two processes on loopback, started the way torchrun starts
// them (the variables set by hand: Debian 12's torchrun crashes at start). Every wait is bounded.
// The launch variables and the process group alone: tests/core/test_distributed.cpp.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <type_traits>

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "anomalysd/app/calibration.h"
#include "anomalysd/app/eval.h"
#include "anomalysd/app/finetune.h"
#include "anomalysd/core/distributed.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/io/safetensors.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/metrics/results.h"
#include "anomalysd/models/sd_pipeline.h"
#include "anomalysd/train/checkpoint.h"
#include "anomalysd/train/trainer.h"
#include "app/app_fixtures.h"
#include "core/launch_env_helpers.h"
#include "test_support.h"

namespace anomalysd {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

using namespace launch_test;


// One rank: the CLI with RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* set as torchrun sets them.
struct RankProcess {
  pid_t pid = -1;
  fs::path log;
  int exit_code = -100;  // after wait(): the exit code, or -signal
  double seconds = 0;    // from start (or from `since`) to exit
};

RankProcess start_rank(int rank, int world, int port, const std::string& args, const fs::path& log) {
  RankProcess p;
  p.log = log;
  p.pid = fork();
  if (p.pid == 0) {
    for (const auto& [k, v] : kNoLaunch) unsetenv(k.c_str());
    setenv("RANK", std::to_string(rank).c_str(), 1);
    setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
    setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
    setenv("LOCAL_WORLD_SIZE", std::to_string(world).c_str(), 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
    execl("/bin/sh", "sh", "-c", (std::string("exec ") + ANOMALYSD_CLI + " " + args + " > " + log.string() + " 2>&1").c_str(), nullptr);
    _exit(127);
  }
  return p;
}

// Waits for the process until `deadline`; kills it (and fails the test) past that.
void wait_rank(RankProcess& p, Clock::time_point deadline, Clock::time_point since) {
  int status = 0;
  while (Clock::now() < deadline) {
    if (waitpid(p.pid, &status, WNOHANG) == p.pid) {
      p.seconds = std::chrono::duration<double>(Clock::now() - since).count();
      p.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(p.pid, SIGKILL);
  waitpid(p.pid, &status, 0);
  ADD_FAILURE() << "rank process " << p.pid << " still running at its deadline; killed. Its log:\n" << test::read_bytes(p.log.string());
  p.exit_code = -SIGKILL;
}

// Runs `world` ranks of the CLI to completion (bounded); returns them with their exit codes.
std::vector<RankProcess> run_ranks(int world, const std::string& args, const fs::path& log_prefix, int seconds = 240) {
  const int port = free_port();
  std::vector<RankProcess> ranks;
  const auto start = Clock::now();
  for (int r = 0; r < world; ++r) ranks.push_back(start_rank(r, world, port, args, log_prefix.string() + "." + std::to_string(r) + ".log"));
  for (auto& p : ranks) wait_rank(p, start + std::chrono::seconds(seconds), start);
  return ranks;
}

std::string logs(const std::vector<RankProcess>& ranks) {
  std::string s;
  for (std::size_t r = 0; r < ranks.size(); ++r) s += "--- rank " + std::to_string(r) + " log:\n" + test::read_bytes(ranks[r].log.string());
  return s;
}

// ---------------------------------------------------------------------------------------------

struct JobFixture {
  test::TempDir tmp;
  std::vector<std::string> overrides;
  std::string model;
  explicit JobFixture(const fs::path& fixtures, const std::vector<std::string>& extra) {
    overrides = test::small_run_overrides(tmp.path() / "weights");
    for (const auto& o : extra) overrides.push_back(o);
    test::make_textured_dataset(tmp.path() / "data", {"alpha", "beta"}, 3, 2, 2);
    model = (fixtures / "pipeline_sd2_inpaint_tiny").string();
  }
  FinetuneOptions finetune(const std::string& out) const {
    FinetuneOptions o;
    o.overrides = overrides;
    o.model = model;
    o.dataset = "folder";
    o.root = (tmp.path() / "data").string();
    o.shots = 2;
    o.output = (tmp.path() / out).string();
    return o;
  }
  std::string finetune_args(const std::string& out, const std::string& extra = "") const {
    std::string a = "finetune --model " + model + " --dataset folder --root " + (tmp.path() / "data").string() + " --shots 2 --output " +
                    (tmp.path() / out).string() + " " + extra;
    for (const auto& o : overrides) a += " --set " + o;
    return a;
  }
  fs::path logs(const std::string& name) const { return tmp.path() / name; }
};

// The largest difference of two saved models relative to each tensor's largest value.
double max_relative_difference(const fs::path& a, const fs::path& b) {
  double worst = 0;
  for (const char* part : {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"}) {
    const auto ta = load_all((a / part).string()), tb = load_all((b / part).string());
    EXPECT_EQ(ta.size(), tb.size());
    for (const auto& [k, v] : ta) {
      const torch::Tensor x = v.to(torch::kDouble), y = tb.at(k).to(torch::kDouble);
      const double scale = std::max(x.abs().max().item<double>(), 1e-12);
      worst = std::max(worst, (x - y).abs().max().item<double>() / scale);
    }
  }
  return worst;
}

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::set<std::string> checkpoint_names(const fs::path& output) {
  std::set<std::string> out;
  if (fs::is_directory(output / "checkpoints"))
    for (const auto& e : fs::directory_iterator(output / "checkpoints")) out.insert(e.path().filename().string());
  return out;
}

const std::vector<std::string> kTrainSettings = {"train.unet_steps=6",  "train.decoder_steps=2", "train.batch_size=4", "train.save_every=3",
                                                 "train.keep=10",       "train.ema_decay=0.9",   "train.log_every=100", "threads=1"};

TEST(DistributedFinetune, TwoRanksEqualOneProcessWithTheSameGlobalBatchAndWriteOnce) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  auto env = launch_env({});
  JobFixture f(fixtures, kTrainSettings);
  const FinetuneSummary one = run_finetune(f.finetune("one"));
  ASSERT_TRUE(one.finished);
  const auto ranks = run_ranks(2, "--log-level info " + f.finetune_args("two"), f.logs("two"));
  for (const auto& r : ranks) ASSERT_EQ(r.exit_code, 0) << logs(ranks);
  // Only the order of summation differs (each rank sums its 2 of the step's 4 samples). Measured:
  // 1.6e-5 on a 2-core AMD EPYC with AVX512-BF16 (2.8e-5 with cpu_gemm: blas), below 1e-5 on the
  // machine before it; the training moves the model by 2.5e-3 (each rank training on its own half
  // of the batch — its gradients left out of the all-reduce — is refused at the first checkpoint:
  // the ranks' weights differ).
  const double diff = max_relative_difference(f.tmp.path() / "one/model", f.tmp.path() / "two/model");
  EXPECT_LE(diff, 1e-4);
  // ... and training happened: the model moved away from the base.
  EXPECT_GT(max_relative_difference(f.tmp.path() / "one/model", fs::path(f.model)), 1e-4);
  // Written once, by rank 0: one log line per step, the same checkpoints as one process.
  const auto log_lines = lines_of(f.tmp.path() / "two/train_log.csv");
  ASSERT_EQ(log_lines.size(), 1u + 8u);
  // ... with the global batch's loss: the ranks' weighted partial sums add up to one process's mean.
  const auto one_lines = lines_of(f.tmp.path() / "one/train_log.csv");
  ASSERT_EQ(one_lines.size(), log_lines.size());
  for (int step = 0; step < 8; ++step) {
    auto fields = [](const std::string& line) {
      std::vector<std::string> out;
      std::stringstream ss(line);
      for (std::string x; std::getline(ss, x, ',');) out.push_back(x);
      return out;
    };
    const auto two = fields(log_lines[1 + step]), one = fields(one_lines[1 + step]);
    EXPECT_EQ(two[0], std::to_string(step));
    EXPECT_EQ(two[1], one[1]);
    EXPECT_NEAR(std::stod(two[2]), std::stod(one[2]), 1e-5 * std::abs(std::stod(one[2]))) << "step " << step << " loss";
  }
  EXPECT_EQ(checkpoint_names(f.tmp.path() / "two"), checkpoint_names(f.tmp.path() / "one"));
  EXPECT_EQ(read_json_file((f.tmp.path() / "two/checkpoints/step-0000006/training_state.json").string())["world_size"], 2);
  const std::string log0 = test::read_bytes(ranks[0].log.string()), log1 = test::read_bytes(ranks[1].log.string());
  EXPECT_NE(log0.find("rank 0/2 (local 0), backend gloo, master 127.0.0.1:"), std::string::npos) << log0;
  EXPECT_NE(log1.find("rank 1/2 (local 1), backend gloo, master 127.0.0.1:"), std::string::npos) << log1;
  EXPECT_NE(log0.find("checkpoint: "), std::string::npos);
  EXPECT_EQ(log1.find("checkpoint: "), std::string::npos) << "rank 1 reports no progress and writes nothing";
}

TEST(DistributedFinetune, ResumesWithTheSameWorldSizeBitForBitAndWithAnotherOneAtTheSameGlobalBatch) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  auto env = launch_env({});
  JobFixture f(fixtures, kTrainSettings);
  const auto whole = run_ranks(2, f.finetune_args("whole"), f.logs("whole"));
  for (const auto& r : whole) ASSERT_EQ(r.exit_code, 0) << logs(whole);
  const auto stopped = run_ranks(2, f.finetune_args("part", "--stop-after 4"), f.logs("part"));
  for (const auto& r : stopped) ASSERT_EQ(r.exit_code, 0) << logs(stopped);
  ASSERT_EQ(newest_checkpoint((f.tmp.path() / "part").string()), (f.tmp.path() / "part/checkpoints/step-0000004").string());
  ASSERT_FALSE(fs::exists(f.tmp.path() / "part/model"));
  fs::copy(f.tmp.path() / "part", f.tmp.path() / "part-on-one", fs::copy_options::recursive);
  // The same world size: every rank sees the very samples it would have, so bit for bit.
  const auto resumed = run_ranks(2, f.finetune_args("part", "--resume"), f.logs("resumed"));
  for (const auto& r : resumed) ASSERT_EQ(r.exit_code, 0) << logs(resumed);
  for (const char* file : {"model/unet/diffusion_pytorch_model.safetensors", "model/vae/diffusion_pytorch_model.safetensors"})
    EXPECT_EQ(test::read_bytes((f.tmp.path() / "whole" / file).string()), test::read_bytes((f.tmp.path() / "part" / file).string())) << file;
  // One process continues the two ranks' run: the same global batch, summed in another order; the
  // log says so.
  std::string said;
  ASSERT_EQ(test::run_cli(f.finetune_args("part-on-one", "--resume"), &said), 0) << said;
  EXPECT_NE(said.find("resuming a run of 2 process(es) on 1: the same global batch of 4 sample(s) per step"), std::string::npos) << said;
  EXPECT_NE(said.find("resuming at step 4"), std::string::npos) << said;
  EXPECT_TRUE(fs::is_directory(f.tmp.path() / "part-on-one/model"));
  EXPECT_LE(max_relative_difference(f.tmp.path() / "whole/model", f.tmp.path() / "part-on-one/model"), 1e-5);
  EXPECT_EQ(lines_of(f.tmp.path() / "part-on-one/train_log.csv").size(), 1u + 8u);
}

TEST(DistributedFinetune, AKilledRankMakesTheOtherExitWithinTheTimeoutNamingItAndNoHalfCheckpoint) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  auto env = launch_env({});
  const double timeout_s = 30;
  std::vector<std::string> settings = kTrainSettings;
  settings.push_back("train.unet_steps=400");
  settings.push_back("train.save_every=2");
  settings.push_back("train.keep=2");
  settings.push_back("distributed.timeout_s=" + std::to_string(static_cast<int>(timeout_s)));
  JobFixture f(fixtures, settings);
  for (const int victim : {1, 0}) {
    const std::string out = "killed-" + std::to_string(victim);
    const int port = free_port();
    const std::string args = f.finetune_args(out);
    std::vector<RankProcess> ranks;
    const auto start = Clock::now();
    for (int r = 0; r < 2; ++r) ranks.push_back(start_rank(r, 2, port, args, f.logs(out + "." + std::to_string(r) + ".log")));
    // Mid-run: a few steps logged and a checkpoint written.
    const fs::path log = f.tmp.path() / out / "train_log.csv";
    while (lines_of(log).size() < 6 && Clock::now() < start + std::chrono::seconds(120))
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_GE(lines_of(log).size(), 6u) << logs(ranks);
    kill(ranks[static_cast<std::size_t>(victim)].pid, SIGKILL);
    const auto killed_at = Clock::now();
    RankProcess& survivor = ranks[static_cast<std::size_t>(1 - victim)];
    wait_rank(ranks[static_cast<std::size_t>(victim)], killed_at + std::chrono::seconds(10), killed_at);
    wait_rank(survivor, killed_at + std::chrono::seconds(static_cast<int>(timeout_s) + 15), killed_at);
    EXPECT_NE(survivor.exit_code, 0) << logs(ranks);
    EXPECT_LE(survivor.seconds, timeout_s) << "exited " << survivor.seconds << " s after the kill";
    const std::string said = test::read_bytes(survivor.log.string());
    EXPECT_NE(said.find("error: rank " + std::to_string(1 - victim)), std::string::npos) << said;
    EXPECT_NE(said.find("rank " + std::to_string(victim) + (victim == 0 ? " is gone" : " stopped")), std::string::npos) << said;
    // Every checkpoint left loads; no final model.
    ASSERT_FALSE(newest_checkpoint((f.tmp.path() / out).string()).empty());
    for (const auto& name : checkpoint_names(f.tmp.path() / out)) {
      if (name[0] == '.') continue;  // an interrupted save: never read
      EXPECT_NO_THROW(load_sd_pipeline((f.tmp.path() / out / "checkpoints" / name).string())) << name;
    }
    EXPECT_FALSE(fs::exists(f.tmp.path() / out / "model"));
  }
}

// ---------------------------------------------------------------------------------------------

using test::expect_same_metrics;

TEST(DistributedEval, TwoRanksAndAJobArrayWriteTheUnshardedMetricsExactly) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  auto env = launch_env({});
  JobFixture f(fixtures, {"threads=1"});
  EvalOptions o;
  o.overrides = f.overrides;
  o.dataset = "folder";
  o.root = (f.tmp.path() / "data").string();
  o.model = f.model;
  o.shots = 1;
  o.output = (f.tmp.path() / "full").string();
  o.ablation_maps = true;  // Table 4's two ablations from the same inpaintings: merged too
  const EvalSummary full = run_eval(o);
  ASSERT_EQ(full.images, 8);
  ASSERT_EQ(full.variant_results.size(), 2u);

  std::string args = "eval --shard auto --ablation-maps --dataset folder --root " + o.root + " --model " + o.model + " --shots 1 --output " +
                     (f.tmp.path() / "job").string();
  for (const auto& s : f.overrides) args += " --set " + s;
  const auto ranks = run_ranks(2, args, f.logs("job"));
  for (const auto& r : ranks) ASSERT_EQ(r.exit_code, 0) << logs(ranks);
  const RunResults merged = RunResults::load((f.tmp.path() / "job/metrics.json").string());
  expect_same_metrics(merged, full.results);
  expect_same_metrics(RunResults::load((f.tmp.path() / "job/variants/multiscale/metrics.json").string()), full.variant_results[0]);
  expect_same_metrics(RunResults::load((f.tmp.path() / "job/variants/prototype/metrics.json").string()), full.variant_results[1]);
  // The union's calibration is the unsharded run's: thresholds, counts, identity.
  const nlohmann::json calibration = Calibration::load((f.tmp.path() / "job/calibration.json").string()).to_json();
  EXPECT_EQ(calibration, Calibration::load((f.tmp.path() / "full/calibration.json").string()).to_json());
  EXPECT_FALSE(calibration["classes"].empty());
  for (const char* file : {"table.md", "report.html", "report.png", "shards/0-of-2/run.json", "shards/1-of-2/run.json"})
    EXPECT_TRUE(fs::is_regular_file(f.tmp.path() / "job" / file)) << file;
  EXPECT_EQ(read_json_file((f.tmp.path() / "job/shards/1-of-2/run.json").string())["shard"], nlohmann::json::array({1, 2}));
  // The whole job again: each rank finds its part done.
  const auto again = run_ranks(2, args, f.logs("again"));
  for (const auto& r : again) {
    ASSERT_EQ(r.exit_code, 0) << logs(again);
    EXPECT_NE(test::read_bytes(r.log.string()).find("(0 computed now, 4 from a previous run)"), std::string::npos) << logs(again);
  }
  expect_same_metrics(RunResults::load((f.tmp.path() / "job/metrics.json").string()), full.results);

  // Started as a rank without --shard auto: refused before any work (every rank would write every map).
  {
    auto rank = launch_env({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "1"}});
    EvalOptions plain = o;
    plain.output = (f.tmp.path() / "plain").string();
    try {
      run_eval(plain);
      ADD_FAILURE() << "no error";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("rank 1 of 2 (torchrun): pass --shard auto"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(f.tmp.path() / "plain"));
  }

  // A Slurm job array of two tasks, one after the other: the second one completes the set and merges.
  EvalOptions array = o;
  array.output = (f.tmp.path() / "array").string();
  array.shard_auto = true;
  EvalSummary first, second;
  {
    auto task = launch_env({{"SLURM_ARRAY_TASK_ID", "1"}, {"SLURM_ARRAY_TASK_COUNT", "2"}});
    first = run_eval(array);
  }
  EXPECT_FALSE(first.merged);
  EXPECT_EQ(first.images, 4);
  EXPECT_FALSE(fs::exists(f.tmp.path() / "array/metrics.json"));
  {
    auto task = launch_env({{"SLURM_ARRAY_TASK_ID", "0"}, {"SLURM_ARRAY_TASK_COUNT", "2"}});
    second = run_eval(array);
  }
  EXPECT_TRUE(second.merged);
  expect_same_metrics(second.results, full.results);
  expect_same_metrics(RunResults::load((f.tmp.path() / "array/metrics.json").string()), full.results);
}

}  // namespace
}  // namespace anomalysd

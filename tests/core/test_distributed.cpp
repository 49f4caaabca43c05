// Several processes as one job (core/launch_env.h, core/distributed.h) on loopback: the launch
// variables, the data-parallel share and the buckets, and the process group's collectives and
// failures across ranks in threads and processes. Every wait is bounded.
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
#include "anomalysd/train/trainer.h"
#include "anomalysd/app/eval.h"
#include "anomalysd/app/finetune.h"
#include "anomalysd/core/distributed.h"
#include "anomalysd/core/launch_env.h"
#include "anomalysd/train/trainer.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/io/safetensors.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/metrics/results.h"
#include "anomalysd/models/sd_pipeline.h"
#include "anomalysd/train/checkpoint.h"
#include "core/launch_env_helpers.h"
#include "test_support.h"

namespace anomalysd {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace launch_test;

TEST(LaunchEnv, TorchrunAndSlurmVariablesAndErrorsThatNameTheVariable) {
  {
    auto env = launch_env({});
    const LaunchEnv e = read_launch_env();
    EXPECT_EQ(e.world_size, 1);
    EXPECT_FALSE(e.distributed());
    EXPECT_EQ(read_array_task().count, 0);
  }
  {
    auto env = launch_env({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                           {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29511"}});
    const LaunchEnv e = read_launch_env();
    EXPECT_EQ(e.rank, 3);
    EXPECT_EQ(e.world_size, 4);
    EXPECT_EQ(e.local_rank, 1);
    EXPECT_EQ(e.local_world_size, 2);
    EXPECT_EQ(e.master_addr, "node7");
    EXPECT_EQ(e.master_port, 29511);
    EXPECT_EQ(e.launcher, "torchrun");
    EXPECT_FALSE(e.launcher_store);  // started by hand: rank 0 serves the store
    EXPECT_EQ(e.key_prefix, "anomalysd/");
    // cuda:LOCAL_RANK for the device, and the cores shared among the machine's ranks.
    RuntimeConfig rc;
    rc.device = "cuda";
    const RuntimeConfig mine = runtime_for_rank(rc, e);
    EXPECT_EQ(mine.device, "cuda:1");
    EXPECT_EQ(mine.threads, std::max(1, default_thread_count() / 2));
  }
  {  // torchrun's agent serves the store itself, shared by its restarts
    auto env = launch_env({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"},
                           {"TORCHELASTIC_USE_AGENT_STORE", "True"}, {"TORCHELASTIC_RUN_ID", "job7"}, {"TORCHELASTIC_RESTART_COUNT", "1"}});
    const LaunchEnv e = read_launch_env();
    EXPECT_TRUE(e.launcher_store);
    EXPECT_EQ(e.key_prefix, "anomalysd/job7/attempt_1/");
  }
  {  // srun: SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, with MASTER_* exported by the batch script
    auto env = launch_env({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}, {"SLURM_NTASKS_PER_NODE", "4(x2)"},
                           {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"}});
    const LaunchEnv e = read_launch_env();
    EXPECT_EQ(e.launcher, "slurm");
    EXPECT_EQ(e.rank, 5);
    EXPECT_EQ(e.world_size, 8);
    EXPECT_EQ(e.local_rank, 1);
    EXPECT_EQ(e.local_world_size, 4);
  }
  {  // one Slurm task (e.g. a job array's) is a single process
    auto env = launch_env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
    EXPECT_FALSE(read_launch_env().distributed());
  }
  auto message = [](const std::map<std::string, std::optional<std::string>>& vars) {
    auto env = launch_env(vars);
    try {
      read_launch_env();
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}).find("MASTER_ADDR"), std::string::npos);
  EXPECT_NE(message({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}}).find("RANK='2'"), std::string::npos);
  EXPECT_NE(message({{"RANK", "0"}}).find("WORLD_SIZE"), std::string::npos);
  EXPECT_NE(message({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "http"}}).find("MASTER_PORT='http'"),
            std::string::npos);

  {  // a job array: the task's place from its id, minimum and step
    auto env = launch_env({{"SLURM_ARRAY_TASK_ID", "14"}, {"SLURM_ARRAY_TASK_COUNT", "4"}, {"SLURM_ARRAY_TASK_MIN", "10"},
                           {"SLURM_ARRAY_TASK_STEP", "2"}});
    const ArrayTask a = read_array_task();
    EXPECT_EQ(a.index, 2);
    EXPECT_EQ(a.count, 4);
  }
  {
    auto env = launch_env({{"SLURM_ARRAY_TASK_ID", "7"}, {"SLURM_ARRAY_TASK_COUNT", "4"}});
    EXPECT_THROW(read_array_task(), InputError);
  }
}

TEST(ProcessGroupMath, RankSharesPartitionTheBatchAndBucketsRespectTheirSize) {
  for (int world : {1, 2, 3, 5})
    for (int64_t n : {5, 8, 13}) {
      int64_t next = 100;
      for (int r = 0; r < world; ++r) {
        const auto [begin, count] = rank_share(100, n, r, world);
        EXPECT_EQ(begin, next) << "contiguous, in rank order";
        EXPECT_GE(count, n / world);
        EXPECT_LE(count, n / world + 1);
        next = begin + count;
      }
      EXPECT_EQ(next, 100 + n) << "every sample exactly once";
    }
  // 4-byte floats: 10 + 10 fit 100 bytes, the 30-element one starts a bucket, a 40-element one
  // (160 bytes) is a bucket alone, and the next tensor starts a new one.
  const std::vector<at::Tensor> t = {torch::zeros({10}), torch::zeros({10}), at::Tensor(), torch::zeros({30}), torch::zeros({40}),
                                     torch::zeros({2})};
  const auto buckets = plan_buckets(t, 100);
  ASSERT_EQ(buckets.size(), 4u);
  EXPECT_EQ(buckets[0], (std::vector<std::size_t>{0, 1}));
  EXPECT_EQ(buckets[1], (std::vector<std::size_t>{3}));
  EXPECT_EQ(buckets[2], (std::vector<std::size_t>{4}));
  EXPECT_EQ(buckets[3], (std::vector<std::size_t>{5}));
}

// Two ranks in one process (one thread each): the real TCPStore and Gloo.
TEST(ProcessGroup, BucketedAllReduceBroadcastAndAFailureNamedAcrossTwoRanks) {
  auto env = launch_env({});
  const int port = free_port();
  DistributedConfig config;
  config.timeout_s = 20;
  std::vector<std::vector<at::Tensor>> results(2);
  std::vector<std::string> errors(2);
  std::vector<std::string> shared(2);
  auto rank_main = [&](int rank) {
    try {
      const LaunchEnv e = loopback_rank(rank, port);
      auto pg = ProcessGroup::create(e, config, false);
      EXPECT_TRUE(pg->active());
      EXPECT_EQ(pg->backend(), "gloo");
      // Mixed dtypes and a non-contiguous tensor, in buckets smaller than some tensors.
      std::vector<at::Tensor> t = {torch::full({3, 4}, 1.0f + rank), torch::arange(10, torch::kDouble) * (rank + 1),
                                   torch::full({4, 3}, 2.0f * rank).t(), torch::full({50}, 0.5f + rank)};
      pg->all_reduce_sum(t, "test sum", 64);
      std::vector<at::Tensor> b = {torch::full({5}, 10.0f * (rank + 1)), torch::full({2, 2}, static_cast<double>(rank))};
      pg->broadcast(b, 1, "test broadcast", 16);
      t.insert(t.end(), b.begin(), b.end());
      results[rank] = t;
      const auto [lo, hi] = pg->min_max(rank == 0 ? 3.0 : -1.5, "test min/max");
      EXPECT_EQ(lo, -1.5);
      EXPECT_EQ(hi, 3.0);
      shared[rank] = pg->share("word", rank == 0 ? "from rank 0" : "ignored");
      pg->barrier("middle");
      // Rank 1 fails; rank 0, waiting at a barrier, names it and its reason.
      if (rank == 1) {
        pg->report_failure("the loss is nan");
        return;
      }
      pg->barrier("never complete");
    } catch (const std::exception& e) {
      errors[rank] = e.what();
    }
  };
  const auto level = spdlog::get_level();
  std::thread r1(rank_main, 1);
  rank_main(0);
  r1.join();
  spdlog::set_level(level);  // a rank's logging set-up is process-wide: undone for the other tests
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(results[r].size(), 6u) << errors[r];
    EXPECT_TRUE(torch::equal(results[r][0], torch::full({3, 4}, 3.0f)));
    EXPECT_TRUE(torch::equal(results[r][1], torch::arange(10, torch::kDouble) * 3));
    EXPECT_TRUE(torch::equal(results[r][2], torch::full({3, 4}, 2.0f)));
    EXPECT_TRUE(torch::equal(results[r][3], torch::full({50}, 2.0f)));
    EXPECT_TRUE(torch::equal(results[r][4], torch::full({5}, 20.0f)));
    EXPECT_TRUE(torch::equal(results[r][5], torch::full({2, 2}, 1.0, torch::kDouble)));
    EXPECT_EQ(shared[r], "from rank 0");
  }
  EXPECT_NE(errors[0].find("rank 1 failed: the loss is nan"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("barrier 'never complete'"), std::string::npos) << errors[0];
}

template <typename T, typename = void>
struct HasUseLibUV : std::false_type {};
template <typename T>
struct HasUseLibUV<T, std::void_t<decltype(std::declval<T&>().useLibUV)>> : std::true_type {};
template <typename T>
void plain_sockets(T& options) {  // Debian's LibTorch 2.x has no libuv
  if constexpr (HasUseLibUV<T>::value) options.useLibUV = false;
}

// torchrun's agent serves the store itself; rank 0 must join it, not open a second one on its port.
TEST(ProcessGroup, UnderTorchrunRankZeroJoinsTheAgentsStoreUnderTheRunsPrefix) {
  auto env = launch_env({});
  const int port = free_port();
  c10d::TCPStoreOptions options;
  options.port = static_cast<std::uint16_t>(port);
  options.isServer = true;
  options.waitWorkers = false;
  options.timeout = std::chrono::seconds(20);
  plain_sockets(options);
  auto agent = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", options);
  DistributedConfig config;
  config.timeout_s = 20;
  std::vector<double> sums(2, 0);
  std::vector<std::string> errors(2);
  const auto level = spdlog::get_level();
  auto rank_main = [&](int rank) {
    try {
      LaunchEnv e = loopback_rank(rank, port);
      e.launcher = "torchrun";
      e.launcher_store = true;
      e.key_prefix = "anomalysd/run7/attempt_0/";
      auto pg = ProcessGroup::create(e, config, false);
      std::vector<at::Tensor> t = {torch::full({4}, static_cast<double>(rank + 1), torch::kDouble)};
      pg->all_reduce_sum(t, "test");
      sums[rank] = t[0].sum().item<double>();
      pg->finish();
    } catch (const std::exception& ex) {
      errors[rank] = ex.what();
    }
  };
  std::thread r1(rank_main, 1);
  rank_main(0);
  r1.join();
  spdlog::set_level(level);
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(errors[r], "") << "rank " << r;
    EXPECT_EQ(sums[r], 12.0) << "rank " << r;
  }
  EXPECT_TRUE(agent->check({"anomalysd/run7/attempt_0/join/0", "anomalysd/run7/attempt_0/join/1"}));
}

// A rank that leaves without a word (its heartbeat stops) is named once it has been silent for
// distributed.timeout_s, while the other waits at a barrier: the wait is bounded.
TEST(ProcessGroup, ASilentRankIsNamedAfterTheTimeoutNotWaitedForForever) {
  auto env = launch_env({});
  const int port = free_port();
  DistributedConfig config;
  config.timeout_s = 2;
  std::string error;
  double waited = 0;
  const auto level = spdlog::get_level();
  auto make = [&](int rank) {
    return ProcessGroup::create(loopback_rank(rank, port), config, false);
  };
  std::thread r1([&] {
    auto pg = make(1);
    pg->barrier("both here");
  });  // leaves: its group (and heartbeat) ends with the thread, no failure reported
  {
    auto pg = make(0);
    pg->barrier("both here");
    r1.join();
    const auto start = Clock::now();
    try {
      pg->barrier("rank 1 never comes");
    } catch (const DistributedError& e) {
      error = e.what();
    }
    waited = std::chrono::duration<double>(Clock::now() - start).count();
  }
  spdlog::set_level(level);
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  EXPECT_NE(error.find("rank 1 stopped (no heartbeat for 2 s, distributed.timeout_s)"), std::string::npos) << error;
  EXPECT_GE(waited, 2.0);
  EXPECT_LE(waited, 6.0);
}

// ---------------------------------------------------------------------------------------------
// finetune and eval as two processes

}  // namespace
}  // namespace anomalysd

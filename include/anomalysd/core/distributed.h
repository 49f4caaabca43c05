// Several processes, GPUs or machines as one job, on PyTorch's distributed engine c10d: a TCPStore
// for the rendezvous and ProcessGroupGloo (CPU) or ProcessGroupNCCL (CUDA) for the collectives.
//
// The launch follows torchrun's convention: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT (or Slurm's SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID with MASTER_ADDR/PORT set).
// Without them the world size is 1 and no c10d object is ever made: exactly a single process.
//
// Failures never hang: every rank publishes a heartbeat in the store; a collective that fails, or a
// barrier whose missing rank stops beating for `timeout_s`, ends with a DistributedError naming the
// rank(s) that died, and every rank that fails says so in the store for the others to report.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "anomalysd/core/distributed_config.h"
#include "anomalysd/core/launch_env.h"

namespace anomalysd {

// What this LibTorch build offers: "c10d" with "gloo" and/or "nccl", for --version.
std::string distributed_support();

// A rank died, stopped answering, or the group could not be formed. Exit code 1.
class DistributedError : public std::runtime_error {
 public:
  explicit DistributedError(const std::string& message) : std::runtime_error(message) {}
};

class ProcessGroup {
 public:
  // The group of this process: c10d when the environment names a world size > 1, otherwise a
  // single-process group whose collectives return their input. `device_is_cuda` picks NCCL for
  // backend auto. Logs one line per rank: "rank 1/2 (local 1), backend gloo, master 127.0.0.1:29500".
  static std::shared_ptr<ProcessGroup> create(const LaunchEnv& env, const DistributedConfig& config, bool device_is_cuda);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  int local_rank() const { return env_.local_rank; }
  bool is_main() const { return env_.rank == 0; }
  bool active() const { return env_.world_size > 1; }
  const std::string& backend() const { return backend_; }
  const LaunchEnv& env() const { return env_; }

  // In place, on every rank: the element-wise sum over ranks. Tensors are packed into buckets of
  // up to `bucket_bytes` (one collective per bucket and dtype, not one per tensor); undefined
  // tensors are skipped. `what` names the step in error messages.
  void all_reduce_sum(std::vector<at::Tensor>& tensors, const std::string& what, int64_t bucket_bytes = 25 << 20);
  // In place: rank `root`'s values on every rank (bucketed likewise).
  void broadcast(std::vector<at::Tensor>& tensors, int root, const std::string& what, int64_t bucket_bytes = 25 << 20);
  // Rank 0's `value` on every rank (through the store), e.g. the checkpoint a resume starts from.
  std::string share(const std::string& name, const std::string& value);
  // The minimum and maximum of one number over the ranks.
  std::pair<double, double> min_max(double value, const std::string& what);

  // Every rank arrives before any leaves. Waits as long as the missing ranks keep beating; one
  // that stays silent for timeout_s, or says it failed, ends the wait with a DistributedError
  // naming it. Each `name` must be used once per job (e.g. "save-120").
  void barrier(const std::string& name);
  // The last barrier of a job: afterwards rank 0 (which hosts the store) waits until every other
  // rank has left before it returns, so that no rank loses the store while it still needs it.
  void finish();
  // Tells the others that this rank is failing (they name it and its message). Never throws.
  void report_failure(const std::string& message) noexcept;

 private:
  struct Impl;
  ProcessGroup(const LaunchEnv& env, std::string backend);
  [[noreturn]] void fail(const std::string& what, const std::string& cause);
  void wait_for(const std::string& what, const std::function<std::vector<int>()>& missing_ranks);
  template <typename Collective>
  void run_collective(const std::string& what, Collective&& collective);

  LaunchEnv env_;
  std::string backend_ = "none";
  std::unique_ptr<Impl> impl_;
};

// Packs tensors of one dtype and device into flat buckets of at most `bucket_bytes` (a tensor
// larger than that is a bucket alone): the indices of each bucket, in order. Pure, for tests.
std::vector<std::vector<std::size_t>> plan_buckets(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes);

}  // namespace anomalysd

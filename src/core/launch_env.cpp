#include "anomalysd/core/launch_env.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include <torch/cuda.h>

#include "anomalysd/io/errors.h"

namespace anomalysd {

namespace {

int env_int(const char* name, const char* text, int64_t min, int64_t max) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text, &end, 10);
  // Slurm writes e.g. SLURM_NTASKS_PER_NODE=4(x2): the leading integer is the value.
  if (end == text || errno != 0 || v < min || v > max)
    throw InputError(std::string("environment variable ") + name + "='" + text + "': expected an integer in [" + std::to_string(min) + ", " +
                     std::to_string(max) + "]");
  return static_cast<int>(v);
}

}  // namespace

const char* env_value(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

LaunchEnv read_launch_env() {
  LaunchEnv e;
  const char* rank = env_value("RANK");
  const char* world = env_value("WORLD_SIZE");
  if (rank || world) {
    if (!rank || !world)
      throw InputError(std::string("environment: ") + (rank ? "RANK" : "WORLD_SIZE") + " is set but " + (rank ? "WORLD_SIZE" : "RANK") +
                       " is not; set both (torchrun does), or neither for a single process");
    e.launcher = "torchrun";
    e.world_size = env_int("WORLD_SIZE", world, 1, 1 << 20);
    e.rank = env_int("RANK", rank, 0, e.world_size - 1);
    // Without LOCAL_RANK / LOCAL_WORLD_SIZE: one machine.
    const char* local = env_value("LOCAL_RANK");
    const char* local_world = env_value("LOCAL_WORLD_SIZE");
    e.local_world_size = local_world ? env_int("LOCAL_WORLD_SIZE", local_world, 1, e.world_size) : e.world_size;
    e.local_rank = local ? env_int("LOCAL_RANK", local, 0, e.local_world_size - 1) : e.rank % e.local_world_size;
  } else if (const char* ntasks = env_value("SLURM_NTASKS")) {
    const int n = env_int("SLURM_NTASKS", ntasks, 1, 1 << 20);
    if (n > 1) {  // one task (e.g. each task of a job array) is a single process
      const char* procid = env_value("SLURM_PROCID");
      if (!procid) throw InputError("environment: SLURM_NTASKS=" + std::string(ntasks) + " but SLURM_PROCID is not set (start the ranks with srun)");
      e.launcher = "slurm";
      e.world_size = n;
      e.rank = env_int("SLURM_PROCID", procid, 0, n - 1);
      const char* per_node = env_value("SLURM_NTASKS_PER_NODE");
      e.local_world_size = per_node ? env_int("SLURM_NTASKS_PER_NODE", per_node, 1, n) : n;
      const char* local = env_value("SLURM_LOCALID");
      e.local_rank = local ? env_int("SLURM_LOCALID", local, 0, e.local_world_size - 1) : e.rank % e.local_world_size;
    }
  }
  // torchrun's agent serves the store at MASTER_ADDR:MASTER_PORT itself (rank 0 must not open a second
  // one on that port), shared by its restarts: keys live under the run id and attempt.
  if (const char* agent = env_value("TORCHELASTIC_USE_AGENT_STORE")) e.launcher_store = std::string(agent) == "True" || std::string(agent) == "1";
  e.key_prefix = "anomalysd/";
  if (const char* run_id = env_value("TORCHELASTIC_RUN_ID")) e.key_prefix += std::string(run_id) + "/";
  if (const char* attempt = env_value("TORCHELASTIC_RESTART_COUNT")) e.key_prefix += "attempt_" + std::string(attempt) + "/";
  if (e.world_size > 1) {
    const std::string origin = e.launcher == "slurm" ? "SLURM_NTASKS" : "WORLD_SIZE";
    const char* addr = env_value("MASTER_ADDR");
    const char* port = env_value("MASTER_PORT");
    if (!addr || !port)
      throw InputError("environment: " + origin + "=" + std::to_string(e.world_size) + " but " + (!addr ? "MASTER_ADDR" : "MASTER_PORT") +
                       " is not set: every rank needs the address and port of rank 0's rendezvous store (torchrun sets them; under "
                       "Slurm: export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1) MASTER_PORT=29500)");
    e.master_addr = addr;
    e.master_port = env_int("MASTER_PORT", port, 1, 65535);
  }
  return e;
}

ArrayTask read_array_task() {
  ArrayTask a;
  const char* id = env_value("SLURM_ARRAY_TASK_ID");
  if (!id) return a;
  const char* count = env_value("SLURM_ARRAY_TASK_COUNT");
  if (!count) throw InputError("environment: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not");
  const int n = env_int("SLURM_ARRAY_TASK_COUNT", count, 1, 1 << 20);
  const int task = env_int("SLURM_ARRAY_TASK_ID", id, 0, 1 << 30);
  const char* min = env_value("SLURM_ARRAY_TASK_MIN");
  const char* step = env_value("SLURM_ARRAY_TASK_STEP");
  const int first = min ? env_int("SLURM_ARRAY_TASK_MIN", min, 0, 1 << 30) : 0;
  const int stride = step ? env_int("SLURM_ARRAY_TASK_STEP", step, 1, 1 << 30) : 1;
  if (task < first || (task - first) % stride != 0 || (task - first) / stride >= n)
    throw InputError("environment: SLURM_ARRAY_TASK_ID=" + std::string(id) + " is not one of " + std::to_string(n) + " tasks from " +
                     std::to_string(first) + " in steps of " + std::to_string(stride) +
                     " (--shard auto needs a regular array such as --array=0-3; otherwise give --shard I/N)");
  a.index = (task - first) / stride;
  a.count = n;
  return a;
}

RuntimeConfig runtime_for_rank(RuntimeConfig config, const LaunchEnv& env) {
  if (!env.distributed()) return config;
  const bool cuda = config.device == "cuda" || (config.device == "auto" && torch::cuda::is_available());
  if (cuda) config.device = "cuda:" + std::to_string(env.local_rank);
  if (config.threads == 0) config.threads = std::max(1, default_thread_count() / std::max(1, env.local_world_size));
  return config;
}

}  // namespace anomalysd

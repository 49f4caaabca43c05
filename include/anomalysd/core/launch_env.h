// Where this process sits in a job of several, read from the launcher's environment: torchrun's
// RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, or Slurm's
// SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (with MASTER_ADDR/PORT exported), and Slurm job
// arrays. No variables: one process. core/distributed forms the process group from it.
#pragma once

#include <cstdint>
#include <string>

#include "anomalysd/core/runtime.h"

namespace anomalysd {

// The value of an environment variable, or null when it is unset or empty.
const char* env_value(const char* name);

// Where this process sits in the job, from the environment.
struct LaunchEnv {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr;
  int master_port = 0;
  std::string launcher;  // "torchrun" (RANK/WORLD_SIZE), "slurm" (SLURM_PROCID/SLURM_NTASKS), "" (none)
  bool launcher_store = false;           // torchrun's agent serves the store (TORCHELASTIC_USE_AGENT_STORE)
  std::string key_prefix = "anomalysd/";  // the job's keys in the store (run id and attempt under torchrun)
  bool distributed() const { return world_size > 1; }
};

// Reads the variables above; a malformed or inconsistent one is an InputError naming it.
LaunchEnv read_launch_env();

// A Slurm job array's place (SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT);
// count 0 when the process is not part of an array.
struct ArrayTask {
  int64_t index = 0, count = 0;
};
ArrayTask read_array_task();

// The runtime of this rank: device `auto`/`cuda` becomes cuda:LOCAL_RANK, and threads 0 (all
// cores) becomes the cores divided among the ranks on this machine (LOCAL_WORLD_SIZE).
RuntimeConfig runtime_for_rank(RuntimeConfig config, const LaunchEnv& env);

}  // namespace anomalysd

// Launch variables for tests of several processes (tests/core/test_distributed.cpp and
// tests/app/test_distributed.cpp): a scope with exactly the given ones set, a free loopback port,
// and the LaunchEnv of one of two ranks on it.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include "anomalysd/core/launch_env.h"

namespace anomalysd::launch_test {

// Sets (or, with nullopt, removes) environment variables for a scope, restoring them after.
class ScopedEnv {
 public:
  explicit ScopedEnv(const std::map<std::string, std::optional<std::string>>& vars) {
    for (const auto& [k, v] : vars) {
      const char* old = std::getenv(k.c_str());
      saved_[k] = old ? std::optional<std::string>(old) : std::nullopt;
      if (v) setenv(k.c_str(), v->c_str(), 1);
      else unsetenv(k.c_str());
    }
  }
  ~ScopedEnv() {
    for (const auto& [k, v] : saved_) {
      if (v) setenv(k.c_str(), v->c_str(), 1);
      else unsetenv(k.c_str());
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

// Every launch variable unset: the test process itself is never a rank.
inline const std::map<std::string, std::optional<std::string>> kNoLaunch = {
    {"RANK", std::nullopt},          {"WORLD_SIZE", std::nullopt},         {"LOCAL_RANK", std::nullopt},
    {"LOCAL_WORLD_SIZE", std::nullopt}, {"MASTER_ADDR", std::nullopt},     {"MASTER_PORT", std::nullopt},
    {"SLURM_PROCID", std::nullopt},  {"SLURM_NTASKS", std::nullopt},       {"SLURM_LOCALID", std::nullopt},
    {"SLURM_NTASKS_PER_NODE", std::nullopt}, {"SLURM_ARRAY_TASK_ID", std::nullopt}, {"SLURM_ARRAY_TASK_COUNT", std::nullopt},
    {"SLURM_ARRAY_TASK_MIN", std::nullopt}, {"SLURM_ARRAY_TASK_STEP", std::nullopt}, {"TORCHELASTIC_USE_AGENT_STORE", std::nullopt},
    {"TORCHELASTIC_RUN_ID", std::nullopt}, {"TORCHELASTIC_RESTART_COUNT", std::nullopt}};

inline ScopedEnv launch_env(std::map<std::string, std::optional<std::string>> vars) {
  for (const auto& [k, v] : kNoLaunch) vars.emplace(k, v);  // the given ones win
  return ScopedEnv(vars);
}

inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return 29500 + static_cast<int>(::getpid() % 1000);
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

// Rank `rank` of two on 127.0.0.1:port, for groups of threads in this process.
inline LaunchEnv loopback_rank(int rank, int port) {
  LaunchEnv e;
  e.rank = e.local_rank = rank;
  e.world_size = e.local_world_size = 2;
  e.master_addr = "127.0.0.1";
  e.master_port = port;
  e.launcher = "test";
  return e;
}

}  // namespace anomalysd::launch_test

// Where a run's CPU time goes, per LibTorch operator (`anomalysd bench … --profile`): the run is
// recorded with LibTorch's profiler and folded into one row per operator name, with its self time
// (excluding the operators it called) and its inclusive time.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace anomalysd {

struct OpTime {
  std::string name;
  long long calls = 0;
  double self_ms = 0;   // time in the operator itself, summed over the threads that ran it
  double total_ms = 0;  // including the operators it called (outermost calls only: no double count of recursion)
};

// Runs `run` once under the profiler; rows sorted by self time, largest first. Throws when this
// LibTorch build has no profiler.
std::vector<OpTime> profile_ops(const std::function<void()>& run);

// A table of the `top` rows by self time, their share of the summed self time, and the rest as one row.
std::string format_op_table(const std::vector<OpTime>& ops, std::size_t top = 25);

}  // namespace anomalysd

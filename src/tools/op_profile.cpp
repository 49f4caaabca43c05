#include "anomalysd/tools/op_profile.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <stdexcept>

#include <torch/version.h>

#if __has_include(<torch/csrc/autograd/profiler_legacy.h>)
#include <torch/csrc/autograd/profiler_legacy.h>
#define ANOMALYSD_HAVE_LEGACY_PROFILER 1
#else
#define ANOMALYSD_HAVE_LEGACY_PROFILER 0
#endif

namespace anomalysd {

#if ANOMALYSD_HAVE_LEGACY_PROFILER
namespace {
namespace prof = torch::autograd::profiler;

struct Open {
  std::string name;
  double start_us;
  double child_us = 0;
};

// Folds one thread's push/pop events (properly nested on a thread) into per-name rows.
void fold_thread(const std::vector<prof::LegacyEvent>& events, std::map<std::string, OpTime>& rows) {
  std::vector<Open> stack;
  std::map<std::string, int> depth;  // open calls per name: inclusive time counts the outermost only
  for (const auto& e : events) {
    if (e.kind() == prof::EventKind::PushRange) {
      stack.push_back({e.name(), e.cpuUs()});
      ++depth[stack.back().name];
    } else if (e.kind() == prof::EventKind::PopRange && !stack.empty()) {
      const Open open = stack.back();
      stack.pop_back();
      const double duration = e.cpuUs() - open.start_us;
      OpTime& row = rows[open.name];
      row.name = open.name;
      row.calls += 1;
      row.self_ms += (duration - open.child_us) / 1000.0;
      if (--depth[open.name] == 0) row.total_ms += duration / 1000.0;
      if (!stack.empty()) stack.back().child_us += duration;
    }
  }
}
}  // namespace

std::vector<OpTime> profile_ops(const std::function<void()>& run) {
  prof::enableProfilerLegacy(torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU));
  try {
    run();
  } catch (...) {
    prof::disableProfilerLegacy();
    throw;
  }
  const prof::thread_event_lists lists = prof::disableProfilerLegacy();
  std::map<std::string, OpTime> rows;
  for (const auto& events : lists) fold_thread(events, rows);
  rows.erase("profiler::_record_function_enter");
  std::vector<OpTime> out;
  for (auto& [name, row] : rows)
    if (!name.empty() && name != "[memory]") out.push_back(row);
  std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.self_ms > b.self_ms; });
  return out;
}
#else
std::vector<OpTime> profile_ops(const std::function<void()>&) {
  throw std::runtime_error("--profile: this LibTorch build has no legacy profiler header (torch/csrc/autograd/profiler_legacy.h)");
}
#endif

std::string format_op_table(const std::vector<OpTime>& ops, std::size_t top) {
  double all = 0;
  for (const auto& o : ops) all += o.self_ms;
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-44s %8s %11s %7s %11s\n", "operator", "calls", "self ms", "self %", "total ms");
  out += line;
  double rest = 0;
  long long rest_calls = 0;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (i >= top) {
      rest += ops[i].self_ms;
      rest_calls += ops[i].calls;
      continue;
    }
    std::snprintf(line, sizeof line, "%-44.44s %8lld %11.1f %6.1f%% %11.1f\n", ops[i].name.c_str(), ops[i].calls, ops[i].self_ms,
                  all > 0 ? 100.0 * ops[i].self_ms / all : 0.0, ops[i].total_ms);
    out += line;
  }
  if (rest_calls > 0) {
    std::snprintf(line, sizeof line, "%-44s %8lld %11.1f %6.1f%%\n", "(all others)", rest_calls, rest, all > 0 ? 100.0 * rest / all : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-44s %8s %11.1f\n", "(sum of self times, all threads)", "", all);
  out += line;
  return out;
}

}  // namespace anomalysd

#include "anomalysd/core/distributed.h"

#include "anomalysd_c10d.h"  // generated: ANOMALYSD_WITH_C10D, ANOMALYSD_WITH_GLOO, ANOMALYSD_WITH_NCCL

// The c10d backends' headers declare their classes only under these macros.
#if ANOMALYSD_WITH_GLOO
#define USE_C10D_GLOO 1
#endif
#if ANOMALYSD_WITH_NCCL
#define USE_C10D_NCCL 1
#endif

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <type_traits>

#include <torch/torch.h>
#include <spdlog/spdlog.h>

#if ANOMALYSD_WITH_C10D
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#if ANOMALYSD_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if ANOMALYSD_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "anomalysd/io/errors.h"

namespace anomalysd {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kHeartbeatEvery = std::chrono::milliseconds(500);
// After a collective fails: how long a rank's heartbeat must stand still to be named as gone.
constexpr auto kDiagnoseWindow = std::chrono::milliseconds(2500);

// c10::Error's what() carries a C++ backtrace: the message alone reads better in one error line.
std::string error_text(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

std::string ranks_text(const std::vector<int>& ranks) {
  std::ostringstream s;
  for (std::size_t i = 0; i < ranks.size(); ++i) s << (i ? ", " : "") << ranks[i];
  return (ranks.size() == 1 ? "rank " : "ranks ") + s.str();
}

}  // namespace

std::string distributed_support() {
#if ANOMALYSD_WITH_C10D
  std::string s = "c10d (TCPStore";
#if ANOMALYSD_WITH_GLOO
  s += ", Gloo";
#endif
#if ANOMALYSD_WITH_NCCL
  s += ", NCCL";
#endif
  return s + ")";
#else
  return "none (this LibTorch has no c10d headers: one process only)";
#endif
}

std::vector<std::vector<std::size_t>> plan_buckets(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  std::vector<std::vector<std::size_t>> buckets;
  int64_t filled = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (!tensors[i].defined()) continue;
    const int64_t bytes = tensors[i].numel() * static_cast<int64_t>(tensors[i].element_size());
    if (buckets.empty() || filled + bytes > bucket_bytes) {
      buckets.emplace_back();
      filled = 0;
    }
    buckets.back().push_back(i);
    filled += bytes;
  }
  return buckets;
}

// ---------------------------------------------------------------------------------------------
#if ANOMALYSD_WITH_C10D

// TCPStoreOptions::useLibUV exists from LibTorch 2.2 on: turned off where it exists.
template <typename T, typename = void>
struct HasUseLibUV : std::false_type {};
template <typename T>
struct HasUseLibUV<T, std::void_t<decltype(std::declval<T&>().useLibUV)>> : std::true_type {};
template <typename T>
bool without_libuv(T& options) {
  if constexpr (HasUseLibUV<T>::value) {
    if (!options.useLibUV) return false;
    options.useLibUV = false;
    return true;
  }
  return false;
}

struct ProcessGroup::Impl {
  LaunchEnv env;
  std::chrono::milliseconds timeout{600000};
  c10::intrusive_ptr<c10d::TCPStore> store;
#if ANOMALYSD_WITH_GLOO
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#endif
#if ANOMALYSD_WITH_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
  // The heartbeat: a thread with its own store connection (the main one may be busy in a wait).
  std::thread heartbeat;
  std::mutex mutex;
  std::condition_variable wake;
  bool stop = false;
  std::atomic<bool> store_lost{false};
  bool failed = false;    // this rank reported a failure
  bool finished = false;  // finish() ran

  std::string where() const { return env.master_addr + ":" + std::to_string(env.master_port); }
  std::string store_gone() const {
    return env.launcher_store ? "the rendezvous store of torchrun's agent at " + where() + " no longer answers (the launcher ended the job)"
                              : "rank 0 is gone (it hosts the rendezvous store at " + where() + ", which no longer answers)";
  }
  std::string key(const std::string& kind, int rank) const { return env.key_prefix + kind + "/" + std::to_string(rank); }
  // The ranks that have not set their `kind` key yet (join, a barrier).
  std::vector<int> ranks_without(const std::string& kind) {
    std::vector<int> missing;
    for (int r = 0; r < env.world_size; ++r)
      if (!store->check({key(kind, r)})) missing.push_back(r);
    return missing;
  }

  c10::intrusive_ptr<c10d::TCPStore> connect(bool server) const {
    c10d::TCPStoreOptions o;
    o.port = static_cast<std::uint16_t>(env.master_port);
    o.isServer = server;
    o.waitWorkers = false;  // the join below names the ranks that are missing
    o.timeout = timeout;
    try {
      return c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
    } catch (const c10::Error& e) {
      // LibTorch >= 2.4 asks for its libuv server by default; Debian's is built without libuv. The
      // plain-socket store speaks the same protocol.
      if (std::string(e.what_without_backtrace()).find("libuv") == std::string::npos || !without_libuv(o)) throw;
      return c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
    }
  }

  void start_heartbeat() {
    store->set(key("hb", env.rank), std::vector<uint8_t>{'0'});
    heartbeat = std::thread([this] {
      c10::intrusive_ptr<c10d::TCPStore> own;
      try {
        own = connect(false);
      } catch (const std::exception& e) {
        spdlog::debug("heartbeat: cannot connect to {}: {}", where(), error_text(e));
        store_lost = true;
        return;
      }
      int64_t beat = 0;
      std::unique_lock<std::mutex> lock(mutex);
      while (!stop) {
        lock.unlock();
        try {
          const std::string v = std::to_string(++beat);
          own->set(key("hb", env.rank), std::vector<uint8_t>(v.begin(), v.end()));
        } catch (const std::exception&) {
          store_lost = true;  // rank 0 (the store) is gone; the main thread reports it
          return;
        }
        lock.lock();
        wake.wait_for(lock, kHeartbeatEvery, [this] { return stop; });
      }
    });
  }

  void stop_heartbeat() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
    }
    wake.notify_all();
    if (heartbeat.joinable()) heartbeat.join();
  }

  int64_t beat_of(int rank) {
    const auto v = store->get(key("hb", rank));
    return std::strtoll(std::string(v.begin(), v.end()).c_str(), nullptr, 10);
  }

  // "rank 1 failed: <its message>" for every rank that said so, or "".
  std::string reported_failures() {
    std::string out;
    for (int r = 0; r < env.world_size; ++r) {
      if (r == env.rank || !store->check({key("failed", r)})) continue;
      const auto v = store->get(key("failed", r));
      out += (out.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + " failed: " + std::string(v.begin(), v.end());
    }
    return out;
  }

  // Who is gone: ranks that reported a failure, or whose heartbeat stands still over a window.
  std::string diagnose() {
    try {
      std::map<int, int64_t> before;
      for (int r = 0; r < env.world_size; ++r)
        if (r != env.rank) before[r] = beat_of(r);
      std::this_thread::sleep_for(kDiagnoseWindow);
      const std::string reported = reported_failures();
      if (!reported.empty()) return reported;
      std::vector<int> silent;
      for (const auto& [r, b] : before)
        if (beat_of(r) == b) silent.push_back(r);
      if (!silent.empty())
        return fmt::format("{} stopped (no heartbeat for {:.1f} s: the process died or its machine is unreachable)", ranks_text(silent),
                           std::chrono::duration<double>(kDiagnoseWindow).count());
      return "every rank still has a heartbeat: the operation timed out or the network between the ranks failed";
    } catch (const std::exception&) {
      return store_gone();
    }
  }
};

ProcessGroup::ProcessGroup(const LaunchEnv& env, std::string backend) : env_(env), backend_(std::move(backend)) {}

ProcessGroup::~ProcessGroup() {
  if (!impl_) return;
  impl_->stop_heartbeat();
  // Rank 0 hosts the store: on a failure it stays a moment, so that the others can still read why.
  if (impl_->failed && is_main() && !env_.launcher_store && !impl_->store_lost) {
    const auto until = Clock::now() + std::chrono::seconds(3);
    while (Clock::now() < until) {
      bool all = true;
      try {
        for (int r = 1; r < world_size() && all; ++r)
          all = impl_->store->check({impl_->key("failed", r)}) || impl_->store->check({impl_->key("left", r)});
      } catch (const std::exception&) {
        break;
      }
      if (all) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

std::shared_ptr<ProcessGroup> ProcessGroup::create(const LaunchEnv& env, const DistributedConfig& config, bool device_is_cuda) {
  if (!env.distributed()) return std::shared_ptr<ProcessGroup>(new ProcessGroup(env, "none"));
  std::string backend = config.backend == "auto" ? (device_is_cuda ? "nccl" : "gloo") : config.backend;
  if (backend == "nccl" && !device_is_cuda)
    throw InputError("distributed.backend: nccl needs a CUDA device, and this run is on the CPU; use backend gloo (or auto)");
#if !ANOMALYSD_WITH_NCCL
  if (backend == "nccl" && config.backend == "auto") backend = "gloo";  // CUDA tensors over Gloo: slower, but works
  if (backend == "nccl")
    throw InputError("distributed.backend: nccl is not in this LibTorch build (" + distributed_support() + "); use gloo");
#endif
#if !ANOMALYSD_WITH_GLOO
  if (backend == "gloo") throw InputError("distributed.backend: gloo is not in this LibTorch build (" + distributed_support() + ")");
#endif
  std::shared_ptr<ProcessGroup> pg(new ProcessGroup(env, backend));
  pg->impl_ = std::make_unique<Impl>();
  Impl& im = *pg->impl_;
  im.env = env;
  im.timeout = std::chrono::milliseconds(static_cast<int64_t>(config.timeout_s * 1000));
  const std::string me = "rank " + std::to_string(env.rank) + "/" + std::to_string(env.world_size);

  // 1. the store: rank 0 serves it, every rank connects (retrying until the timeout)
  try {
    im.store = im.connect(env.rank == 0 && !env.launcher_store);
  } catch (const std::exception& e) {
    throw DistributedError(me + (env.rank == 0 && !env.launcher_store ? ": cannot open the rendezvous store on port " + std::to_string(env.master_port) +
                                                     " (is another job using it? choose another MASTER_PORT): "
                                               : ": cannot reach the rendezvous store at " + im.where() + " within " +
                                                     std::to_string(static_cast<int64_t>(config.timeout_s)) + " s: ") +
                           error_text(e));
  }
  // 2. join: every rank announces itself and its world size; those missing after the timeout are named
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  const std::string id = std::to_string(env.world_size) + " " + host + " " + std::to_string(getpid());
  try {
    im.start_heartbeat();
    im.store->set(im.key("join", env.rank), std::vector<uint8_t>(id.begin(), id.end()));
    const auto until = Clock::now() + im.timeout;
    for (;;) {
      const std::vector<int> missing = im.ranks_without("join");
      if (missing.empty()) break;
      if (Clock::now() > until)
        throw DistributedError(me + ": " + ranks_text(missing) + " did not join within " + std::to_string(static_cast<int64_t>(config.timeout_s)) +
                               " s (store " + im.where() + ")");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (int r = 0; r < env.world_size; ++r) {
      const auto v = im.store->get(im.key("join", r));
      const std::string other(v.begin(), v.end());
      const int their_world = std::atoi(other.c_str());
      if (their_world != env.world_size)
        throw DistributedError(me + ": rank " + std::to_string(r) + " (" + other.substr(other.find(' ') + 1) + ") was started with world size " +
                               std::to_string(their_world) + ", this one with " + std::to_string(env.world_size));
    }
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    throw DistributedError(me + ": the rendezvous at " + im.where() + " failed: " + error_text(e));
  }
  // 3. the collectives' backend, on its own key space of the store
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>(env.key_prefix + backend, im.store);
  try {
#if ANOMALYSD_WITH_GLOO
    if (backend == "gloo") {
      auto options = c10d::ProcessGroupGloo::Options::create(im.timeout);
      // Loopback jobs stay on loopback; otherwise GLOO_SOCKET_IFNAME, or the interface of this host's name.
      const std::string& a = env.master_addr;
      if (const char* ifname = env_value("GLOO_SOCKET_IFNAME"))
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      else if (a == "localhost" || a.rfind("127.", 0) == 0)
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      im.gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, env.rank, env.world_size, options);
    }
#endif
#if ANOMALYSD_WITH_NCCL
    if (backend == "nccl") {
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = im.timeout;
      im.nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, env.rank, env.world_size, options);
    }
#endif
  } catch (const std::exception& e) {
    throw DistributedError(me + ": cannot form the " + backend + " process group: " + error_text(e));
  }
  // Every rank's lines carry its rank; only rank 0 reports progress (the others: warnings and errors).
  spdlog::set_pattern("[%H:%M:%S.%e] [rank " + std::to_string(env.rank) + "] [%^%l%$] %v");
  spdlog::info("rank {}/{} (local {}), backend {}, master {} ({})", env.rank, env.world_size, env.local_rank, backend, im.where(), env.launcher);
  if (env.rank != 0 && spdlog::get_level() == spdlog::level::info) spdlog::set_level(spdlog::level::warn);
  return pg;
}

void ProcessGroup::fail(const std::string& what, const std::string& cause) {
  const std::string who = impl_->diagnose();
  const std::string message = "rank " + std::to_string(rank()) + ": " + what + " failed: " + who + " [" + cause + "]";
  report_failure(message);
  throw DistributedError(message);
}

void ProcessGroup::report_failure(const std::string& message) noexcept {
  if (!impl_ || impl_->failed) return;
  impl_->failed = true;
  try {
    if (!impl_->store_lost) impl_->store->set(impl_->key("failed", rank()), std::vector<uint8_t>(message.begin(), message.end()));
  } catch (...) {
  }
}

namespace {

template <typename Run>
void for_each_bucket(std::vector<at::Tensor>& tensors, int64_t bucket_bytes, Run&& run) {
  // Buckets hold one dtype and device: group first, keeping each group's order.
  std::map<std::string, std::vector<std::size_t>> groups;
  for (std::size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].defined()) groups[std::string(c10::toString(tensors[i].scalar_type())) + "@" + tensors[i].device().str()].push_back(i);
  for (const auto& [name, indices] : groups) {
    std::vector<at::Tensor> group;
    for (std::size_t i : indices) group.push_back(tensors[i]);
    for (const auto& bucket : plan_buckets(group, bucket_bytes)) {
      std::vector<at::Tensor> parts;
      for (std::size_t j : bucket) parts.push_back(group[j]);
      if (parts.size() == 1 && parts[0].is_contiguous()) {
        std::vector<at::Tensor> one{parts[0]};
        run(one);  // in place
        continue;
      }
      std::vector<at::Tensor> flat_parts;
      for (const auto& p : parts) flat_parts.push_back(p.reshape({-1}));
      std::vector<at::Tensor> flat{torch::cat(flat_parts)};
      run(flat);
      int64_t offset = 0;
      for (auto& p : parts) {
        p.copy_(flat[0].narrow(0, offset, p.numel()).view(p.sizes()));
        offset += p.numel();
      }
    }
  }
}

}  // namespace

// Runs one collective on the group's backend and waits for it; a failure names the rank(s) gone.
template <typename Collective>
void ProcessGroup::run_collective(const std::string& what, Collective&& collective) {
  try {
    c10::intrusive_ptr<c10d::Work> work;
#if ANOMALYSD_WITH_GLOO
    if (impl_->gloo) work = collective(*impl_->gloo);
#endif
#if ANOMALYSD_WITH_NCCL
    if (impl_->nccl) work = collective(*impl_->nccl);
#endif
    work->wait();
  } catch (const std::exception& e) {
    fail(what, error_text(e));
  }
}

void ProcessGroup::all_reduce_sum(std::vector<at::Tensor>& tensors, const std::string& what, int64_t bucket_bytes) {
  if (!active()) return;
  torch::NoGradGuard no_grad;
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  for_each_bucket(tensors, bucket_bytes, [&](std::vector<at::Tensor>& bucket) {
    run_collective(what + " (all-reduce)", [&](auto& backend) { return backend.allreduce(bucket, o); });
  });
}

void ProcessGroup::broadcast(std::vector<at::Tensor>& tensors, int root, const std::string& what, int64_t bucket_bytes) {
  if (!active()) return;
  torch::NoGradGuard no_grad;
  c10d::BroadcastOptions o;
  o.rootRank = root;
  for_each_bucket(tensors, bucket_bytes, [&](std::vector<at::Tensor>& bucket) {
    run_collective(what + " (broadcast)", [&](auto& backend) { return backend.broadcast(bucket, o); });
  });
}

std::pair<double, double> ProcessGroup::min_max(double value, const std::string& what) {
  if (!active()) return {value, value};
  const bool cuda = backend_ == "nccl";
  const auto options = torch::TensorOptions().dtype(torch::kDouble).device(cuda ? torch::Device(torch::kCUDA, local_rank()) : torch::kCPU);
  double out[2] = {value, value};
  for (int k = 0; k < 2; ++k) {
    std::vector<at::Tensor> t{torch::full({1}, value, options)};
    c10d::AllreduceOptions o;
    o.reduceOp = k == 0 ? c10d::ReduceOp::MIN : c10d::ReduceOp::MAX;
    run_collective(what, [&](auto& backend) { return backend.allreduce(t, o); });
    out[k] = t[0].cpu().item<double>();
  }
  return {out[0], out[1]};
}

// Waits until `missing()` is empty. A missing rank may take its time (rank 0 writing a checkpoint,
// a slower shard) as long as its heartbeat goes on; a rank that reported a failure, or stays silent
// for the timeout, ends the wait with a DistributedError naming it.
void ProcessGroup::wait_for(const std::string& what, const std::function<std::vector<int>()>& missing_ranks) {
  Impl& im = *impl_;
  std::map<int, std::pair<int64_t, Clock::time_point>> beats;  // rank -> last heartbeat seen, and when it changed
  try {
    const auto start = Clock::now();
    auto last_note = start;
    for (auto pause = std::chrono::milliseconds(10);; pause = std::min(pause * 2, std::chrono::milliseconds(250))) {
      const std::vector<int> missing = missing_ranks();
      if (missing.empty()) return;
      const std::string reported = im.reported_failures();
      if (!reported.empty()) {
        // The missing ranks may have arrived between the two reads and failed right after: the wait
        // itself completed, and the failure is named at the next one.
        if (missing_ranks().empty()) return;
        const std::string message = "rank " + std::to_string(rank()) + ": " + what + " failed: " + reported;
        report_failure(message);
        throw DistributedError(message);
      }
      const auto now = Clock::now();
      std::vector<int> silent;
      for (int r : missing) {
        const int64_t b = im.beat_of(r);
        auto it = beats.find(r);
        if (it == beats.end() || it->second.first != b)
          beats[r] = {b, now};
        else if (now - it->second.second > im.timeout)
          silent.push_back(r);
      }
      if (!silent.empty()) {
        const std::string message = "rank " + std::to_string(rank()) + ": " + what + " failed: " + ranks_text(silent) +
                                    " stopped (no heartbeat for " + std::to_string(static_cast<int64_t>(im.timeout.count() / 1000)) +
                                    " s, distributed.timeout_s)";
        report_failure(message);
        throw DistributedError(message);
      }
      if (now - last_note > std::chrono::seconds(60)) {
        spdlog::info("{}: waiting for {} (alive) for {:.0f} s", what, ranks_text(missing), std::chrono::duration<double>(now - start).count());
        last_note = now;
      }
      std::this_thread::sleep_for(pause);
    }
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    const std::string message = "rank " + std::to_string(rank()) + ": " + what + " failed: " + im.store_gone() + " [" + error_text(e) + "]";
    report_failure(message);
    throw DistributedError(message);
  }
}

void ProcessGroup::barrier(const std::string& name) {
  if (!active()) return;
  const std::string key = "barrier/" + name;
  try {
    impl_->store->set(impl_->key(key, rank()), std::vector<uint8_t>{'1'});
  } catch (const std::exception& e) {
    fail("barrier '" + name + "'", error_text(e));
  }
  wait_for("barrier '" + name + "'", [&] { return impl_->ranks_without(key); });
}

std::string ProcessGroup::share(const std::string& name, const std::string& value) {
  if (!active()) return value;
  const std::string key = env_.key_prefix + "share/" + name;
  if (is_main()) {
    try {
      impl_->store->set(key, std::vector<uint8_t>(value.begin(), value.end()));
    } catch (const std::exception& e) {
      fail("sharing '" + name + "'", error_text(e));
    }
    return value;
  }
  wait_for("receiving '" + name + "' from rank 0", [&] { return impl_->store->check({key}) ? std::vector<int>{} : std::vector<int>{0}; });
  const auto v = impl_->store->get(key);
  return std::string(v.begin(), v.end());
}

void ProcessGroup::finish() {
  if (!active() || impl_->finished) return;
  barrier("finish");
  Impl& im = *impl_;
  im.finished = true;
  im.stop_heartbeat();
  try {
    if (!is_main()) {
      im.store->set(im.key("left", rank()), std::vector<uint8_t>{'1'});
      return;
    }
    // Every other rank only sets its key after the barrier: a short wait, bounded all the same.
    const auto until = Clock::now() + im.timeout;
    for (int r = 1; r < world_size(); ++r)
      while (!im.store->check({im.key("left", r)})) {
        if (Clock::now() > until) throw DistributedError("rank 0: rank " + std::to_string(r) + " passed the last barrier but never left");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    throw DistributedError("rank " + std::to_string(rank()) + ": leaving the group failed: " + error_text(e));
  }
}

#else  // no c10d in this LibTorch: one process only

struct ProcessGroup::Impl {};
ProcessGroup::ProcessGroup(const LaunchEnv& env, std::string backend) : env_(env), backend_(std::move(backend)) {}
ProcessGroup::~ProcessGroup() = default;

std::shared_ptr<ProcessGroup> ProcessGroup::create(const LaunchEnv& env, const DistributedConfig&, bool) {
  if (env.distributed())
    throw InputError("environment: world size " + std::to_string(env.world_size) + " (" + env.launcher +
                     "), but this LibTorch has no c10d (distributed) headers; run one process, or build against a LibTorch with them");
  return std::shared_ptr<ProcessGroup>(new ProcessGroup(env, "none"));
}
void ProcessGroup::fail(const std::string& what, const std::string& cause) { throw DistributedError(what + ": " + cause); }
void ProcessGroup::report_failure(const std::string&) noexcept {}
void ProcessGroup::all_reduce_sum(std::vector<at::Tensor>&, const std::string&, int64_t) {}
void ProcessGroup::broadcast(std::vector<at::Tensor>&, int, const std::string&, int64_t) {}
std::pair<double, double> ProcessGroup::min_max(double value, const std::string&) { return {value, value}; }
std::string ProcessGroup::share(const std::string&, const std::string& value) { return value; }
void ProcessGroup::barrier(const std::string&) {}
void ProcessGroup::finish() {}

#endif

}  // namespace anomalysd

// The CPU speed paths, each tested explicitly against a plain reference: the fused attention
// kernel (online softmax over key blocks, causal, strided and broadcast K/V, bf16), the chunked
// kernel, the oneDNN and BLAS GEMMs, the cached cross-attention projections, the GEMM choice and
// its cache file, and the per-operator profiler behind `bench --profile`.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/models/attention_kernels.h"
#include "anomalysd/models/blocks.h"
#include "anomalysd/core/runtime.h"
#include "anomalysd/models/cpu_bfloat16.h"
#include "anomalysd/models/cpu_gemm.h"
#include "anomalysd/models/unet.h"
#include "models/parity.h"
#include "test_support.h"

namespace anomalysd {
namespace {

using test::close_to_reference;

// softmax(q kᵀ/√D [+ causal mask]) v in float64: the reference every kernel is held to.
torch::Tensor naive_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, bool causal = false) {
  const torch::Tensor qd = q.to(torch::kDouble), kd = k.to(torch::kDouble), vd = v.to(torch::kDouble);
  torch::Tensor s = torch::matmul(qd, kd.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(-1)));
  if (causal) s = s.masked_fill(torch::ones({q.size(2), k.size(2)}).triu(1).to(torch::kBool), -1e300);
  return torch::softmax(s, -1).matmul(vd);
}

// Restores the process-wide kernel settings a test changes.
struct KernelSettings {
  ~KernelSettings() {
    set_attention_kernel(AttentionKernel::Auto);
    set_fused_attention_blocks({});
    use_cpu_gemm(GemmBackend::OneDnn);
  }
};

TEST(FusedAttention, MatchesReferenceOverKeyBlocksAndRaggedEdges) {
  KernelSettings restore;
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  const torch::Tensor q = torch::randn({2, 3, 77, 16}) * 3, k = torch::randn({2, 3, 45, 16}) * 3, v = torch::randn({2, 3, 45, 16});
  const torch::Tensor ref = naive_attention(q, k, v);
  // One block (the default sizes), then blocks that leave ragged edges on both axes: the online
  // rescaling runs 2–6 times per row block.
  for (const auto gemm : {GemmBackend::Blas, GemmBackend::OneDnn}) {
    use_cpu_gemm(gemm);
    for (const auto& blocks : {FusedAttentionBlocks{}, FusedAttentionBlocks{16, 8}, FusedAttentionBlocks{5, 16}, FusedAttentionBlocks{77, 44}}) {
      set_fused_attention_blocks(blocks);
      const torch::Tensor out = attention_fused_cpu(q, k, v);
      EXPECT_TRUE(close_to_reference(out, ref,
                                     "fused (" + gemm_backend_name(gemm) + ") " + std::to_string(blocks.query_rows) + "x" +
                                         std::to_string(blocks.key_cols),
                                     1e-5));
      EXPECT_EQ(out.sizes(), q.sizes());
    }
    // Large logits: the running maximum must keep exp() finite (a plain exp would overflow);
    // float32 scores of ~1e3 carry ~1e-4 of rounding, hence the looser bound.
    set_fused_attention_blocks({8, 8});
    const torch::Tensor big = attention_fused_cpu(q * 40, k, v);
    EXPECT_TRUE(torch::isfinite(big).all().item<bool>());
    EXPECT_TRUE(close_to_reference(big, naive_attention(q * 40, k, v), "fused, logits ~1e3 (" + gemm_backend_name(gemm) + ")", 2e-4));
  }
}

TEST(FusedAttention, CausalStridedBroadcastAndBfloat16) {
  KernelSettings restore;
  torch::NoGradGuard no_grad;
  torch::manual_seed(1);
  const torch::Tensor q = torch::randn({2, 4, 33, 8}), k = torch::randn({2, 4, 33, 8}), v = torch::randn({2, 4, 33, 8});
  for (const auto gemm : {GemmBackend::Blas, GemmBackend::OneDnn})
    for (const auto& blocks : {FusedAttentionBlocks{}, FusedAttentionBlocks{7, 5}}) {
      use_cpu_gemm(gemm);
      set_fused_attention_blocks(blocks);
      EXPECT_TRUE(close_to_reference(attention_fused_cpu(q, k, v, /*causal=*/true), naive_attention(q, k, v, true),
                                     "causal (" + gemm_backend_name(gemm) + ")", 1e-5));
    }
  // q as the UNet makes it (a transposed view of [B, L, heads·D]); k/v one text row expanded over B.
  const torch::Tensor q_view = torch::randn({2, 50, 4 * 8}).view({2, 50, 4, 8}).transpose(1, 2);
  const torch::Tensor k_row = torch::randn({1, 4, 12, 8}), v_row = torch::randn({1, 4, 12, 8});
  const torch::Tensor kb = k_row.expand({2, -1, -1, -1}), vb = v_row.expand({2, -1, -1, -1});
  ASSERT_EQ(kb.stride(0), 0);
  set_fused_attention_blocks({16, 8});
  for (const auto gemm : {GemmBackend::Blas, GemmBackend::OneDnn}) {
    use_cpu_gemm(gemm);
    EXPECT_TRUE(close_to_reference(attention_fused_cpu(q_view, kb, vb), naive_attention(q_view, kb, vb),
                                   "strided q, broadcast k/v (" + gemm_backend_name(gemm) + ")", 1e-5));
  }
  // The result's transpose is the [B, L, heads·D] layout the out-projection reads: no copy.
  EXPECT_TRUE(attention_fused_cpu(q_view, kb, vb).transpose(1, 2).is_contiguous());
  // bf16 in, bf16 out, computed in float32 (diffusers' upcast)
  const torch::Tensor out16 = attention_fused_cpu(q.to(torch::kBFloat16), k.to(torch::kBFloat16), v.to(torch::kBFloat16));
  EXPECT_EQ(out16.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(close_to_reference(out16, naive_attention(q.to(torch::kBFloat16), k.to(torch::kBFloat16), v.to(torch::kBFloat16)),
                                 "bf16", 1e-2));
  EXPECT_THROW(attention_fused_cpu(q, k.narrow(3, 0, 4), v), ShapeError);
}

TEST(AttentionKernels, DispatchEachKernelAndAutogradFallsBackToChunked) {
  KernelSettings restore;
  torch::manual_seed(2);
  const torch::Tensor q = torch::randn({1, 2, 40, 8}), k = torch::randn({1, 2, 40, 8}), v = torch::randn({1, 2, 40, 8});
  const torch::Tensor ref = naive_attention(q, k, v);
  for (const auto kernel : {AttentionKernel::Auto, AttentionKernel::Fused, AttentionKernel::Chunked}) {
    set_attention_kernel(kernel);
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(close_to_reference(anomalysd::scaled_dot_product_attention(q, k, v), ref, attention_kernel_name(kernel), 1e-5));
    EXPECT_TRUE(close_to_reference(anomalysd::scaled_dot_product_attention(q, k, v, true, true), naive_attention(q, k, v, true),
                                   attention_kernel_name(kernel) + " causal", 1e-5));
  }
  if (!sdpa_available()) {
    EXPECT_THROW(set_attention_kernel(AttentionKernel::Sdpa), InputError);
  }
  EXPECT_THROW(parse_attention_kernel("flash"), InputError);
  // Under autograd even a forced fused kernel yields a differentiable result (the chunked one).
  set_attention_kernel(AttentionKernel::Fused);
  const torch::Tensor qg = q.clone().requires_grad_(true);
  const torch::Tensor out = anomalysd::scaled_dot_product_attention(qg, k, v);
  ASSERT_TRUE(out.requires_grad());
  out.sum().backward();
  EXPECT_TRUE(qg.grad().defined());
  EXPECT_GT(qg.grad().abs().sum().item<double>(), 0.0);
}

// A UNet small enough to run every path in a second: SD2-style (linear projections) with
// attention at two levels.
UNetConfig small_unet_config() {
  UNetConfig c;
  c.in_channels = 9;
  c.out_channels = 4;
  c.block_out_channels = {32, 64};
  c.down_block_types = {"CrossAttnDownBlock2D", "DownBlock2D"};
  c.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D"};
  c.layers_per_block = {1, 1};
  c.attention_heads = {2, 4};
  c.cross_attention_dim = 24;
  c.norm_num_groups = 8;
  c.use_linear_projection = true;
  c.sample_size = 16;
  return c;
}

TEST(CpuPaths, UNetAgreesOnEveryGemmAndAttentionPath) {
  KernelSettings restore;
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  UNet2DConditionModel unet(small_unet_config());
  unet->eval();
  const torch::Tensor sample = torch::randn({2, 9, 16, 16}), t = torch::tensor(500), ctx = torch::randn({1, 7, 24}).expand({2, -1, -1});
  // The reference path: LibTorch's own Linear (BLAS) and the materialising attention.
  use_cpu_gemm(GemmBackend::Blas);
  set_attention_kernel(AttentionKernel::Chunked);
  const torch::Tensor ref = unet->forward(sample, t, ctx);
  for (const auto gemm : {GemmBackend::Blas, GemmBackend::OneDnn})
    for (const auto kernel : {AttentionKernel::Fused, AttentionKernel::Chunked}) {
      use_cpu_gemm(gemm);
      set_attention_kernel(kernel);
      set_fused_attention_blocks({32, 32});  // several key blocks per row block at 16×16 (256 tokens)
      const torch::Tensor out = unet->forward(sample, t, ctx);
      EXPECT_TRUE(close_to_reference(out, ref, gemm_backend_name(gemm) + " + " + attention_kernel_name(kernel), 1e-5));
    }
}

// GroupNorm in bfloat16 on the CPU: LibTorch 1.13's kernel for channels-last input accumulated its
// statistics in bfloat16 and was off by whole units from 1,024 positions per group on (measured
// 4.3–6.5 at 32² and 64² here), which put noise over every x̂ the demo's bfloat16 VAE decoded. Our
// GroupNorm keeps the statistics float32, so only bfloat16's rounding of input and output remains.
TEST(CpuPaths, GroupNormInBfloat16IsRightOnChannelsLastInputAtEverySize) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  for (const int64_t side : {8, 32, 64}) {
    GroupNorm norm(torch::nn::GroupNormOptions(8, 64).eps(1e-6));
    norm->weight.uniform_(0.5, 1.5);
    norm->bias.uniform_(-0.5, 0.5);
    const torch::Tensor x = torch::randn({1, 64, side, side}) + 3.0;  // a mean the statistics must resolve
    const torch::Tensor reference = norm(x);
    norm->to(torch::kBFloat16);
    const torch::Tensor half = norm(x.to(torch::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_EQ(half.scalar_type(), torch::kBFloat16);
    const double error = (half.to(torch::kFloat) - reference).abs().max().item<double>();
    // bfloat16 rounds x (up to ~7: half an ulp 2^-6) and the output (up to ~6): ≈ 0.05 at worst
    // together; the 1.13 kernel was off by 4–6.
    EXPECT_LT(error, 0.1) << side << "x" << side;
  }
}

TEST(CpuPaths, CachedTextProjectionsAreUsedExactAndInvalidatedByWrites) {
  KernelSettings restore;
  torch::NoGradGuard no_grad;
  torch::manual_seed(4);
  UNet2DConditionModel unet(small_unet_config());
  unet->eval();
  const torch::Tensor sample = torch::randn({3, 9, 16, 16}), t = torch::tensor(300);
  torch::Tensor row = torch::randn({1, 7, 24});
  const auto forward = [&](const torch::Tensor& r) { return unet->forward(sample, t, r.expand({3, -1, -1})); };
  // Changing the cross-attention key weights after caching tells cached projections (made with the
  // old weights) from fresh ones.
  const auto scale_cross_keys = [&](double f) {
    for (auto& p : unet->named_parameters())
      if (p.key().find("attn2.to_k.weight") != std::string::npos) p.value().mul_(f);
  };
  const torch::Tensor plain = forward(row);
  {
    const TextProjectionCache cache(*unet, {row});
    EXPECT_TRUE(torch::equal(forward(row), plain));  // exact: the same projections, made once
    scale_cross_keys(3.0);
    EXPECT_TRUE(torch::equal(forward(row), plain)) << "the cached K was not used";
    EXPECT_FALSE(torch::equal(forward(row.clone()), plain)) << "another tensor must not be served from the cache";
    row.mul_(1.0);  // an in-place write (same values) invalidates the entry
    EXPECT_FALSE(torch::equal(forward(row), plain)) << "a written tensor must not be served from the cache";
  }
  // Cleared at the end of the scope: the row gives the fresh result again.
  EXPECT_TRUE(torch::equal(forward(row), forward(row.clone())));
  EXPECT_FALSE(torch::equal(forward(row), plain));
  scale_cross_keys(1.0 / 3.0);
}

// Points the GEMM cache at a scratch folder for the test's lifetime.
struct ScratchCache {
  test::TempDir dir;
  std::string previous;
  bool had_previous;
  ScratchCache() {
    const char* p = std::getenv("ANOMALYSD_CACHE_DIR");
    had_previous = p != nullptr;
    if (p) previous = p;
    ::setenv("ANOMALYSD_CACHE_DIR", dir.path().c_str(), 1);
  }
  ~ScratchCache() {
    if (had_previous)
      ::setenv("ANOMALYSD_CACHE_DIR", previous.c_str(), 1);
    else
      ::unsetenv("ANOMALYSD_CACHE_DIR");
  }
};

TEST(GemmChoice, ForcedMeasuredCachedAndCorruptCache) {
  KernelSettings restore;
  ScratchCache scratch;
  const std::string path = gemm_cache_path();
  EXPECT_EQ(path, (scratch.dir.path() / "cpu-gemm.json").string());
  EXPECT_EQ(choose_cpu_gemm("blas").backend, GemmBackend::Blas);
  if (at::hasMKLDNN()) {
    EXPECT_EQ(choose_cpu_gemm("onednn").backend, GemmBackend::OneDnn);
  }
  EXPECT_THROW(choose_cpu_gemm("fastest"), InputError);
  EXPECT_FALSE(std::filesystem::exists(path));  // forced choices measure nothing

  const GemmChoice first = choose_cpu_gemm("auto");
  if (!at::hasMKLDNN()) GTEST_SKIP() << "no oneDNN in this LibTorch: auto is always BLAS";
  EXPECT_GT(first.measured.blas_gflops, 0.1);
  EXPECT_GT(first.measured.onednn_gflops, 0.1);
  EXPECT_EQ(first.backend, first.measured.onednn_gflops > 1.15 * first.measured.blas_gflops ? GemmBackend::OneDnn : GemmBackend::Blas);
  ASSERT_TRUE(std::filesystem::exists(path));
  const nlohmann::json cache = read_json_file(path);
  ASSERT_EQ(cache.size(), 1u);
  const std::string stored = cache.begin().value().at("backend");
  EXPECT_EQ(stored, first.backend == GemmBackend::OneDnn ? "onednn" : "blas");

  // The cached entry decides from now on, even against a new measurement: flip it by hand and
  // every later `auto` follows the file (two runs on one machine agree).
  nlohmann::json flipped = cache;
  flipped.begin().value()["backend"] = stored == "onednn" ? "blas" : "onednn";
  test::write_bytes(path, flipped.dump());
  for (int i = 0; i < 2; ++i) {
    const GemmChoice again = choose_cpu_gemm("auto");
    EXPECT_EQ(again.backend, stored == "onednn" ? GemmBackend::Blas : GemmBackend::OneDnn);
    EXPECT_NE(again.reason.find("cached in"), std::string::npos) << again.reason;
  }
  // Another thread count reads the same entry: the thread count changes speed, never the bits,
  // so a run resumed with another one computes what the first computed.
  const int threads = at::get_num_threads();
  at::set_num_threads(threads == 1 ? 2 : 1);
  const GemmChoice other_threads = choose_cpu_gemm("auto");
  at::set_num_threads(threads);
  EXPECT_EQ(other_threads.backend, stored == "onednn" ? GemmBackend::Blas : GemmBackend::OneDnn);
  EXPECT_EQ(read_json_file(path).size(), 1u);
  // A corrupt cache is measured again and rewritten, not an error.
  test::write_bytes(path, "{not json");
  const GemmChoice remeasured = choose_cpu_gemm("auto");
  EXPECT_NE(remeasured.reason.find("measured now"), std::string::npos) << remeasured.reason;
  EXPECT_EQ(read_json_file(path).size(), 1u);
}

// Processes that start together on a machine with no cache (CI's first tests, the ranks of a
// job) must make one choice: it is part of every run's identity, and a resume that made another
// is refused. One measures under the cache's lock; the others wait and read its entry.
TEST(GemmChoice, ConcurrentFirstRunsMeasureOnceAndAgree) {
  if (!at::hasMKLDNN()) GTEST_SKIP() << "no oneDNN in this LibTorch: auto is always BLAS, nothing is measured";
  test::TempDir dir;
  const int processes = 4;
  std::string script;
  for (int i = 0; i < processes; ++i)
    script += "ANOMALYSD_CACHE_DIR='" + dir.path().string() + "' " + ANOMALYSD_CLI + " --version > '" +
              (dir.path() / ("out" + std::to_string(i))).string() + "' 2>&1 & ";
  ASSERT_EQ(std::system(("sh -c \"" + script + "wait\"").c_str()), 0);
  int measured = 0;
  std::set<std::string> backends;
  for (int i = 0; i < processes; ++i) {
    const std::string out = test::read_bytes((dir.path() / ("out" + std::to_string(i))).string());
    const auto line = out.find("CPU GEMM (cpu_gemm: auto): ");
    ASSERT_NE(line, std::string::npos) << out;
    const std::string rest = out.substr(line + 27, out.find('\n', line) - line - 27);
    backends.insert(rest.substr(0, rest.find(' ')));
    measured += rest.find("measured now") != std::string::npos;
  }
  EXPECT_EQ(measured, 1) << "each process that measures may choose differently on a busy machine";
  EXPECT_EQ(backends.size(), 1u);
  EXPECT_EQ(read_json_file((dir.path() / "cpu-gemm.json").string()).size(), 1u);
}

}  // namespace
}  // namespace anomalysd

namespace anomalysd {
namespace {

namespace fs = std::filesystem;

TEST(TestSetup, FixturesFolderFromTheEnvironmentWinsAndTheCacheIsTheBuildTrees) {
  const char* before = std::getenv("ANOMALYSD_FIXTURES");
  const std::string saved = before ? before : "";
  test::TempDir tmp;
  ::setenv("ANOMALYSD_FIXTURES", tmp.path().c_str(), 1);
  EXPECT_EQ(test::fixtures_dir(), tmp.path());
  // Set but missing: missing (skipped, or failed under CI), never the compiled-in default.
  ::setenv("ANOMALYSD_FIXTURES", (tmp.path() / "nope").c_str(), 1);
  EXPECT_EQ(test::fixtures_dir(), std::nullopt);
  if (before)
    ::setenv("ANOMALYSD_FIXTURES", saved.c_str(), 1);
  else
    ::unsetenv("ANOMALYSD_FIXTURES");
  // Hermetic: the GEMM-choice cache of every test process is in the build tree.
  EXPECT_EQ(fs::path(gemm_cache_path()).parent_path(), test::test_cache_dir());
  const char* home = std::getenv("HOME");
  if (home) EXPECT_EQ(gemm_cache_path().find(std::string(home) + "/.cache"), std::string::npos);
}

}  // namespace
}  // namespace anomalysd

namespace anomalysd {
namespace {

// `dtype: auto`'s rule, on every branch: CUDA float16; a CPU bfloat16 only with the instructions
// and a probe that says they pay (at most 0.8x float32's time); else float32, saying why.
TEST(AutoDtype, TheRuleOnEveryBranch) {
  EXPECT_EQ(decide_auto_dtype(true, "", nullptr).dtype, "float16");
  const AutoDtype no_flags = decide_auto_dtype(false, "", nullptr);
  EXPECT_EQ(no_flags.dtype, "float32");
  EXPECT_NE(no_flags.reason.find("without native bfloat16"), std::string::npos) << no_flags.reason;
  EXPECT_EQ(decide_auto_dtype(false, "avx512_bf16", nullptr).dtype, "float32");  // no oneDNN: nothing measured

  auto with = [](double f32, double bf16) {
    const Bfloat16Speed s{{f32, bf16}, "cached in x"};
    return decide_auto_dtype(false, "avx512_bf16", &s);
  };
  EXPECT_EQ(with(20, 10).dtype, "bfloat16");  // an AMD EPYC (Zen 4): the UNet at 0.48x
  EXPECT_EQ(with(20, 16).dtype, "bfloat16");
  const AutoDtype slow = with(20, 16.4);
  EXPECT_EQ(slow.dtype, "float32");
  EXPECT_NE(slow.reason.find("0.82x"), std::string::npos) << slow.reason;
  EXPECT_EQ(with(20, 31).dtype, "float32");  // an Intel Xeon with AVX512-BF16 and no AMX
  EXPECT_FALSE(bfloat16_pays({0, 0}));
  EXPECT_FALSE(bfloat16_pays({20, 0}));
}

// On this CPU `auto` follows the cached probe (measured once, so every run here resolves alike),
// and a run under `auto` shares the identity (numeric setup) of one naming the dtype it resolved to.
TEST(AutoDtype, FollowsTheCachedProbeAndSharesTheIdentityOfItsDtype) {
  KernelSettings restore;
  ScratchCache scratch;
  RuntimeConfig automatic;
  automatic.device = "cpu";
  automatic.dtype = "auto";
  auto named = [&](const std::string& dtype) {
    RuntimeConfig c = automatic;
    c.dtype = dtype;
    return c;
  };
  const std::string path = (scratch.dir.path() / "cpu-bfloat16.json").string();
  if (cpu_native_bf16().empty() || !at::hasMKLDNN()) {
    EXPECT_EQ(resolved_dtype(automatic), "float32");
    EXPECT_FALSE(std::filesystem::exists(path)) << "nothing to measure without bfloat16 instructions or oneDNN";
    GTEST_SKIP() << "this CPU has no bfloat16 instructions (or LibTorch no oneDNN): auto is float32 without a probe";
  }
  std::string why;
  const std::string first = resolved_dtype(automatic, &why);
  EXPECT_NE(why.find("measured now"), std::string::npos) << why;
  const nlohmann::json cache = read_json_file(path);
  ASSERT_EQ(cache.size(), 1u);
  const Bfloat16Measurement m{cache.begin().value().at("float32_ms"), cache.begin().value().at("bfloat16_ms")};
  EXPECT_GT(m.float32_ms, 0.01);
  EXPECT_GT(m.bfloat16_ms, 0.01);
  EXPECT_EQ(first, bfloat16_pays(m) ? "bfloat16" : "float32");

  auto cache_says = [&](double f32, double bf16) {
    nlohmann::json c = cache;
    c.begin().value() = {{"float32_ms", f32}, {"bfloat16_ms", bf16}};
    test::write_bytes(path, c.dump());
  };
  cache_says(10, 5);
  EXPECT_EQ(resolved_dtype(automatic, &why), "bfloat16");
  EXPECT_NE(why.find("cached in"), std::string::npos) << why;
  EXPECT_EQ(apply_runtime(automatic).dtype, c10::kBFloat16);
  const PipelinePrecision p = apply_runtime(automatic).precision;
  EXPECT_EQ(p.unet, c10::kBFloat16);
  EXPECT_EQ(p.latents, c10::kFloat);
  EXPECT_EQ(numeric_setup(automatic), numeric_setup(named("bfloat16")));
  EXPECT_EQ(cpu_bfloat16_caveat(), "");

  cache_says(10, 15);
  EXPECT_EQ(resolved_dtype(automatic), "float32");
  EXPECT_EQ(apply_runtime(automatic).dtype, c10::kFloat);
  EXPECT_TRUE(apply_runtime(automatic).precision.all_float32());
  EXPECT_EQ(numeric_setup(automatic), numeric_setup(named("float32")));
  EXPECT_NE(numeric_setup(automatic), numeric_setup(named("bfloat16")));
  // Naming bfloat16 where it does not pay runs it, with a warning that gives the figures.
  EXPECT_NE(cpu_bfloat16_caveat().find("1.50x"), std::string::npos) << cpu_bfloat16_caveat();
  EXPECT_EQ(apply_runtime(named("bfloat16")).dtype, c10::kBFloat16);

  test::write_bytes(path, "{not json");  // corrupt: measured again and rewritten, not an error
  EXPECT_EQ(resolved_dtype(automatic, &why), first);
  EXPECT_NE(why.find("measured now"), std::string::npos) << why;
  EXPECT_EQ(read_json_file(path).size(), 1u);
}

}  // namespace
}  // namespace anomalysd

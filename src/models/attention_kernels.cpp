#include "anomalysd/models/attention_kernels.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "anomalysd/io/errors.h"
#include "anomalysd/models/cpu_gemm.h"

namespace anomalysd {

namespace {
std::atomic<AttentionKernel> g_kernel{AttentionKernel::Auto};
std::atomic<int64_t> g_query_rows{0}, g_key_cols{0};

// Bytes of cache one worker may count on: its L2, or its share of the L3 if that is larger.
int64_t cache_bytes_per_worker() {
  static const int64_t bytes = [] {
    const long l2 = ::sysconf(_SC_LEVEL2_CACHE_SIZE), l3 = ::sysconf(_SC_LEVEL3_CACHE_SIZE);
    const int64_t workers = std::max(1, at::get_num_threads());
    const int64_t share = std::max<int64_t>(l2 > 0 ? l2 : 0, l3 > 0 ? l3 / workers : 0);
    return share > 0 ? share : int64_t(1) << 20;  // unknown: assume 1 MiB
  }();
  return bytes;
}
}  // namespace

bool sdpa_available() {
#if TORCH_VERSION_MAJOR >= 2
  return true;
#else
  return false;
#endif
}

AttentionKernel parse_attention_kernel(const std::string& name) {
  if (name == "auto") return AttentionKernel::Auto;
  if (name == "sdpa") return AttentionKernel::Sdpa;
  if (name == "fused") return AttentionKernel::Fused;
  if (name == "chunked") return AttentionKernel::Chunked;
  throw InputError("attention kernel '" + name + "' is not one of: auto, sdpa, fused, chunked");
}

std::string attention_kernel_name(AttentionKernel kernel) {
  switch (kernel) {
    case AttentionKernel::Auto: return "auto";
    case AttentionKernel::Sdpa: return "sdpa";
    case AttentionKernel::Fused: return "fused";
    case AttentionKernel::Chunked: return "chunked";
  }
  return "?";
}

void set_attention_kernel(AttentionKernel kernel) {
  if (kernel == AttentionKernel::Sdpa && !sdpa_available())
    throw InputError("attention kernel 'sdpa' needs LibTorch >= 2.0 (this is " + std::string(TORCH_VERSION) + "); use auto, fused or chunked");
  g_kernel = kernel;
}


void set_fused_attention_blocks(const FusedAttentionBlocks& blocks) {
  g_query_rows = std::max<int64_t>(0, blocks.query_rows);
  g_key_cols = std::max<int64_t>(0, blocks.key_cols);
}

FusedAttentionBlocks fused_attention_blocks() {
  FusedAttentionBlocks b{g_query_rows, g_key_cols};
  // Large blocks: every block costs a dozen operator calls, so fewer and larger ones win as long
  // as the score block stays in cache. Measured on SD2's 64² self-attention (4,096 tokens, 2 cores,
  // one layer): 64×1024 0.32 s, 256×1024 0.22 s, 256×4096 0.18–0.21 s, with either GEMM.
  // So 256 query rows, and key columns for a score block of at most 4 MiB and half the cache
  // one worker can count on.
  if (b.query_rows <= 0) b.query_rows = 256;
  if (b.key_cols <= 0) {
    const int64_t budget = std::min<int64_t>(int64_t(4) << 20, cache_bytes_per_worker() / 2);
    b.key_cols = std::clamp<int64_t>(budget / 4 / b.query_rows / 64 * 64, 256, 8192);
  }
  return b;
}

// ---------------------------------------------------------------------------------------------
at::Tensor attention_chunked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool upcast, bool causal) {
  const int64_t b = q.size(0), heads = q.size(1), lq = q.size(2), lk = k.size(2), d = q.size(3), bh = b * heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const auto score_dtype = upcast ? torch::kFloat : q.scalar_type();
  // One contiguous [B·heads, L, D] copy each, as diffusers' head_to_batch_dim.
  const torch::Tensor q3 = q.reshape({bh, lq, d}).to(score_dtype);
  const torch::Tensor k3 = k.reshape({bh, lk, d}).to(score_dtype);
  const torch::Tensor v3 = v.reshape({bh, lk, d});
  torch::Tensor out = torch::empty({bh, lq, d}, q.options());
  // Chunks of whole heads whose score matrices hold at most 32 Mi elements (128 MiB in fp32);
  // a single head larger than that is split by query rows.
  constexpr int64_t kMaxScoreElements = int64_t(32) << 20;
  const int64_t rows = std::clamp<int64_t>(kMaxScoreElements / std::max<int64_t>(1, lk), 1, lq);
  const int64_t heads_per_chunk = rows < lq ? 1 : std::clamp<int64_t>(kMaxScoreElements / (lq * lk), 1, bh);
  for (int64_t h0 = 0; h0 < bh; h0 += heads_per_chunk) {
    const int64_t nh = std::min(heads_per_chunk, bh - h0);
    const torch::Tensor kt = k3.narrow(0, h0, nh).transpose(1, 2);
    for (int64_t r0 = 0; r0 < lq; r0 += rows) {
      const int64_t nr = std::min(rows, lq - r0);
      const torch::Tensor qc = q3.narrow(0, h0, nh).narrow(1, r0, nr);
      torch::Tensor scores = torch::baddbmm(torch::empty({nh, nr, lk}, q3.options()), qc, kt, /*beta=*/0.0, /*alpha=*/scale);
      if (causal) {
        const auto row = torch::arange(r0, r0 + nr, q.options().dtype(torch::kLong)).unsqueeze(1);
        const auto col = torch::arange(lk, q.options().dtype(torch::kLong)).unsqueeze(0);
        scores.masked_fill_(col > row, -std::numeric_limits<float>::infinity());
      }
      const torch::Tensor probs = scores.softmax(-1).to(v.scalar_type());
      torch::Tensor target = out.narrow(0, h0, nh).narrow(1, r0, nr);
      if (nr == lq && !torch::GradMode::is_enabled())  // out= kernels have no autograd
        torch::bmm_out(target, probs, v3.narrow(0, h0, nh));
      else
        target.copy_(torch::bmm(probs, v3.narrow(0, h0, nh)));
    }
  }
  return out.view({b, heads, lq, d});
}

// ---------------------------------------------------------------------------------------------
// One (batch, head, query block) task: for each key block, scores S = (Q/√D) Kᵀ, then the online
// softmax update
//   m' = max(m, rowmax S);  P = exp(S − m');  l = l·exp(m − m') + rowsum P;  O = O·exp(m − m') + P V
// and finally O / l. The first block needs no rescaling; a causal mask skips key blocks past the
// last query row and masks the block that straddles the diagonal. The two GEMMs of a block run on
// the machine's CPU GEMM (cpu_gemm.h): the BLAS through at::mm, or oneDNN's inner product (which
// wants a oneDNN-layout input and a contiguous weight: K per head as is, V per head transposed).
at::Tensor attention_fused_cpu(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, bool causal) {
  RECORD_FUNCTION("anomalysd::attention_fused", std::vector<c10::IValue>());
  if (!q_in.device().is_cpu() || q_in.dim() != 4 || k_in.dim() != 4 || v_in.dim() != 4)
    throw ShapeError("attention_fused_cpu: q, k, v must be 4-D CPU tensors [B, heads, L, D]");
  const int64_t b = q_in.size(0), heads = q_in.size(1), lq = q_in.size(2), d = q_in.size(3), lk = k_in.size(2);
  if (k_in.size(0) != b || v_in.size(0) != b || k_in.size(1) != heads || v_in.size(1) != heads || k_in.size(3) != d ||
      v_in.size(2) != lk || v_in.size(3) != d)
    throw ShapeError("attention_fused_cpu: q, k, v shapes disagree");
  if (lq == 0 || lk == 0 || d == 0) return at::zeros(q_in.sizes(), q_in.options());
  at::NoGradGuard no_grad;
  const bool onednn = cpu_gemm() == GemmBackend::OneDnn && at::hasMKLDNN();
  // Float32 throughout (diffusers' upcast for bf16). The 1/√D scale is folded into Q in the one
  // pass that makes each head's rows contiguous; K is contiguous per head, V transposed for oneDNN.
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const auto as_float = [](const at::Tensor& t) { return t.scalar_type() == at::kFloat ? t : t.to(at::kFloat); };
  at::Tensor q = at::empty({b, heads, lq, d}, q_in.options().dtype(at::kFloat));  // contiguous
  at::mul_out(q, as_float(q_in), at::scalar_tensor(scale, q.options()));
  const at::Tensor k = as_float(k_in).contiguous();
  // oneDNN reads V through per-key-block transposed copies (below); the BLAS reads it per head.
  const at::Tensor v = onednn ? as_float(v_in) : as_float(v_in).contiguous();
  // The output buffer is [B, L, heads, D]: the transpose the out-projection needs is a view.
  at::Tensor out = at::empty({b, lq, heads, d}, q.options());
  const FusedAttentionBlocks blocks = fused_attention_blocks();
  const int64_t qb = std::min(blocks.query_rows, lq);
  const int64_t key_blocks = (lk + blocks.key_cols - 1) / blocks.key_cols;
  const int64_t kb = (lk + key_blocks - 1) / key_blocks;  // balanced: no thin last block
  const int64_t query_blocks = (lq + qb - 1) / qb, tasks = b * heads * query_blocks;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  // oneDNN's weight for P·V is Vᵀ of the key block, contiguous: made once per key block here,
  // not once per query block.
  std::vector<at::Tensor> v_blocks;  // [B, heads, D, nc] each
  if (onednn)
    for (int64_t c0 = 0; c0 < lk; c0 += kb) v_blocks.push_back(v.narrow(2, c0, std::min(kb, lk - c0)).transpose(2, 3).contiguous());
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    // Scratch per worker, reused by all its tasks (oneDNN returns its own score blocks).
    at::Tensor scores_buf = onednn ? at::Tensor() : at::empty({qb, kb}, q.options());
    at::Tensor m = at::empty({qb}, q.options()), m_new = at::empty({qb}, q.options());
    at::Tensor l = at::empty({qb}, q.options()), row = at::empty({qb}, q.options()), alpha = at::empty({qb}, q.options());
    at::Tensor acc = at::empty({qb, d}, q.options());
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bi = task / (heads * query_blocks), hi = (task / query_blocks) % heads, r0 = (task % query_blocks) * qb;
      const int64_t nr = std::min(qb, lq - r0);
      const at::Tensor q_rows = q.select(0, bi).select(0, hi).narrow(0, r0, nr);  // [nr, D], contiguous
      const at::Tensor q_onednn = onednn ? q_rows.to_mkldnn() : at::Tensor();
      const at::Tensor k_head = k.select(0, bi).select(0, hi);
      at::Tensor o = acc.narrow(0, 0, nr);
      at::Tensor mr = m.narrow(0, 0, nr), mn = m_new.narrow(0, 0, nr), lr = l.narrow(0, 0, nr);
      at::Tensor rr = row.narrow(0, 0, nr), ar = alpha.narrow(0, 0, nr);
      const int64_t key_end = causal ? std::min(lk, r0 + nr) : lk;  // causal: keys ≤ the last row's index
      for (int64_t c0 = 0; c0 < key_end; c0 += kb) {
        const int64_t nc = std::min(kb, key_end - c0);
        at::Tensor s;  // [nr, nc]
        if (onednn) {
          s = at::mkldnn_linear(q_onednn, k_head.narrow(0, c0, nc)).to_dense();
        } else {
          s = scores_buf.narrow(0, 0, nr).narrow(1, 0, nc);
          at::mm_out(s, q_rows, k_head.narrow(0, c0, nc).t());
        }
        if (causal && c0 + nc > r0 + 1) {
          // mask key j > query i inside the block that straddles the diagonal
          const at::Tensor qi = at::arange(r0, r0 + nr, q.options().dtype(at::kLong)).unsqueeze(1);
          const at::Tensor kj = at::arange(c0, c0 + nc, q.options().dtype(at::kLong)).unsqueeze(0);
          s.masked_fill_(kj > qi, neg_inf);
        }
        const bool first = c0 == 0;
        if (first) {
          at::amax_out(mr, s, {1});
          s.sub_(mr.unsqueeze(1)).exp_();
          at::sum_out(lr, s, {1});
        } else {
          at::amax_out(rr, s, {1});
          at::maximum_out(mn, mr, rr);
          at::sub_out(ar, mr, mn).exp_();  // rescale of what was accumulated so far
          s.sub_(mn.unsqueeze(1)).exp_();
          at::sum_out(rr, s, {1});
          lr.mul_(ar).add_(rr);
          o.mul_(ar.unsqueeze(1));
          mr.copy_(mn);
        }
        if (onednn) {
          at::Tensor vt = v_blocks[c0 / kb].select(0, bi).select(0, hi);  // [D, kb]
          if (vt.size(1) != nc) vt = vt.narrow(1, 0, nc).contiguous();   // a causal block cut at the diagonal
          const at::Tensor pv = at::mkldnn_linear(s.to_mkldnn(), vt).to_dense();
          first ? o.copy_(pv) : o.add_(pv);
        } else {
          const at::Tensor v_rows = v.select(0, bi).select(0, hi).narrow(0, c0, nc);
          first ? at::mm_out(o, s, v_rows) : at::addmm_out(o, o, s, v_rows);
        }
      }
      out.select(0, bi).narrow(0, r0, nr).select(1, hi).copy_(o.div_(lr.unsqueeze(1)));
    }
  });
  const at::Tensor result = out.transpose(1, 2);  // [B, heads, L, D] view
  return q_in.scalar_type() == at::kFloat ? result : result.to(q_in.scalar_type());
}

// ---------------------------------------------------------------------------------------------
// `auto` leaves small heads to the chunked kernel: with a few hundred tokens of width 16 (the demo's
// UNet) a fused task is a dozen operator calls around a tiny GEMM, and one batched bmm over all heads
// wins (demo, 22 masks: 0.06 s chunked vs 0.12 s fused per UNet call). From SD's smallest level up
// (256 tokens × width 64 = 2^22) fused wins (SD2 at 16², batch 8: 0.022 s vs 0.030 s).
// On the CPU in bfloat16 (or float16) `auto` takes the chunked kernel whatever the LibTorch: its
// batched GEMMs run on oneDNN's bf16 path, while LibTorch 2.6's CPU SDPA (flash kernel) is 7× slower
// in bf16 and our fused kernel's per-block GEMMs are small calls. Measured, real-size SD2-inpainting
// UNet, one call, 2 threads, AMD EPYC with AVX512-BF16 (`anomalysd bench unet --dtype bfloat16
// --attention …`): LibTorch 2.6: sdpa 19.9 s, fused 2.77 s, chunked 2.74 s; LibTorch 1.13: fused
// 4.10 s, chunked 3.33 s. In float32 sdpa (2.6: 5.21 s) and fused (2.6: 5.08 s, 1.13: 6.79 s) beat
// chunked (2.6: 6.12 s).
constexpr int64_t kFusedMinWork = int64_t(1) << 22;  // query tokens × key tokens × head width

at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool upcast, bool causal) {
  AttentionKernel kernel = g_kernel;
  const bool needs_grad = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  if (kernel == AttentionKernel::Auto) {
    if (q.device().is_cpu() && q.scalar_type() != at::kFloat)
      kernel = AttentionKernel::Chunked;
    else if (sdpa_available() && (!upcast || q.scalar_type() == at::kFloat))
      kernel = AttentionKernel::Sdpa;
    else if (q.device().is_cpu() && !needs_grad && q.scalar_type() == at::kFloat && q.size(2) * k.size(2) * q.size(3) >= kFusedMinWork)
      kernel = AttentionKernel::Fused;
    else
      kernel = AttentionKernel::Chunked;
  }
  // Forced kernels still fall back where they cannot run: fused off the CPU or under autograd.
  if (kernel == AttentionKernel::Fused && (!q.device().is_cpu() || needs_grad)) kernel = AttentionKernel::Chunked;
#if TORCH_VERSION_MAJOR >= 2
  if (kernel == AttentionKernel::Sdpa) {
    if (upcast && q.scalar_type() != at::kFloat)
      return at::scaled_dot_product_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), {}, 0.0, causal).to(q.scalar_type());
    return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/causal);
  }
#endif
  if (kernel == AttentionKernel::Fused) return attention_fused_cpu(q, k, v, causal);
  return attention_chunked(q, k, v, upcast, causal);
}

}  // namespace anomalysd

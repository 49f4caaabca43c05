// softmax(q kᵀ / √D) v on the CPU and elsewhere — the attention of every UNet, VAE and CLIP layer.
//
// Kernels:
//   sdpa     at::scaled_dot_product_attention (LibTorch ≥ 2.0; fused on CPU and CUDA there)
//   fused    ours, for LibTorch builds without SDPA: blocked over queries and keys with an online
//            softmax (flash-attention style), so that no score matrix larger than one cache-sized
//            block is ever written; the 1/√D scale is folded into Q in the pass that makes it
//            contiguous, and the output is written straight into the [B, L, heads, D] layout the
//            out-projection reads. Its two GEMMs run on the machine's CPU GEMM (cpu_gemm.h).
//            Inference only (in-place kernels, no autograd).
//   chunked  the materialising kernel: scores of whole heads (≤ 128 MiB at a time), softmax, ·v.
//            Differentiable; what training uses without SDPA, and the reference for the others.
// `auto`: on the CPU in bfloat16/float16 chunked (measured fastest on both LibTorch versions; see
// attention_kernels.cpp); otherwise sdpa when available, else fused when autograd is off and a head
// is large enough (query tokens × key tokens × width ≥ 2^22, SD's levels), else chunked.
//
// Legend: B batch, L query tokens, S key tokens, D head width.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

namespace anomalysd {

enum class AttentionKernel { Auto, Sdpa, Fused, Chunked };

AttentionKernel parse_attention_kernel(const std::string& name);  // auto | sdpa | fused | chunked
std::string attention_kernel_name(AttentionKernel kernel);
void set_attention_kernel(AttentionKernel kernel);  // process-wide; `sdpa` needs LibTorch ≥ 2.0
bool sdpa_available();

// q [B, heads, L, D], k/v [B, heads, S, D] (any strides, e.g. expanded over B) -> [B, heads, L, D].
// `upcast` computes scores and softmax in float32 (diffusers' upcast_attention / upcast_softmax);
// `causal` masks keys after the query (CLIP's text encoder).
at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool upcast = false,
                                        bool causal = false);

// The kernels themselves, for tests and benchmarks (each path tested explicitly).
at::Tensor attention_fused_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal = false);
at::Tensor attention_chunked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool upcast, bool causal);

// Block sizes of the fused kernel: query rows × key columns of one score block (exposed so that a
// test can force many key blocks and exercise the online-softmax rescaling).
struct FusedAttentionBlocks {
  int64_t query_rows = 0;  // 0: the defaults (256 rows; key columns from the cache size)
  int64_t key_cols = 0;
};
void set_fused_attention_blocks(const FusedAttentionBlocks& blocks);
FusedAttentionBlocks fused_attention_blocks();  // the sizes in effect

}  // namespace anomalysd

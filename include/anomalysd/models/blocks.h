// Building blocks shared by the UNet and the VAE — ports of diffusers v0.27 ResnetBlock2D,
// Attention, Downsample2D, Upsample2D, FeedForward(GEGLU), BasicTransformerBlock, Transformer2DModel.
// Member names are the state-dict names.
//
// Legend: B batch, C channels, H×W spatial, L query tokens (H·W), S context tokens, D head width.
#pragma once

#include <torch/torch.h>

#include "anomalysd/models/attention_kernels.h"
#include "anomalysd/models/cpu_gemm.h"
#include "anomalysd/models/norms.h"

namespace anomalysd {

// A Linear layer's forward through the CPU GEMM chosen for this machine (cpu_gemm.h).
inline torch::Tensor linear(const torch::nn::Linear& layer, const torch::Tensor& x) { return linear(x, layer->weight, layer->bias); }

// CPU inference layout: every 4-D parameter (conv weight) of `module` in channels-last (NHWC).
// oneDNN then keeps activations NHWC from conv to conv, and the transformer blocks' NCHW ↔ token
// transposes become views (SD2 UNet on 2 cores: copies 0.9 s → 0.1 s per call). Values are
// unchanged; outputs of the UNet and VAE are returned contiguous (NCHW) either way.
void use_channels_last(torch::nn::Module& module);

struct ResnetBlock2DImpl : torch::nn::Module {
  // temb_channels = 0: no time embedding (the VAE).
  ResnetBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t temb_channels, int64_t groups, double eps);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb = {});

  GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  torch::nn::Linear time_emb_proj{nullptr};
};
TORCH_MODULE(ResnetBlock2D);

struct AttentionOptions {
  int64_t query_dim = 0;
  int64_t cross_attention_dim = 0;  // 0: self-attention
  int64_t heads = 1;
  int64_t head_dim = 0;
  bool qkv_bias = false;
  bool upcast = false;          // scores/softmax in float32
  int64_t norm_groups = 0;      // > 0: GroupNorm on the 4-D input and a residual (the VAE's mid-block)
  double norm_eps = 1e-6;
};

struct AttentionImpl : torch::nn::Module {
  explicit AttentionImpl(const AttentionOptions& o);
  // x [B, L, C], context [B, S, Cc] (undefined = self-attention) -> [B, L, C]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {});
  // x [B, C, H, W] -> group_norm, self-attention over H·W, + x  (diffusers' spatial attention)
  torch::Tensor forward_spatial(const torch::Tensor& x);

  // Cross-attention: K and V of a fixed text embedding [1, S, E], kept until cleared and used by
  // every forward whose context is that tensor (broadcast over the batch) — the same for every
  // DDIM step and every mask of an inpainting run. Inference only.
  void cache_text_projection(const torch::Tensor& context_row);
  void clear_text_projections() { text_projections.clear(); }

  AttentionOptions options;
  GroupNorm group_norm{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out;  // [Linear] — as diffusers' [Linear, Dropout]; only index 0 holds weights
  torch::nn::Linear to_out_0{nullptr};  // the same module as to_out[0], typed

 private:
  struct TextProjection {
    torch::Tensor source;  // the [1, S, E] row the projections were made from (kept alive)
    int64_t version;
    torch::Tensor k, v;    // [1, heads, S, D]
  };
  const TextProjection* find_text_projection(const torch::Tensor& row) const;
  std::vector<TextProjection> text_projections;
};
TORCH_MODULE(Attention);

struct Downsample2DImpl : torch::nn::Module {
  // padding 1: a plain strided conv (UNet); padding 0: pad right/bottom by one first (VAE).
  Downsample2DImpl(int64_t channels, int64_t padding);
  torch::Tensor forward(const torch::Tensor& x);
  int64_t padding;
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample2D);

struct Upsample2DImpl : torch::nn::Module {
  explicit Upsample2DImpl(int64_t channels);
  // Nearest ×2, or to `size` (the skip connection's) when given, then a 3×3 conv.
  torch::Tensor forward(const torch::Tensor& x, c10::optional<c10::IntArrayRef> size = c10::nullopt);
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

struct GEGLUImpl : torch::nn::Module {
  GEGLUImpl(int64_t dim_in, int64_t dim_out);
  torch::Tensor forward(const torch::Tensor& x);  // a · gelu(b), [a, b] = proj(x).chunk(2)
  torch::nn::Linear proj{nullptr};
};
TORCH_MODULE(GEGLU);

struct FeedForwardImpl : torch::nn::Module {
  explicit FeedForwardImpl(int64_t dim, int64_t mult = 4);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::ModuleList net;  // [GEGLU, Dropout, Linear]
  GEGLU net_0{nullptr};          // typed views of net[0] and net[2]
  torch::nn::Linear net_2{nullptr};
};
TORCH_MODULE(FeedForward);

struct BasicTransformerBlockImpl : torch::nn::Module {
  BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim, int64_t cross_attention_dim, bool upcast);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);
  LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  Attention attn1{nullptr}, attn2{nullptr};
  FeedForward ff{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

struct Transformer2DModelImpl : torch::nn::Module {
  Transformer2DModelImpl(int64_t channels, int64_t heads, int64_t cross_attention_dim, int64_t groups,
                         bool use_linear_projection, bool upcast);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);  // [B, C, H, W] -> same

  bool use_linear_projection;
  GroupNorm norm{nullptr};
  // SD1 checkpoints project with 1×1 convs, SD2 with linears (`use_linear_projection`).
  torch::nn::Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
  torch::nn::Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
  torch::nn::ModuleList transformer_blocks;
};
TORCH_MODULE(Transformer2DModel);

}  // namespace anomalysd

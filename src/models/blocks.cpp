// Port of diffusers v0.27 resnet.py, attention_processor.py (AttnProcessor / AttnProcessor2_0),
// downsampling.py, upsampling.py, attention.py (FeedForward, BasicTransformerBlock) and
// transformers/transformer_2d.py.
#include "anomalysd/models/blocks.h"

#include "anomalysd/io/errors.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include <torch/version.h>

namespace anomalysd {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

void use_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
}

// ---------------------------------------------------------------------------------------------
ResnetBlock2DImpl::ResnetBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t temb_channels, int64_t groups,
                                     double eps) {
  norm1 = register_module("norm1", GroupNorm(nn::GroupNormOptions(groups, in_channels).eps(eps)));
  conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(in_channels, out_channels, 3).padding(1)));
  if (temb_channels > 0) time_emb_proj = register_module("time_emb_proj", nn::Linear(temb_channels, out_channels));
  norm2 = register_module("norm2", GroupNorm(nn::GroupNormOptions(groups, out_channels).eps(eps)));
  conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(out_channels, out_channels, 3).padding(1)));
  if (in_channels != out_channels)
    conv_shortcut = register_module("conv_shortcut", nn::Conv2d(nn::Conv2dOptions(in_channels, out_channels, 1)));
}

torch::Tensor ResnetBlock2DImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
  if (!torch::GradMode::is_enabled()) {
    // Inference: SiLU, the time embedding and the residual land in place — one pass and no new
    // buffer each (same values: the operands and their order are those of the graph below).
    torch::Tensor a = norm1(x);
    torch::Tensor h = conv1(torch::silu_(a));
    if (time_emb_proj && temb.defined()) h.add_(time_emb_proj(F::silu(temb)).unsqueeze(-1).unsqueeze(-1));
    a = norm2(h);
    h = conv2(torch::silu_(a));
    return conv_shortcut ? conv_shortcut(x).add_(h) : h.add_(x);  // x + h == h + x exactly
  }
  torch::Tensor h = conv1(F::silu(norm1(x)));
  if (time_emb_proj && temb.defined()) h = h + time_emb_proj(F::silu(temb)).unsqueeze(-1).unsqueeze(-1);
  h = conv2(F::silu(norm2(h)));  // dropout is identity at inference
  return (conv_shortcut ? conv_shortcut(x) : x) + h;
}

// ---------------------------------------------------------------------------------------------
AttentionImpl::AttentionImpl(const AttentionOptions& o) : options(o) {
  const int64_t inner = o.heads * o.head_dim;
  const int64_t context_dim = o.cross_attention_dim > 0 ? o.cross_attention_dim : o.query_dim;
  if (o.norm_groups > 0)
    group_norm = register_module("group_norm", GroupNorm(nn::GroupNormOptions(o.norm_groups, o.query_dim).eps(o.norm_eps)));
  to_q = register_module("to_q", nn::Linear(nn::LinearOptions(o.query_dim, inner).bias(o.qkv_bias)));
  to_k = register_module("to_k", nn::Linear(nn::LinearOptions(context_dim, inner).bias(o.qkv_bias)));
  to_v = register_module("to_v", nn::Linear(nn::LinearOptions(context_dim, inner).bias(o.qkv_bias)));
  to_out_0 = nn::Linear(inner, o.query_dim);
  to_out = register_module("to_out", nn::ModuleList(to_out_0));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const torch::Tensor& ctx = context.defined() ? context : x;
  const int64_t b = x.size(0), heads = options.heads, d = options.head_dim;
  auto split_heads = [&](const torch::Tensor& t) { return t.view({t.size(0), -1, heads, d}).transpose(1, 2); };  // [B, h, L, D]
  const torch::Tensor q = split_heads(linear(to_q, x));
  torch::Tensor k, v;
  if (context.defined() && (ctx.size(0) == 1 || ctx.stride(0) == 0)) {
    // One text embedding broadcast over a batch (every inpainting mask shares the prompt):
    // project it once and broadcast K and V, instead of B identical projections — or not at
    // all when the run cached them (cache_text_projections).
    const torch::Tensor one = ctx.narrow(0, 0, 1);
    const TextProjection* cached = find_text_projection(one);
    k = (cached ? cached->k : split_heads(linear(to_k, one))).expand({b, -1, -1, -1});
    v = (cached ? cached->v : split_heads(linear(to_v, one))).expand({b, -1, -1, -1});
  } else {
    k = split_heads(linear(to_k, ctx));
    v = split_heads(linear(to_v, ctx));
  }
  const torch::Tensor out = anomalysd::scaled_dot_product_attention(q, k, v, options.upcast)
                                .transpose(1, 2)
                                .reshape({b, -1, heads * d});  // [B, L, h·D]
  return linear(to_out_0, out);
}

void AttentionImpl::cache_text_projection(const torch::Tensor& context_row) {
  if (context_row.dim() != 3 || context_row.size(0) != 1) throw ShapeError("cache_text_projection: the text embedding must be [1, S, E]");
  torch::NoGradGuard no_grad;
  if (find_text_projection(context_row)) return;
  const int64_t heads = options.heads, d = options.head_dim;
  auto split_heads = [&](const torch::Tensor& t) { return t.view({t.size(0), -1, heads, d}).transpose(1, 2); };
  text_projections.push_back({context_row, context_row._version(), split_heads(linear(to_k, context_row)),
                              split_heads(linear(to_v, context_row))});
}

const AttentionImpl::TextProjection* AttentionImpl::find_text_projection(const torch::Tensor& row) const {
  if (torch::GradMode::is_enabled()) return nullptr;  // training differentiates through to_k / to_v
  for (const auto& p : text_projections) {
    // The cache holds its source tensor, so no other tensor can own that memory meanwhile; a
    // write to the source (its version) or a different view of it is a miss. The batch stride of
    // a [1, S, E] row is irrelevant (the row itself and a row of it expanded over B are the same).
    if (p.source.data_ptr() == row.data_ptr() && p.source.sizes() == row.sizes() && p.source.stride(1) == row.stride(1) &&
        p.source.stride(2) == row.stride(2) && p.source.scalar_type() == row.scalar_type() && p.source.device() == row.device() &&
        p.version == row._version())
      return &p;
  }
  return nullptr;
}

torch::Tensor AttentionImpl::forward_spatial(const torch::Tensor& x) {
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  torch::Tensor tokens = group_norm(x).view({b, c, h * w}).transpose(1, 2);  // [B, H·W, C]
  tokens = forward(tokens);
  if (!torch::GradMode::is_enabled()) return tokens.transpose(1, 2).reshape({b, c, h, w}).add_(x);
  return tokens.transpose(1, 2).reshape({b, c, h, w}) + x;
}

// ---------------------------------------------------------------------------------------------
Downsample2DImpl::Downsample2DImpl(int64_t channels, int64_t pad) : padding(pad) {
  conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(channels, channels, 3).stride(2).padding(pad)));
}

torch::Tensor Downsample2DImpl::forward(const torch::Tensor& x) {
  if (padding == 0) return conv(F::pad(x, F::PadFuncOptions({0, 1, 0, 1}).mode(torch::kConstant).value(0)));
  return conv(x);
}

Upsample2DImpl::Upsample2DImpl(int64_t channels) {
  conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(channels, channels, 3).padding(1)));
}

torch::Tensor Upsample2DImpl::forward(const torch::Tensor& x, c10::optional<c10::IntArrayRef> size) {
  // Nearest upsampling has no bfloat16 kernel in older LibTorch: go through float32 as diffusers does.
  const bool via_float = x.scalar_type() == torch::kBFloat16;
  torch::Tensor h = via_float ? x.to(torch::kFloat) : x;
  auto opts = F::InterpolateFuncOptions().mode(torch::kNearest);
  if (size)
    opts.size(std::vector<int64_t>(size->begin(), size->end()));
  else
    opts.scale_factor(std::vector<double>{2.0, 2.0});
  h = F::interpolate(h, opts);
  if (via_float) h = h.to(x.scalar_type());
  return conv(h);
}

// ---------------------------------------------------------------------------------------------
GEGLUImpl::GEGLUImpl(int64_t dim_in, int64_t dim_out) {
  proj = register_module("proj", nn::Linear(dim_in, dim_out * 2));
}

torch::Tensor GEGLUImpl::forward(const torch::Tensor& x) {
  const auto parts = linear(proj, x).chunk(2, -1);
  // Inference: gelu's fresh, contiguous output takes the product in place (one buffer, not two).
  if (!torch::GradMode::is_enabled()) return F::gelu(parts[1]).mul_(parts[0]);
  return parts[0] * F::gelu(parts[1]);
}

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t mult) {
  net_0 = GEGLU(dim, dim * mult);
  net_2 = nn::Linear(dim * mult, dim);
  net = register_module("net", nn::ModuleList(net_0, nn::Dropout(0.0), net_2));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  return linear(net_2, net_0->forward(x));
}

BasicTransformerBlockImpl::BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim,
                                                     int64_t cross_attention_dim, bool upcast) {
  const auto ln = [&] { return LayerNorm(nn::LayerNormOptions({dim}).eps(1e-5)); };
  norm1 = register_module("norm1", ln());
  attn1 = register_module("attn1", Attention(AttentionOptions{dim, 0, heads, head_dim, false, upcast}));
  norm2 = register_module("norm2", ln());
  attn2 = register_module("attn2", Attention(AttentionOptions{dim, cross_attention_dim, heads, head_dim, false, upcast}));
  norm3 = register_module("norm3", ln());
  ff = register_module("ff", FeedForward(dim));
}

torch::Tensor BasicTransformerBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  if (!torch::GradMode::is_enabled()) {  // inference: residuals added in place
    torch::Tensor h = attn1(norm1(x)).add_(x);
    h = attn2(norm2(h), context).add_(h);
    return ff(norm3(h)).add_(h);
  }
  torch::Tensor h = attn1(norm1(x)) + x;  // self-attention
  h = attn2(norm2(h), context) + h;      // cross-attention on the text embedding
  return ff(norm3(h)) + h;
}

Transformer2DModelImpl::Transformer2DModelImpl(int64_t channels, int64_t heads, int64_t cross_attention_dim,
                                               int64_t groups, bool linear, bool upcast)
    : use_linear_projection(linear) {
  norm = register_module("norm", GroupNorm(nn::GroupNormOptions(groups, channels).eps(1e-6)));
  if (linear)
    proj_in_linear = register_module("proj_in", nn::Linear(channels, channels));
  else
    proj_in_conv = register_module("proj_in", nn::Conv2d(nn::Conv2dOptions(channels, channels, 1)));
  transformer_blocks = register_module(
      "transformer_blocks", nn::ModuleList(BasicTransformerBlock(channels, heads, channels / heads, cross_attention_dim, upcast)));
  if (linear)
    proj_out_linear = register_module("proj_out", nn::Linear(channels, channels));
  else
    proj_out_conv = register_module("proj_out", nn::Conv2d(nn::Conv2dOptions(channels, channels, 1)));
}

torch::Tensor Transformer2DModelImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  torch::Tensor t = norm(x);
  // 1. project in and flatten to tokens: [B, H·W, C]
  if (use_linear_projection) {
    t = linear(proj_in_linear, t.permute({0, 2, 3, 1}).reshape({b, h * w, c}));
  } else {
    t = proj_in_conv(t).permute({0, 2, 3, 1}).reshape({b, h * w, c});
  }
  // 2. transformer blocks
  for (const auto& block : *transformer_blocks) t = block->as<BasicTransformerBlockImpl>()->forward(t, context);
  // 3. back to [B, C, H, W], project out, residual
  if (use_linear_projection) {
    t = linear(proj_out_linear, t).reshape({b, h, w, c}).permute({0, 3, 1, 2});
  } else {
    // NHWC tokens as an NCHW view: a copy only when the model runs in NCHW
    t = proj_out_conv(t.reshape({b, h, w, c}).permute({0, 3, 1, 2}).contiguous(x.suggest_memory_format()));
  }
  return t + x;
}

}  // namespace anomalysd

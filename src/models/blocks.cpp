// Port of diffusers v0.27 resnet.py, attention_processor.py (AttnProcessor / AttnProcessor2_0),
// downsampling.py, upsampling.py, attention.py (FeedForward, BasicTransformerBlock) and
// transformers/transformer_2d.py.
#include "anomalysd/models/blocks.h"

#include <cmath>

#include <torch/version.h>

namespace anomalysd {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                           bool upcast, bool causal) {
#if TORCH_VERSION_MAJOR >= 2
  if (!upcast || q.scalar_type() == torch::kFloat)
    return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/causal);
#endif
  const int64_t batch_heads = q.size(0) * q.size(1), lq = q.size(2), lk = k.size(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  const auto score_dtype = upcast ? torch::kFloat : q.scalar_type();
  // Query rows per chunk so that one score matrix holds at most 32 Mi elements (128 MiB in fp32).
  constexpr int64_t kMaxScoreElements = int64_t(32) << 20;
  const int64_t rows = std::max<int64_t>(1, std::min(lq, kMaxScoreElements / std::max<int64_t>(1, batch_heads * lk)));
  const torch::Tensor kt = k.to(score_dtype).transpose(-1, -2);
  torch::Tensor out = torch::empty_like(q);
  for (int64_t start = 0; start < lq; start += rows) {
    const int64_t n = std::min(rows, lq - start);
    torch::Tensor scores = torch::matmul(q.narrow(2, start, n).to(score_dtype), kt).mul_(scale);  // [B, h, n, S]
    if (causal) {
      const auto row = torch::arange(start, start + n, q.options().dtype(torch::kLong)).unsqueeze(1);
      const auto col = torch::arange(lk, q.options().dtype(torch::kLong)).unsqueeze(0);
      scores.masked_fill_(col > row, -std::numeric_limits<float>::infinity());
    }
    scores = scores.softmax(-1).to(v.scalar_type());
    out.narrow(2, start, n).copy_(torch::matmul(scores, v));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
ResnetBlock2DImpl::ResnetBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t temb_channels, int64_t groups,
                                     double eps) {
  norm1 = register_module("norm1", nn::GroupNorm(nn::GroupNormOptions(groups, in_channels).eps(eps)));
  conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(in_channels, out_channels, 3).padding(1)));
  if (temb_channels > 0) time_emb_proj = register_module("time_emb_proj", nn::Linear(temb_channels, out_channels));
  norm2 = register_module("norm2", nn::GroupNorm(nn::GroupNormOptions(groups, out_channels).eps(eps)));
  conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(out_channels, out_channels, 3).padding(1)));
  if (in_channels != out_channels)
    conv_shortcut = register_module("conv_shortcut", nn::Conv2d(nn::Conv2dOptions(in_channels, out_channels, 1)));
}

torch::Tensor ResnetBlock2DImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
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
    group_norm = register_module("group_norm", nn::GroupNorm(nn::GroupNormOptions(o.norm_groups, o.query_dim).eps(o.norm_eps)));
  to_q = register_module("to_q", nn::Linear(nn::LinearOptions(o.query_dim, inner).bias(o.qkv_bias)));
  to_k = register_module("to_k", nn::Linear(nn::LinearOptions(context_dim, inner).bias(o.qkv_bias)));
  to_v = register_module("to_v", nn::Linear(nn::LinearOptions(context_dim, inner).bias(o.qkv_bias)));
  to_out = register_module("to_out", nn::ModuleList(nn::Linear(inner, o.query_dim)));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const torch::Tensor& ctx = context.defined() ? context : x;
  const int64_t b = x.size(0), heads = options.heads, d = options.head_dim;
  auto split_heads = [&](const torch::Tensor& t) { return t.view({b, -1, heads, d}).transpose(1, 2); };  // [B, h, L, D]
  const torch::Tensor q = split_heads(to_q(x)), k = split_heads(to_k(ctx)), v = split_heads(to_v(ctx));
  const torch::Tensor out = scaled_dot_product_attention(q, k, v, options.upcast)
                                .transpose(1, 2)
                                .reshape({b, -1, heads * d});  // [B, L, h·D]
  return to_out[0]->as<nn::LinearImpl>()->forward(out);
}

torch::Tensor AttentionImpl::forward_spatial(const torch::Tensor& x) {
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  torch::Tensor tokens = group_norm(x).view({b, c, h * w}).transpose(1, 2);  // [B, H·W, C]
  tokens = forward(tokens);
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
  const auto parts = proj(x).chunk(2, -1);
  return parts[0] * F::gelu(parts[1]);
}

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t mult) {
  net = register_module("net", nn::ModuleList(GEGLU(dim, dim * mult), nn::Dropout(0.0), nn::Linear(dim * mult, dim)));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  return net[2]->as<nn::LinearImpl>()->forward(net[0]->as<GEGLUImpl>()->forward(x));
}

BasicTransformerBlockImpl::BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim,
                                                     int64_t cross_attention_dim, bool upcast) {
  const auto ln = [&] { return nn::LayerNorm(nn::LayerNormOptions({dim}).eps(1e-5)); };
  norm1 = register_module("norm1", ln());
  attn1 = register_module("attn1", Attention(AttentionOptions{dim, 0, heads, head_dim, false, upcast}));
  norm2 = register_module("norm2", ln());
  attn2 = register_module("attn2", Attention(AttentionOptions{dim, cross_attention_dim, heads, head_dim, false, upcast}));
  norm3 = register_module("norm3", ln());
  ff = register_module("ff", FeedForward(dim));
}

torch::Tensor BasicTransformerBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  torch::Tensor h = attn1(norm1(x)) + x;  // self-attention
  h = attn2(norm2(h), context) + h;      // cross-attention on the text embedding
  return ff(norm3(h)) + h;
}

Transformer2DModelImpl::Transformer2DModelImpl(int64_t channels, int64_t heads, int64_t cross_attention_dim,
                                               int64_t groups, bool linear, bool upcast)
    : use_linear_projection(linear) {
  norm = register_module("norm", nn::GroupNorm(nn::GroupNormOptions(groups, channels).eps(1e-6)));
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
    t = proj_in_linear(t.permute({0, 2, 3, 1}).reshape({b, h * w, c}));
  } else {
    t = proj_in_conv(t).permute({0, 2, 3, 1}).reshape({b, h * w, c});
  }
  // 2. transformer blocks
  for (const auto& block : *transformer_blocks) t = block->as<BasicTransformerBlockImpl>()->forward(t, context);
  // 3. back to [B, C, H, W], project out, residual
  if (use_linear_projection) {
    t = proj_out_linear(t).reshape({b, h, w, c}).permute({0, 3, 1, 2});
  } else {
    t = proj_out_conv(t.reshape({b, h, w, c}).permute({0, 3, 1, 2}).contiguous());
  }
  return t + x;
}

}  // namespace anomalysd

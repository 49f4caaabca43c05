// Port of diffusers v0.27 resnet.py, attention_processor.py (AttnProcessor / AttnProcessor2_0),
// downsampling.py, upsampling.py, attention.py (FeedForward, BasicTransformerBlock) and
// transformers/transformer_2d.py.
#include "anomalysd/models/blocks.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include <torch/version.h>

namespace anomalysd {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

namespace {
std::atomic<bool> g_onednn_linear{true};
}  // namespace

void set_onednn_linear(bool enabled) { g_onednn_linear = enabled; }
bool onednn_linear_enabled() { return g_onednn_linear; }

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const int64_t rows = x.numel() / std::max<int64_t>(1, x.size(-1));
  // oneDNN needs plain float32 CPU tensors and has no autograd here; tiny products are not worth
  // the layout conversions.
  if (g_onednn_linear && at::hasMKLDNN() && !torch::GradMode::is_enabled() && x.device().is_cpu() &&
      x.scalar_type() == torch::kFloat && weight.scalar_type() == torch::kFloat && rows >= 16) {
    std::vector<int64_t> out_shape = x.sizes().vec();
    out_shape.back() = weight.size(0);
    const torch::Tensor x2 = x.reshape({rows, x.size(-1)}).contiguous();
    const c10::optional<torch::Tensor> b = bias.defined() ? c10::optional<torch::Tensor>(bias) : c10::nullopt;
    return at::mkldnn_linear(x2.to_mkldnn(), weight.contiguous(), b).to_dense().view(out_shape);
  }
  return torch::nn::functional::linear(x, weight, bias);
}

torch::Tensor linear(const torch::nn::Linear& layer, const torch::Tensor& x) { return linear(x, layer->weight, layer->bias); }

torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                           bool upcast, bool causal) {
#if TORCH_VERSION_MAJOR >= 2
  if (!upcast || q.scalar_type() == torch::kFloat)
    return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/causal);
#endif
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
  to_out_0 = nn::Linear(inner, o.query_dim);
  to_out = register_module("to_out", nn::ModuleList(to_out_0));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const torch::Tensor& ctx = context.defined() ? context : x;
  const int64_t b = x.size(0), heads = options.heads, d = options.head_dim;
  auto split_heads = [&](const torch::Tensor& t) { return t.view({t.size(0), -1, heads, d}).transpose(1, 2); };  // [B, h, L, D]
  const torch::Tensor q = split_heads(linear(to_q, x));
  torch::Tensor k, v;
  if (context.defined() && ctx.size(0) > 1 && ctx.stride(0) == 0) {
    // One text embedding broadcast over a batch (every inpainting mask shares the prompt):
    // project it once and broadcast K and V, instead of B identical projections.
    const torch::Tensor one = ctx.narrow(0, 0, 1);
    k = split_heads(linear(to_k, one)).expand({b, -1, -1, -1});
    v = split_heads(linear(to_v, one)).expand({b, -1, -1, -1});
  } else {
    k = split_heads(linear(to_k, ctx));
    v = split_heads(linear(to_v, ctx));
  }
  const torch::Tensor out = scaled_dot_product_attention(q, k, v, options.upcast)
                                .transpose(1, 2)
                                .reshape({b, -1, heads * d});  // [B, L, h·D]
  return linear(to_out_0, out);
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
  const auto parts = linear(proj, x).chunk(2, -1);
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
    t = proj_out_conv(t.reshape({b, h, w, c}).permute({0, 3, 1, 2}).contiguous());
  }
  return t + x;
}

}  // namespace anomalysd

// Port of diffusers v0.27 unets/unet_2d_condition.py and unets/unet_2d_blocks.py (the blocks SD uses).
#include "anomalysd/models/unet.h"

#include "anomalysd/models/gradient_checkpoint.h"

#include <cmath>
#include <filesystem>

#include "anomalysd/io/errors.h"
#include "anomalysd/models/json_config.h"
#include "anomalysd/models/weights.h"

namespace anomalysd {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

// ---------------------------------------------------------------------------------------------
DownBlock2DImpl::DownBlock2DImpl(const UNetConfig& c, int64_t in_channels, int64_t out_channels, int64_t layers,
                                 int64_t heads, bool with_attention, bool add_downsample) {
  const int64_t temb = c.block_out_channels[0] * 4;
  resnets = register_module("resnets", nn::ModuleList());
  if (with_attention) attentions = register_module("attentions", nn::ModuleList());
  for (int64_t i = 0; i < layers; ++i) {
    resnets->push_back(ResnetBlock2D(i == 0 ? in_channels : out_channels, out_channels, temb, c.norm_num_groups, c.norm_eps));
    if (with_attention)
      attentions->push_back(Transformer2DModel(out_channels, heads, c.cross_attention_dim, c.norm_num_groups,
                                               c.use_linear_projection, c.upcast_attention));
  }
  if (add_downsample)
    downsamplers = register_module("downsamplers", nn::ModuleList(Downsample2D(out_channels, c.downsample_padding)));
}

torch::Tensor DownBlock2DImpl::forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                                       std::vector<torch::Tensor>& skips) {
  for (std::size_t i = 0; i < resnets->size(); ++i) {
    x = resnets[i]->as<ResnetBlock2DImpl>()->forward(x, temb);
    if (attentions) x = attentions[i]->as<Transformer2DModelImpl>()->forward(x, context);
    skips.push_back(x);
  }
  if (downsamplers) {
    x = downsamplers[0]->as<Downsample2DImpl>()->forward(x);
    skips.push_back(x);
  }
  return x;
}

UpBlock2DImpl::UpBlock2DImpl(const UNetConfig& c, int64_t in_channels, int64_t prev_out_channels, int64_t out_channels,
                             int64_t layers, int64_t heads, bool with_attention, bool add_upsample) {
  const int64_t temb = c.block_out_channels[0] * 4;
  resnets = register_module("resnets", nn::ModuleList());
  if (with_attention) attentions = register_module("attentions", nn::ModuleList());
  for (int64_t i = 0; i < layers; ++i) {
    // The last resnet takes the skip from before this level's down block (in_channels wide).
    const int64_t skip_channels = i == layers - 1 ? in_channels : out_channels;
    const int64_t resnet_in = i == 0 ? prev_out_channels : out_channels;
    resnets->push_back(ResnetBlock2D(resnet_in + skip_channels, out_channels, temb, c.norm_num_groups, c.norm_eps));
    if (with_attention)
      attentions->push_back(Transformer2DModel(out_channels, heads, c.cross_attention_dim, c.norm_num_groups,
                                               c.use_linear_projection, c.upcast_attention));
  }
  if (add_upsample) upsamplers = register_module("upsamplers", nn::ModuleList(Upsample2D(out_channels)));
}

torch::Tensor UpBlock2DImpl::forward(torch::Tensor x, std::vector<torch::Tensor>& skips, const torch::Tensor& temb,
                                     const torch::Tensor& context) {
  for (std::size_t i = 0; i < resnets->size(); ++i) {
    x = torch::cat({x, skips.back()}, 1);
    skips.pop_back();
    x = resnets[i]->as<ResnetBlock2DImpl>()->forward(x, temb);
    if (attentions) x = attentions[i]->as<Transformer2DModelImpl>()->forward(x, context);
  }
  if (upsamplers) {
    // Upsample to the next skip's size, so latents whose size is not a multiple of 2^levels work.
    const auto size = skips.empty() ? c10::optional<c10::IntArrayRef>() : c10::optional<c10::IntArrayRef>(skips.back().sizes().slice(2));
    x = upsamplers[0]->as<Upsample2DImpl>()->forward(x, size);
  }
  return x;
}

MidBlock2DCrossAttnImpl::MidBlock2DCrossAttnImpl(const UNetConfig& c, int64_t channels, int64_t heads) {
  const int64_t temb = c.block_out_channels[0] * 4;
  resnets = register_module("resnets", nn::ModuleList(ResnetBlock2D(channels, channels, temb, c.norm_num_groups, c.norm_eps),
                                                      ResnetBlock2D(channels, channels, temb, c.norm_num_groups, c.norm_eps)));
  attentions = register_module("attentions", nn::ModuleList(Transformer2DModel(channels, heads, c.cross_attention_dim,
                                                                               c.norm_num_groups, c.use_linear_projection,
                                                                               c.upcast_attention)));
}

torch::Tensor MidBlock2DCrossAttnImpl::forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context) {
  x = resnets[0]->as<ResnetBlock2DImpl>()->forward(x, temb);
  x = attentions[0]->as<Transformer2DModelImpl>()->forward(x, context);
  return resnets[1]->as<ResnetBlock2DImpl>()->forward(x, temb);
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in_channels, int64_t dim) {
  linear_1 = register_module("linear_1", nn::Linear(in_channels, dim));
  linear_2 = register_module("linear_2", nn::Linear(dim, dim));
}

torch::Tensor TimestepEmbeddingImpl::forward(const torch::Tensor& x) { return linear_2(F::silu(linear_1(x))); }

// ---------------------------------------------------------------------------------------------
UNet2DConditionModelImpl::UNet2DConditionModelImpl(UNetConfig c) : config(std::move(c)) {
  const auto& ch = config.block_out_channels;
  const int64_t levels = static_cast<int64_t>(ch.size());
  conv_in = register_module("conv_in", nn::Conv2d(nn::Conv2dOptions(config.in_channels, ch[0], 3).padding(1)));
  time_embedding = register_module("time_embedding", TimestepEmbedding(ch[0], ch[0] * 4));

  down_blocks = register_module("down_blocks", nn::ModuleList());
  int64_t out_channels = ch[0];
  for (int64_t i = 0; i < levels; ++i) {
    const int64_t in_channels = out_channels;
    out_channels = ch[i];
    down_blocks->push_back(DownBlock2D(config, in_channels, out_channels, config.layers_per_block[i], config.attention_heads[i],
                                       config.down_block_types[i] == "CrossAttnDownBlock2D", i < levels - 1));
  }
  // The mid block uses the last level's head count.
  mid_block = register_module("mid_block", MidBlock2DCrossAttn(config, ch.back(), config.attention_heads.back()));

  up_blocks = register_module("up_blocks", nn::ModuleList());
  out_channels = ch.back();
  for (int64_t i = 0; i < levels; ++i) {
    const int64_t level = levels - 1 - i;  // reversed lists
    const int64_t prev_out = out_channels;
    out_channels = ch[level];
    const int64_t in_channels = ch[std::max<int64_t>(level - 1, 0)];
    up_blocks->push_back(UpBlock2D(config, in_channels, prev_out, out_channels, config.layers_per_block[level] + 1,
                                   config.attention_heads[level], config.up_block_types[i] == "CrossAttnUpBlock2D",
                                   i < levels - 1));
  }
  conv_norm_out = register_module("conv_norm_out", GroupNorm(nn::GroupNormOptions(config.norm_num_groups, ch[0]).eps(config.norm_eps)));
  conv_out = register_module("conv_out", nn::Conv2d(nn::Conv2dOptions(ch[0], config.out_channels, 3).padding(1)));
}

torch::Tensor UNet2DConditionModelImpl::time_proj(const torch::Tensor& timesteps) const {
  const int64_t dim = config.block_out_channels[0], half = dim / 2;
  auto opts = torch::TensorOptions().dtype(torch::kFloat).device(timesteps.device());
  const torch::Tensor exponent = torch::arange(half, opts) * (-std::log(10000.0)) / static_cast<double>(half - config.freq_shift);
  const torch::Tensor args = timesteps.to(torch::kFloat).unsqueeze(1) * exponent.exp().unsqueeze(0);  // [B, half]
  torch::Tensor emb = config.flip_sin_to_cos ? torch::cat({args.cos(), args.sin()}, -1) : torch::cat({args.sin(), args.cos()}, -1);
  if (dim % 2 == 1) emb = F::pad(emb, F::PadFuncOptions({0, 1}));
  return emb;
}

torch::Tensor UNet2DConditionModelImpl::forward(const torch::Tensor& sample, const torch::Tensor& timestep,
                                                const torch::Tensor& context) {
  if (sample.dim() != 4 || sample.size(1) != config.in_channels)
    throw ShapeError("unet: sample must be [B, " + std::to_string(config.in_channels) + ", H, W]");
  if (context.dim() != 3 || context.size(0) != sample.size(0) || context.size(2) != config.cross_attention_dim)
    throw ShapeError("unet: encoder_hidden_states must be [B, S, " + std::to_string(config.cross_attention_dim) + "]");
  // 1. time embedding; a 0-d timestep is broadcast over the batch
  torch::Tensor t = timestep.to(sample.device());
  if (t.dim() == 0) t = t.reshape({1});
  if (t.numel() == 1) t = t.expand({sample.size(0)});
  if (t.dim() != 1 || t.size(0) != sample.size(0)) throw ShapeError("unet: timestep must be 0-d or [B]");
  const torch::Tensor temb = time_embedding(time_proj(t).to(sample.scalar_type()));

  // 2. pre-process
  torch::Tensor x = conv_in(sample);
  std::vector<torch::Tensor> skips{x};
  if (gradient_checkpointing && is_training() && torch::GradMode::is_enabled()) {
    x = forward_blocks_checkpointed(x, temb, context, skips);
  } else {
    // 3. down
    for (const auto& block : *down_blocks) x = block->as<DownBlock2DImpl>()->forward(x, temb, context, skips);
    // 4. mid
    x = mid_block(x, temb, context);
    // 5. up
    for (const auto& block : *up_blocks) x = block->as<UpBlock2DImpl>()->forward(x, skips, temb, context);
  }
  // 6. post-process (NCHW out, also when the weights are channels-last)
  return conv_out(F::silu(conv_norm_out(x))).contiguous();
}

torch::Tensor UNet2DConditionModelImpl::forward_blocks_checkpointed(torch::Tensor x, const torch::Tensor& temb,
                                                                   const torch::Tensor& context, std::vector<torch::Tensor>& skips) {
  using torch::autograd::variable_list;
  // 3. down: a block's output is also its last skip
  for (const auto& block : *down_blocks) {
    auto* b = block->as<DownBlock2DImpl>();
    const variable_list out = checkpointed(
        [b](const variable_list& in) {
          std::vector<torch::Tensor> produced;
          b->forward(in[0], in[1], in[2], produced);
          return variable_list(produced.begin(), produced.end());
        },
        {x, temb, context});
    skips.insert(skips.end(), out.begin(), out.end());
    x = out.back();
  }
  // 4. mid
  auto* mid = mid_block.get();
  x = checkpointed([mid](const variable_list& in) { return variable_list{mid->forward(in[0], in[1], in[2])}; }, {x, temb, context})[0];
  // 5. up: each block consumes one skip per resnet and reads the next skip's size
  for (const auto& block : *up_blocks) {
    auto* b = block->as<UpBlock2DImpl>();
    const std::size_t n = b->resnets->size();
    const bool has_next = skips.size() > n;
    variable_list in{x, temb, context};
    if (has_next) in.push_back(skips[skips.size() - n - 1]);
    in.insert(in.end(), skips.end() - static_cast<std::ptrdiff_t>(n), skips.end());
    skips.resize(skips.size() - n);
    x = checkpointed(
        [b](const variable_list& v) {
          std::vector<torch::Tensor> own(v.begin() + 3, v.end());
          return variable_list{b->forward(v[0], own, v[1], v[2])};
        },
        in)[0];
  }
  return x;
}

void UNet2DConditionModelImpl::cache_text_projections(const std::vector<torch::Tensor>& context_rows) {
  for (const auto& m : modules(/*include_self=*/false))
    if (auto* attention = dynamic_cast<AttentionImpl*>(m.get()); attention && attention->options.cross_attention_dim > 0)
      for (const auto& row : context_rows)
        if (row.defined()) attention->cache_text_projection(row);
}

void UNet2DConditionModelImpl::clear_text_projections() {
  for (const auto& m : modules(/*include_self=*/false))
    if (auto* attention = dynamic_cast<AttentionImpl*>(m.get())) attention->clear_text_projections();
}

UNet2DConditionModel load_unet(const std::string& dir, const std::string& variant) {
  UNet2DConditionModel unet(UNetConfig::from_json((std::filesystem::path(dir) / "config.json").string()));
  load_weights(*unet, find_weight_files(dir, "diffusion_pytorch_model", variant));
  unet->eval();
  return unet;
}

}  // namespace anomalysd

// UNet2DConditionModel — port of diffusers v0.27 for the Stable Diffusion (inpainting) family:
// 9-channel input [z_t ; mask↓ ; E((1−m)⊙x)] for inpainting, 4 for plain SD.
//
// Legend: B batch, C channels, H×W latent size, S text tokens (77), E text width.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "anomalysd/models/blocks.h"

namespace anomalysd {

// Mirrors unet/config.json field for field (JSON spelling); int-or-list fields become per-block lists.
struct UNetConfig {
  int64_t in_channels = 4;
  int64_t out_channels = 4;
  std::vector<int64_t> block_out_channels;
  std::vector<std::string> down_block_types;
  std::vector<std::string> up_block_types;
  std::vector<int64_t> layers_per_block;    // per down block
  // In SD checkpoints attention_head_dim holds the number of heads, not their width
  // (num_attention_heads, when set, takes precedence). Per down block.
  std::vector<int64_t> attention_heads;
  int64_t cross_attention_dim = 768;
  int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  bool flip_sin_to_cos = true;
  int64_t freq_shift = 0;
  bool use_linear_projection = false;
  bool upcast_attention = false;
  int64_t downsample_padding = 1;
  int64_t sample_size = 64;

  static UNetConfig from_json(const std::string& path);
};

struct DownBlock2DImpl : torch::nn::Module {  // CrossAttnDownBlock2D, or DownBlock2D without attentions
  DownBlock2DImpl(const UNetConfig& c, int64_t in_channels, int64_t out_channels, int64_t layers, int64_t heads,
                  bool with_attention, bool add_downsample);
  // Returns the output and appends every intermediate state to `skips`.
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                        std::vector<torch::Tensor>& skips);
  torch::nn::ModuleList resnets, attentions{nullptr}, downsamplers{nullptr};
};
TORCH_MODULE(DownBlock2D);

struct UpBlock2DImpl : torch::nn::Module {  // CrossAttnUpBlock2D, or UpBlock2D without attentions
  UpBlock2DImpl(const UNetConfig& c, int64_t in_channels, int64_t prev_out_channels, int64_t out_channels,
                int64_t layers, int64_t heads, bool with_attention, bool add_upsample);
  // Consumes one skip per resnet from the back of `skips`.
  torch::Tensor forward(torch::Tensor x, std::vector<torch::Tensor>& skips, const torch::Tensor& temb,
                        const torch::Tensor& context);
  torch::nn::ModuleList resnets, attentions{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(UpBlock2D);

struct MidBlock2DCrossAttnImpl : torch::nn::Module {
  MidBlock2DCrossAttnImpl(const UNetConfig& c, int64_t channels, int64_t heads);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context);
  torch::nn::ModuleList resnets, attentions;
};
TORCH_MODULE(MidBlock2DCrossAttn);

struct TimestepEmbeddingImpl : torch::nn::Module {
  TimestepEmbeddingImpl(int64_t in_channels, int64_t dim);
  torch::Tensor forward(const torch::Tensor& x);  // linear_2(silu(linear_1(x)))
  torch::nn::Linear linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

struct UNet2DConditionModelImpl : torch::nn::Module {
  explicit UNet2DConditionModelImpl(UNetConfig config);

  // sample [B, in, H, W]; timestep int/float [B] or 0-d (broadcast); context [B, S, E] -> [B, out, H, W]
  torch::Tensor forward(const torch::Tensor& sample, const torch::Tensor& timestep, const torch::Tensor& context);

  // Steps 3–5 with each block checkpointed (gradient_checkpointing).
  torch::Tensor forward_blocks_checkpointed(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                                            std::vector<torch::Tensor>& skips);

  // Sinusoidal embedding [B, C0] of timesteps [B] (diffusers get_timestep_embedding).
  torch::Tensor time_proj(const torch::Tensor& timesteps) const;

  // Every cross-attention layer keeps K and V of these text embeddings (each [1, S, E], e.g. the
  // conditional and unconditional prompt) until clear_text_projections(): an inpainting run
  // projects its prompt once instead of once per DDIM step. See TextProjectionCache.
  void cache_text_projections(const std::vector<torch::Tensor>& context_rows);
  void clear_text_projections();

  UNetConfig config;
  // Training only: recompute each down, mid and up block's activations in backward instead of
  // keeping them (diffusers' enable_gradient_checkpointing).
  bool gradient_checkpointing = false;
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  TimestepEmbedding time_embedding{nullptr};
  torch::nn::ModuleList down_blocks, up_blocks;
  MidBlock2DCrossAttn mid_block{nullptr};
  GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(UNet2DConditionModel);

// Scope of cached text projections: caches on construction, clears on destruction (also when
// the run throws), so that a cached embedding never outlives the run that made it.
class TextProjectionCache {
 public:
  TextProjectionCache(UNet2DConditionModelImpl& unet, const std::vector<torch::Tensor>& context_rows) : unet_(unet) {
    unet_.cache_text_projections(context_rows);
  }
  ~TextProjectionCache() { unet_.clear_text_projections(); }
  TextProjectionCache(const TextProjectionCache&) = delete;
  TextProjectionCache& operator=(const TextProjectionCache&) = delete;

 private:
  UNet2DConditionModelImpl& unet_;
};

// Builds the UNet from `dir`/config.json and loads `dir`/diffusion_pytorch_model[.variant].safetensors.
UNet2DConditionModel load_unet(const std::string& dir, const std::string& variant = "");

}  // namespace anomalysd

// AutoencoderKL — port of diffusers v0.27 (Encoder, Decoder, DiagonalGaussianDistribution).
// `scaling_factor` is read from the config but applied by the caller, as in diffusers.
//
// Legend: B batch, C channels, H×W image size, h×w = H/8×W/8 latent size, Z latent channels.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "anomalysd/models/blocks.h"

namespace anomalysd {

struct VaeConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  int64_t latent_channels = 4;
  std::vector<int64_t> block_out_channels;
  int64_t layers_per_block = 2;
  int64_t norm_num_groups = 32;
  int64_t sample_size = 512;
  double scaling_factor = 0.18215;

  static VaeConfig from_json(const std::string& path);
};

struct VaeMidBlockImpl : torch::nn::Module {  // UNetMidBlock2D: resnet, spatial self-attention, resnet
  VaeMidBlockImpl(int64_t channels, int64_t groups);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::ModuleList resnets, attentions;
};
TORCH_MODULE(VaeMidBlock);

struct VaeEncoderImpl : torch::nn::Module {
  explicit VaeEncoderImpl(const VaeConfig& c);
  torch::Tensor forward(const torch::Tensor& x);  // [B, C, H, W] -> [B, 2Z, h, w]
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks;
  VaeMidBlock mid_block{nullptr};
  GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(VaeEncoder);

struct VaeDecoderImpl : torch::nn::Module {
  explicit VaeDecoderImpl(const VaeConfig& c);
  torch::Tensor forward(const torch::Tensor& z);  // [B, Z, h, w] -> [B, C, H, W]
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList up_blocks;
  VaeMidBlock mid_block{nullptr};
  GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(VaeDecoder);

struct LatentPosterior {  // DiagonalGaussianDistribution
  torch::Tensor mean, logvar, std;
  torch::Tensor sample(c10::optional<torch::Generator> generator = c10::nullopt) const;
};

struct AutoencoderKLImpl : torch::nn::Module {
  explicit AutoencoderKLImpl(VaeConfig config);
  LatentPosterior encode(const torch::Tensor& image);  // image in [-1, 1]
  torch::Tensor decode(const torch::Tensor& z);             // unscaled latent -> image in ~[-1, 1]

  VaeConfig config;
  VaeEncoder encoder{nullptr};
  VaeDecoder decoder{nullptr};
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};
};
TORCH_MODULE(AutoencoderKL);

// Hub SD VAEs older than diffusers 0.15 name the mid-block attention query/key/value/proj_attn.
std::string vae_legacy_key(const std::string& key);

AutoencoderKL load_vae(const std::string& dir, const std::string& variant = "");

}  // namespace anomalysd

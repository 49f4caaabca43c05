// Port of diffusers v0.27 models/autoencoders/{autoencoder_kl.py, vae.py} and the
// DownEncoderBlock2D / UpDecoderBlock2D / UNetMidBlock2D blocks.
#include "anomalysd/models/vae.h"

#include <cstring>
#include <filesystem>

#include "anomalysd/io/errors.h"
#include "anomalysd/models/json_config.h"
#include "anomalysd/models/weights.h"

namespace anomalysd {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

namespace {
constexpr double kVaeEps = 1e-6;  // every GroupNorm of the VAE

// DownEncoderBlock2D / UpDecoderBlock2D: resnets (no time embedding) and a resampler.
struct VaeLevelImpl : nn::Module {
  VaeLevelImpl(int64_t in_channels, int64_t out_channels, int64_t layers, int64_t groups, bool down, bool add_resampler) {
    resnets = register_module("resnets", nn::ModuleList());
    for (int64_t i = 0; i < layers; ++i)
      resnets->push_back(ResnetBlock2D(i == 0 ? in_channels : out_channels, out_channels, 0, groups, kVaeEps));
    if (add_resampler && down) downsamplers = register_module("downsamplers", nn::ModuleList(Downsample2D(out_channels, 0)));
    if (add_resampler && !down) upsamplers = register_module("upsamplers", nn::ModuleList(Upsample2D(out_channels)));
  }
  torch::Tensor forward(torch::Tensor x) {
    for (const auto& r : *resnets) x = r->as<ResnetBlock2DImpl>()->forward(x);
    if (downsamplers) x = downsamplers[0]->as<Downsample2DImpl>()->forward(x);
    if (upsamplers) x = upsamplers[0]->as<Upsample2DImpl>()->forward(x);
    return x;
  }
  nn::ModuleList resnets, downsamplers{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(VaeLevel);
}  // namespace

VaeMidBlockImpl::VaeMidBlockImpl(int64_t channels, int64_t groups) {
  resnets = register_module("resnets", nn::ModuleList(ResnetBlock2D(channels, channels, 0, groups, kVaeEps),
                                                      ResnetBlock2D(channels, channels, 0, groups, kVaeEps)));
  // One head spanning all channels, biased projections, GroupNorm before and a residual after.
  AttentionOptions o;
  o.query_dim = channels;
  o.heads = 1;
  o.head_dim = channels;
  o.qkv_bias = true;
  o.upcast = true;
  o.norm_groups = groups;
  o.norm_eps = kVaeEps;
  attentions = register_module("attentions", nn::ModuleList(Attention(o)));
}

torch::Tensor VaeMidBlockImpl::forward(torch::Tensor x) {
  x = resnets[0]->as<ResnetBlock2DImpl>()->forward(x);
  x = attentions[0]->as<AttentionImpl>()->forward_spatial(x);
  return resnets[1]->as<ResnetBlock2DImpl>()->forward(x);
}

VaeEncoderImpl::VaeEncoderImpl(const VaeConfig& c) {
  const auto& ch = c.block_out_channels;
  conv_in = register_module("conv_in", nn::Conv2d(nn::Conv2dOptions(c.in_channels, ch[0], 3).padding(1)));
  down_blocks = register_module("down_blocks", nn::ModuleList());
  int64_t out = ch[0];
  for (std::size_t i = 0; i < ch.size(); ++i) {
    const int64_t in = out;
    out = ch[i];
    down_blocks->push_back(VaeLevel(in, out, c.layers_per_block, c.norm_num_groups, true, i + 1 < ch.size()));
  }
  mid_block = register_module("mid_block", VaeMidBlock(ch.back(), c.norm_num_groups));
  conv_norm_out = register_module("conv_norm_out", GroupNorm(nn::GroupNormOptions(c.norm_num_groups, ch.back()).eps(kVaeEps)));
  conv_out = register_module("conv_out", nn::Conv2d(nn::Conv2dOptions(ch.back(), 2 * c.latent_channels, 3).padding(1)));
}

torch::Tensor VaeEncoderImpl::forward(const torch::Tensor& image) {
  torch::Tensor x = conv_in(image);
  for (const auto& b : *down_blocks) x = b->as<VaeLevelImpl>()->forward(x);
  x = mid_block(x);
  return conv_out(F::silu(conv_norm_out(x)));
}

VaeDecoderImpl::VaeDecoderImpl(const VaeConfig& c) {
  const auto& ch = c.block_out_channels;
  conv_in = register_module("conv_in", nn::Conv2d(nn::Conv2dOptions(c.latent_channels, ch.back(), 3).padding(1)));
  mid_block = register_module("mid_block", VaeMidBlock(ch.back(), c.norm_num_groups));
  up_blocks = register_module("up_blocks", nn::ModuleList());
  int64_t out = ch.back();
  for (std::size_t i = 0; i < ch.size(); ++i) {
    const int64_t prev = out;
    out = ch[ch.size() - 1 - i];
    // The decoder has one more resnet per level than the encoder.
    up_blocks->push_back(VaeLevel(prev, out, c.layers_per_block + 1, c.norm_num_groups, false, i + 1 < ch.size()));
  }
  conv_norm_out = register_module("conv_norm_out", GroupNorm(nn::GroupNormOptions(c.norm_num_groups, ch[0]).eps(kVaeEps)));
  conv_out = register_module("conv_out", nn::Conv2d(nn::Conv2dOptions(ch[0], c.out_channels, 3).padding(1)));
}

torch::Tensor VaeDecoderImpl::forward(const torch::Tensor& z) {
  torch::Tensor x = mid_block(conv_in(z));
  for (const auto& b : *up_blocks) x = b->as<VaeLevelImpl>()->forward(x);
  return conv_out(F::silu(conv_norm_out(x)));
}

torch::Tensor LatentPosterior::sample(c10::optional<torch::Generator> generator) const {
  return mean + std * at::randn(mean.sizes(), generator, mean.options());
}

AutoencoderKLImpl::AutoencoderKLImpl(VaeConfig c) : config(std::move(c)) {
  encoder = register_module("encoder", VaeEncoder(config));
  decoder = register_module("decoder", VaeDecoder(config));
  const int64_t z = config.latent_channels;
  quant_conv = register_module("quant_conv", nn::Conv2d(nn::Conv2dOptions(2 * z, 2 * z, 1)));
  post_quant_conv = register_module("post_quant_conv", nn::Conv2d(nn::Conv2dOptions(z, z, 1)));
}

LatentPosterior AutoencoderKLImpl::encode(const torch::Tensor& image) {
  if (image.dim() != 4 || image.size(1) != config.in_channels)
    throw ShapeError("vae: image must be [B, " + std::to_string(config.in_channels) + ", H, W]");
  const auto moments = quant_conv->forward(encoder->forward(image)).chunk(2, 1);
  LatentPosterior p;
  p.mean = moments[0].contiguous();  // NCHW, also when the weights are channels-last
  p.logvar = moments[1].clamp(-30.0, 20.0).contiguous();
  p.std = (0.5 * p.logvar).exp();
  return p;
}

torch::Tensor AutoencoderKLImpl::decode(const torch::Tensor& z) {
  if (z.dim() != 4 || z.size(1) != config.latent_channels)
    throw ShapeError("vae: latent must be [B, " + std::to_string(config.latent_channels) + ", h, w]");
  return decoder(post_quant_conv(z)).contiguous();
}

std::string vae_legacy_key(const std::string& key) {
  static const std::pair<const char*, const char*> kRenames[] = {
      {".query.", ".to_q."}, {".key.", ".to_k."}, {".value.", ".to_v."}, {".proj_attn.", ".to_out.0."}};
  if (key.find(".attentions.") == std::string::npos) return key;
  for (const auto& [from, to] : kRenames) {
    const auto pos = key.find(from);
    if (pos != std::string::npos) return key.substr(0, pos) + to + key.substr(pos + std::strlen(from));
  }
  return key;
}

AutoencoderKL load_vae(const std::string& dir, const std::string& variant) {
  AutoencoderKL vae(VaeConfig::from_json((std::filesystem::path(dir) / "config.json").string()));
  WeightLoadOptions options;
  options.rename = vae_legacy_key;
  load_weights(*vae, find_weight_files(dir, "diffusion_pytorch_model", variant), options);
  vae->eval();
  return vae;
}

}  // namespace anomalysd

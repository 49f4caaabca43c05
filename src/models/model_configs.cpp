// The config.json readers of the model families (diffusers / transformers formats), apart from the
// models: parsing untrusted files is all they do, so the fuzz targets (tests/fuzz) build them alone.
#include <cmath>
#include <filesystem>

#include "anomalysd/io/errors.h"
#include "anomalysd/models/clip_text.h"
#include "anomalysd/models/ddim.h"
#include "anomalysd/models/json_config.h"
#include "anomalysd/models/unet.h"
#include "anomalysd/models/vae.h"

namespace anomalysd {

namespace {

// Sizes outside these ranges are errors naming the key, before any module is built from them.
constexpr int64_t kMaxWidth = 65536;  // channels, hidden sizes
void check(JsonConfig& j, const std::string& key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi)
    j.fail(key, std::to_string(v) + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}
void check(JsonConfig& j, const std::string& key, const std::vector<int64_t>& values, int64_t lo, int64_t hi) {
  for (int64_t v : values) check(j, key, v, lo, hi);
}
void check_positive(JsonConfig& j, const std::string& key, double v) {
  if (!(v > 0.0) || !std::isfinite(v)) j.fail(key, "must be a positive finite number");
}
// GroupNorm needs the group count to divide every width it normalises.
void check_groups(JsonConfig& j, const std::string& key, int64_t groups, const std::vector<int64_t>& widths) {
  check(j, key, groups, 1, kMaxWidth);
  for (int64_t w : widths)
    if (w % groups != 0) j.fail(key, std::to_string(groups) + " groups do not divide " + std::to_string(w) + " channels");
}

}  // namespace

UNetConfig UNetConfig::from_json(const std::string& path) {
  JsonConfig j = JsonConfig::load(path);
  UNetConfig c;
  c.in_channels = j.get_int("in_channels", 4);
  c.out_channels = j.get_int("out_channels", 4);
  c.block_out_channels = j.require_int_list("block_out_channels");
  c.down_block_types = j.require_string_list("down_block_types");
  c.up_block_types = j.require_string_list("up_block_types");
  const std::size_t n = c.block_out_channels.size();
  if (c.down_block_types.size() != n || c.up_block_types.size() != n)
    j.fail("down_block_types", "down/up block types and block_out_channels must have the same length");
  for (const auto& t : c.down_block_types)
    if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D") j.fail("down_block_types", "unsupported block '" + t + "'");
  for (const auto& t : c.up_block_types)
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D") j.fail("up_block_types", "unsupported block '" + t + "'");
  c.layers_per_block = j.get_int_per_block("layers_per_block", n, 2);
  c.attention_heads = j.get_int_per_block("attention_head_dim", n, 8);
  if (j.has("num_attention_heads")) c.attention_heads = j.get_int_per_block("num_attention_heads", n, 8);
  j.ignore({"num_attention_heads"});
  c.cross_attention_dim = j.get_int("cross_attention_dim", 1280);
  c.norm_num_groups = j.get_int("norm_num_groups", 32);
  c.norm_eps = j.get_double("norm_eps", 1e-5);
  c.flip_sin_to_cos = j.get_bool("flip_sin_to_cos", true);
  c.freq_shift = j.get_int("freq_shift", 0);
  c.use_linear_projection = j.get_bool("use_linear_projection", false);
  c.upcast_attention = j.get_bool("upcast_attention", false);
  c.downsample_padding = j.get_int("downsample_padding", 1);
  c.sample_size = j.get_int("sample_size", 64);
  check(j, "in_channels", c.in_channels, 1, 1024);
  check(j, "out_channels", c.out_channels, 1, 1024);
  check(j, "block_out_channels", c.block_out_channels, 1, kMaxWidth);
  check(j, "layers_per_block", c.layers_per_block, 1, 64);
  check(j, "attention_head_dim", c.attention_heads, 1, kMaxWidth);
  check(j, "cross_attention_dim", c.cross_attention_dim, 1, kMaxWidth);
  check_groups(j, "norm_num_groups", c.norm_num_groups, c.block_out_channels);
  check_positive(j, "norm_eps", c.norm_eps);
  check(j, "freq_shift", c.freq_shift, 0, c.block_out_channels[0] / 2 - 1);
  check(j, "downsample_padding", c.downsample_padding, 0, 1);
  check(j, "sample_size", c.sample_size, 1, kMaxWidth);
  for (std::size_t i = 0; i < n; ++i)
    if (c.attention_heads[i] <= 0 || c.block_out_channels[i] % c.attention_heads[i] != 0)
      j.fail("attention_head_dim", "block " + std::to_string(i) + ": " + std::to_string(c.block_out_channels[i]) +
                                       " channels do not split into " + std::to_string(c.attention_heads[i]) + " heads");

  // Features of the wider diffusers family that SD does not use: accepted at their defaults only.
  j.expect("act_fn", "silu");
  j.expect("center_input_sample", false);
  j.expect("mid_block_scale_factor", 1);
  j.expect("mid_block_type", "UNetMidBlock2DCrossAttn");
  j.expect("transformer_layers_per_block", 1);
  j.expect("dual_cross_attention", false);
  j.expect("only_cross_attention", false);
  j.expect("time_embedding_type", "positional");
  j.expect("resnet_time_scale_shift", "default");
  j.expect("resnet_skip_time_act", false);
  j.expect("resnet_out_scale_factor", 1.0);
  j.expect("conv_in_kernel", 3);
  j.expect("conv_out_kernel", 3);
  j.expect("class_embeddings_concat", false);
  j.expect("attention_type", "default");
  for (const char* k : {"class_embed_type", "addition_embed_type", "addition_time_embed_dim", "encoder_hid_dim",
                        "encoder_hid_dim_type", "time_cond_proj_dim", "time_embedding_dim", "time_embedding_act_fn",
                        "timestep_post_act", "projection_class_embeddings_input_dim", "num_class_embeds",
                        "mid_block_only_cross_attention", "cross_attention_norm", "reverse_transformer_layers_per_block"})
    j.expect(k, nullptr);
  j.ignore({"dropout", "addition_embed_type_num_heads"});  // dropout: inference only; heads: unused without addition_embed
  j.finish();
  return c;
}

VaeConfig VaeConfig::from_json(const std::string& path) {
  JsonConfig j = JsonConfig::load(path);
  VaeConfig c;
  c.in_channels = j.get_int("in_channels", 3);
  c.out_channels = j.get_int("out_channels", 3);
  c.latent_channels = j.get_int("latent_channels", 4);
  c.block_out_channels = j.require_int_list("block_out_channels");
  const auto down = j.require_string_list("down_block_types");
  const auto up = j.require_string_list("up_block_types");
  if (down.size() != c.block_out_channels.size() || up.size() != c.block_out_channels.size())
    j.fail("down_block_types", "block types and block_out_channels must have the same length");
  for (const auto& t : down)
    if (t != "DownEncoderBlock2D") j.fail("down_block_types", "unsupported block '" + t + "'");
  for (const auto& t : up)
    if (t != "UpDecoderBlock2D") j.fail("up_block_types", "unsupported block '" + t + "'");
  c.layers_per_block = j.get_int("layers_per_block", 1);
  c.norm_num_groups = j.get_int("norm_num_groups", 32);
  c.sample_size = j.get_int("sample_size", 512);
  c.scaling_factor = j.get_double("scaling_factor", 0.18215);  // neither SD VAE config states it
  check(j, "in_channels", c.in_channels, 1, 1024);
  check(j, "out_channels", c.out_channels, 1, 1024);
  check(j, "latent_channels", c.latent_channels, 1, 1024);
  check(j, "block_out_channels", c.block_out_channels, 1, kMaxWidth);
  check(j, "layers_per_block", c.layers_per_block, 1, 64);
  check_groups(j, "norm_num_groups", c.norm_num_groups, c.block_out_channels);
  check(j, "sample_size", c.sample_size, 1, kMaxWidth);
  check_positive(j, "scaling_factor", c.scaling_factor);
  j.expect("act_fn", "silu");
  j.expect("latents_mean", nullptr);
  j.expect("latents_std", nullptr);
  j.expect("shift_factor", nullptr);
  j.expect("use_quant_conv", true);
  j.expect("use_post_quant_conv", true);
  j.expect("mid_block_add_attention", true);
  j.ignore({"force_upcast"});  // a dtype hint for fp16 pipelines; we choose dtypes explicitly
  j.finish();
  return c;
}

ClipTextConfig ClipTextConfig::from_json(const std::string& path) {
  JsonConfig j = JsonConfig::load(path);
  ClipTextConfig c;
  c.vocab_size = j.get_int("vocab_size", c.vocab_size);
  c.hidden_size = j.get_int("hidden_size", c.hidden_size);
  c.intermediate_size = j.get_int("intermediate_size", c.intermediate_size);
  c.num_hidden_layers = j.get_int("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = j.get_int("num_attention_heads", c.num_attention_heads);
  c.max_position_embeddings = j.get_int("max_position_embeddings", c.max_position_embeddings);
  c.layer_norm_eps = j.get_double("layer_norm_eps", c.layer_norm_eps);
  c.hidden_act = j.get_string("hidden_act", c.hidden_act);
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu")
    j.fail("hidden_act", "unsupported activation '" + c.hidden_act + "' (quick_gelu or gelu)");
  check(j, "vocab_size", c.vocab_size, 1, 10'000'000);
  check(j, "hidden_size", c.hidden_size, 1, kMaxWidth);
  check(j, "intermediate_size", c.intermediate_size, 1, 4 * kMaxWidth);
  check(j, "num_hidden_layers", c.num_hidden_layers, 0, 1024);
  check(j, "num_attention_heads", c.num_attention_heads, 1, kMaxWidth);
  check(j, "max_position_embeddings", c.max_position_embeddings, 1, 100'000);
  check_positive(j, "layer_norm_eps", c.layer_norm_eps);
  if (c.hidden_size % c.num_attention_heads != 0) j.fail("num_attention_heads", "does not divide hidden_size");
  c.eos_token_id = j.get_int("eos_token_id", 2);
  j.expect("model_type", "clip_text_model");
  // Training-time and bookkeeping fields; the tokenizer's ids, not these, matter.
  j.ignore({"architectures", "attention_dropout", "dropout", "bos_token_id", "pad_token_id", "initializer_factor",
            "initializer_range", "projection_dim", "torch_dtype", "transformers_version"});
  j.finish();
  return c;
}

DdimConfig DdimConfig::from_json(const std::string& path) {
  JsonConfig j = JsonConfig::load(path);
  DdimConfig c;
  c.source_class = j.get_string("_class_name", "DDIMScheduler");
  c.num_train_timesteps = j.get_int("num_train_timesteps", c.num_train_timesteps);
  c.beta_start = j.get_double("beta_start", c.beta_start);
  c.beta_end = j.get_double("beta_end", c.beta_end);
  c.beta_schedule = j.get_string("beta_schedule", c.beta_schedule);
  if (c.beta_schedule != "scaled_linear" && c.beta_schedule != "linear")
    j.fail("beta_schedule", "unsupported schedule '" + c.beta_schedule + "' (scaled_linear or linear)");
  c.set_alpha_to_one = j.get_bool("set_alpha_to_one", c.set_alpha_to_one);
  c.steps_offset = j.get_int("steps_offset", 0);
  c.prediction_type = j.get_string("prediction_type", c.prediction_type);
  if (c.prediction_type != "epsilon" && c.prediction_type != "v_prediction")
    j.fail("prediction_type", "unsupported '" + c.prediction_type + "' (epsilon or v_prediction)");
  check(j, "num_train_timesteps", c.num_train_timesteps, 1, 100'000);
  if (!(c.beta_start > 0 && c.beta_start < 1)) j.fail("beta_start", "must be in (0, 1)");
  if (!(c.beta_end > 0 && c.beta_end < 1 && c.beta_end >= c.beta_start)) j.fail("beta_end", "must be in [beta_start, 1)");
  check(j, "steps_offset", c.steps_offset, 0, c.num_train_timesteps - 1);
  c.timestep_spacing = j.get_string("timestep_spacing", c.timestep_spacing);
  if (c.timestep_spacing != "leading" && c.timestep_spacing != "trailing" && c.timestep_spacing != "linspace")
    j.fail("timestep_spacing", "unsupported '" + c.timestep_spacing + "'");
  j.expect("trained_betas", nullptr);
  j.expect("clip_sample", false);
  j.expect("thresholding", false);
  j.expect("rescale_betas_zero_snr", false);
  // Options of the other SD scheduler classes (PNDM's skip_prk_steps, ...) and DDIM's inactive
  // clipping settings do not change DDIM sampling.
  j.ignore({"skip_prk_steps", "clip_sample_range", "sample_max_value", "dynamic_thresholding_ratio"});
  j.finish();
  return c;
}

}  // namespace anomalysd

// CLIPTextModel — port of transformers v4.33 (text tower only): token + position embeddings,
// pre-LN transformer layers with a causal mask, final layer norm.
//
// Legend: B batch, L tokens (77), E hidden width.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "anomalysd/models/norms.h"

namespace anomalysd {

struct ClipTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t max_position_embeddings = 77;
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "quick_gelu";  // quick_gelu (SD1) | gelu (SD2, exact erf)
  int64_t eos_token_id = 2;               // 2: pool at argmax(ids) (transformers' legacy rule)

  static ClipTextConfig from_json(const std::string& path);
};

struct ClipAttentionImpl : torch::nn::Module {
  ClipAttentionImpl(int64_t hidden, int64_t heads);
  torch::Tensor forward(const torch::Tensor& x);  // causal self-attention, [B, L, E]
  int64_t heads;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(ClipAttention);

struct ClipMlpImpl : torch::nn::Module {
  ClipMlpImpl(int64_t hidden, int64_t intermediate, std::string act);
  torch::Tensor forward(const torch::Tensor& x);
  std::string act;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(ClipMlp);

struct ClipEncoderLayerImpl : torch::nn::Module {
  explicit ClipEncoderLayerImpl(const ClipTextConfig& c);
  torch::Tensor forward(const torch::Tensor& x);
  ClipAttention self_attn{nullptr};
  LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  ClipMlp mlp{nullptr};
};
TORCH_MODULE(ClipEncoderLayer);

struct ClipTextOutput {
  torch::Tensor last_hidden_state;           // [B, L, E], after final_layer_norm
  torch::Tensor pooler_output;               // [B, E], the eos token's row
  std::vector<torch::Tensor> hidden_states;  // embeddings, then after each layer (when requested)
};

// Holds the weights under transformers' names: text_model.embeddings..., text_model.encoder.layers.N...
struct ClipTextModelImpl : torch::nn::Module {
  explicit ClipTextModelImpl(ClipTextConfig config);
  ClipTextOutput forward(const torch::Tensor& input_ids, bool keep_hidden_states = false);

  ClipTextConfig config;
  torch::nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};
  torch::nn::ModuleList layers;
  LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(ClipTextModel);

// `dir`/config.json + model[.variant].safetensors (a diffusers `text_encoder/` folder).
ClipTextModel load_clip_text(const std::string& dir, const std::string& variant = "");

}  // namespace anomalysd

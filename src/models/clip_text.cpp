// Port of transformers v4.33 models/clip/modeling_clip.py: CLIPTextTransformer.
#include "anomalysd/models/clip_text.h"

#include <filesystem>

#include "anomalysd/io/errors.h"
#include "anomalysd/models/blocks.h"
#include "anomalysd/models/json_config.h"
#include "anomalysd/models/weights.h"

namespace anomalysd {

namespace nn = torch::nn;

ClipAttentionImpl::ClipAttentionImpl(int64_t hidden, int64_t h) : heads(h) {
  q_proj = register_module("q_proj", nn::Linear(hidden, hidden));
  k_proj = register_module("k_proj", nn::Linear(hidden, hidden));
  v_proj = register_module("v_proj", nn::Linear(hidden, hidden));
  out_proj = register_module("out_proj", nn::Linear(hidden, hidden));
}

torch::Tensor ClipAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t b = x.size(0), l = x.size(1), e = x.size(2), d = e / heads;
  auto split = [&](const torch::Tensor& t) { return t.view({b, l, heads, d}).transpose(1, 2); };  // [B, h, L, D]
  const torch::Tensor out = anomalysd::scaled_dot_product_attention(split(linear(q_proj, x)), split(linear(k_proj, x)), split(linear(v_proj, x)),
                                                         /*upcast=*/false, /*causal=*/true);
  return linear(out_proj, out.transpose(1, 2).reshape({b, l, e}));
}

ClipMlpImpl::ClipMlpImpl(int64_t hidden, int64_t intermediate, std::string a) : act(std::move(a)) {
  fc1 = register_module("fc1", nn::Linear(hidden, intermediate));
  fc2 = register_module("fc2", nn::Linear(intermediate, hidden));
}

torch::Tensor ClipMlpImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = linear(fc1, x);
  h = act == "quick_gelu" ? h * torch::sigmoid(1.702 * h) : torch::gelu(h);
  return linear(fc2, h);
}

ClipEncoderLayerImpl::ClipEncoderLayerImpl(const ClipTextConfig& c) {
  self_attn = register_module("self_attn", ClipAttention(c.hidden_size, c.num_attention_heads));
  layer_norm1 = register_module("layer_norm1", LayerNorm(nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
  mlp = register_module("mlp", ClipMlp(c.hidden_size, c.intermediate_size, c.hidden_act));
  layer_norm2 = register_module("layer_norm2", LayerNorm(nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
}

torch::Tensor ClipEncoderLayerImpl::forward(const torch::Tensor& x) {
  const torch::Tensor h = x + self_attn(layer_norm1(x));
  return h + mlp(layer_norm2(h));
}

ClipTextModelImpl::ClipTextModelImpl(ClipTextConfig c) : config(std::move(c)) {
  // Registered under the checkpoint's nesting: text_model.{embeddings, encoder.layers, final_layer_norm}.
  auto text_model = register_module("text_model", std::make_shared<nn::Module>());
  auto embeddings = text_model->register_module("embeddings", std::make_shared<nn::Module>());
  token_embedding = embeddings->register_module("token_embedding", nn::Embedding(config.vocab_size, config.hidden_size));
  position_embedding =
      embeddings->register_module("position_embedding", nn::Embedding(config.max_position_embeddings, config.hidden_size));
  auto encoder = text_model->register_module("encoder", std::make_shared<nn::Module>());
  layers = encoder->register_module("layers", nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) layers->push_back(ClipEncoderLayer(config));
  final_layer_norm = text_model->register_module(
      "final_layer_norm", LayerNorm(nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps)));
}

ClipTextOutput ClipTextModelImpl::forward(const torch::Tensor& input_ids, bool keep_hidden_states) {
  if (input_ids.dim() != 2 || input_ids.size(1) > config.max_position_embeddings)
    throw ShapeError("clip text: input_ids must be [B, L<=" + std::to_string(config.max_position_embeddings) + "]");
  const torch::Tensor ids = input_ids.to(torch::kLong).to(token_embedding->weight.device());
  const torch::Tensor positions = torch::arange(ids.size(1), ids.options());
  ClipTextOutput out;
  torch::Tensor h = token_embedding(ids) + position_embedding(positions).unsqueeze(0);  // [B, L, E]
  if (keep_hidden_states) out.hidden_states.push_back(h);
  for (const auto& layer : *layers) {
    h = layer->as<ClipEncoderLayerImpl>()->forward(h);
    if (keep_hidden_states) out.hidden_states.push_back(h);
  }
  out.last_hidden_state = final_layer_norm(h);
  // Pooled = the end-of-text row. transformers' legacy rule (eos_token_id == 2 in old configs) takes
  // argmax(ids), i.e. the first highest id (<|endoftext|> is the largest); otherwise the first eos.
  const torch::Tensor eos_index = config.eos_token_id == 2 ? ids.argmax(-1) : (ids == config.eos_token_id).to(torch::kInt).argmax(-1);
  out.pooler_output = out.last_hidden_state.index({torch::arange(ids.size(0), ids.options()), eos_index});
  return out;
}

ClipTextModel load_clip_text(const std::string& dir, const std::string& variant) {
  ClipTextModel model(ClipTextConfig::from_json((std::filesystem::path(dir) / "config.json").string()));
  WeightLoadOptions options;
  options.ignored_keys = {"text_model.embeddings.position_ids"};  // a non-persistent buffer in newer transformers
  load_weights(*model, find_weight_files(dir, "model", variant), options);
  model->eval();
  return model;
}

}  // namespace anomalysd

#include "anomalysd/models/weights.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/io/safetensors.h"
#include "anomalysd/io/tensor_io.h"

namespace anomalysd {

namespace {

std::string join_some(const std::vector<std::string>& names, std::size_t limit = 8) {
  std::string s;
  for (std::size_t i = 0; i < names.size() && i < limit; ++i) s += (i ? ", " : "") + ("'" + names[i] + "'");
  if (names.size() > limit) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}

}  // namespace

std::vector<std::string> find_weight_files(const std::string& dir, const std::string& base, const std::string& variant) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw FormatError(dir, "model folder not found");
  const std::string stem = base + (variant.empty() ? "" : "." + variant) + ".safetensors";
  const fs::path single = fs::path(dir) / stem;
  if (fs::is_regular_file(single)) return {single.string()};

  const fs::path index = fs::path(dir) / (stem + ".index.json");
  if (fs::is_regular_file(index)) {
    const nlohmann::json j = read_json_file(index.string());
    if (!j.contains("weight_map") || !j["weight_map"].is_object()) throw FormatError(index.string(), "lacks 'weight_map'");
    std::set<std::string> shards;
    for (const auto& [key, file] : j["weight_map"].items()) shards.insert(file.get<std::string>());
    std::vector<std::string> out;
    for (const auto& s : shards) out.push_back((fs::path(dir) / s).string());
    return out;
  }

  // As diffusers: a component without the requested variant falls back to its plain weights
  // (a fine-tuned folder saved as fp16 keeps the base's float32 text encoder, for example).
  if (!variant.empty()) {
    try {
      return find_weight_files(dir, base, "");
    } catch (const FormatError&) {
    }
  }

  std::string present;
  for (const auto& e : fs::directory_iterator(dir)) present += (present.empty() ? "" : ", ") + e.path().filename().string();
  std::string hint;
  if (present.find(".bin") != std::string::npos || present.find(".ckpt") != std::string::npos)
    hint = "; only PyTorch pickles are here — convert them with scripts/fetch_models.py (safetensors is the only format read)";
  else if (variant.empty() && present.find(".fp16.safetensors") != std::string::npos)
    hint = "; the folder has fp16 weights: pass --variant fp16 (or set variant: fp16)";
  throw FormatError(dir, "no '" + stem + "' (folder holds: " + (present.empty() ? "nothing" : present) + ")" + hint);
}

void load_weights(torch::nn::Module& module, const std::vector<std::string>& files, const WeightLoadOptions& options) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : module.named_parameters(true)) targets.emplace(p.key(), p.value());
  for (const auto& b : module.named_buffers(true)) targets.emplace(b.key(), b.value());

  const std::set<std::string> ignored(options.ignored_keys.begin(), options.ignored_keys.end());
  std::set<std::string> loaded;
  std::vector<std::string> unexpected;
  torch::NoGradGuard no_grad;
  for (const std::string& path : files) {
    const SafetensorsFile file = SafetensorsFile::open(path);
    for (const TensorInfo& info : file.tensors()) {
      if (ignored.count(info.name)) continue;
      const std::string key = options.rename ? options.rename(info.name) : info.name;
      const auto it = targets.find(key);
      if (it == targets.end()) {
        unexpected.push_back(info.name);
        continue;
      }
      if (!loaded.insert(key).second) throw FormatError(path, "'" + info.name + "': given twice (in several files or under two names)");
      torch::Tensor& target = it->second;
      torch::Tensor source = load_tensor(file, info.name, target.device(), target.scalar_type());
      // Old checkpoints store attention projections as 1x1 convolutions: [C, C, 1, 1] for [C, C].
      if (source.dim() == 4 && target.dim() == 2 && source.size(2) == 1 && source.size(3) == 1)
        source = source.flatten(1);
      if (source.sizes() != target.sizes())
        throw FormatError(path, "'" + info.name + "': expected " + format_shape(target.sizes().vec()) + ", got " +
                                    format_shape(source.sizes().vec()));
      target.copy_(source);
    }
  }
  const std::string where = files.size() == 1 ? files[0] : files.empty() ? std::string("<no files>") : files[0] + " (+ shards)";
  if (!unexpected.empty()) throw FormatError(where, "unexpected tensors not in the model: " + join_some(unexpected));
  std::vector<std::string> missing;
  for (const auto& [key, t] : targets)
    if (!loaded.count(key)) missing.push_back(key);
  if (!missing.empty()) throw FormatError(where, "missing tensors: " + join_some(missing));
}

NamedTensors module_tensors(torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& p : module.named_parameters(true)) out.emplace_back(p.key(), p.value().detach().contiguous());
  for (const auto& b : module.named_buffers(true)) out.emplace_back(b.key(), b.value().detach().contiguous());
  return out;
}

}  // namespace anomalysd

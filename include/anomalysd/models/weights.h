// Strict weight loading: module parameter/buffer names are the checkpoint's keys, so loading is a
// lookup. Missing, unexpected and mis-shaped tensors are errors naming file and key.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "anomalysd/io/tensor_io.h"

namespace anomalysd {

struct WeightLoadOptions {
  // Keys that may be present in a file and carry nothing we need (e.g. CLIP's position_ids).
  std::vector<std::string> ignored_keys;
  // Maps a file key to the module's key (legacy names); identity when empty.
  std::function<std::string(const std::string&)> rename;
};

// The safetensors files of one component: "<base>[.<variant>].safetensors", or the shards listed in
// "<base>[.<variant>].safetensors.index.json". Errors list what the folder holds instead.
std::vector<std::string> find_weight_files(const std::string& dir, const std::string& base, const std::string& variant);

// Copies every tensor into the module (converting dtype to the parameter's), after checking that
// the files hold exactly the module's parameters and buffers with the right shapes.
void load_weights(torch::nn::Module& module, const std::vector<std::string>& files, const WeightLoadOptions& options = {});

// The module's state dict (parameters, then buffers, under their state-dict names), detached and
// contiguous: what save_safetensors writes and load_weights reads back.
NamedTensors module_tensors(torch::nn::Module& module);

}  // namespace anomalysd

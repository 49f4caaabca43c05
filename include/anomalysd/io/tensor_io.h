// Tensors in and out of safetensors files, the only weight format the project reads or writes.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "anomalysd/io/safetensors.h"

namespace anomalysd {

c10::ScalarType to_scalar_type(StDtype dtype);
StDtype to_st_dtype(c10::ScalarType type);  // throws std::invalid_argument for unsupported types

// Copies one tensor out of the mapping onto `device`, converting to `dtype` when given.
at::Tensor load_tensor(const SafetensorsFile& file, const std::string& name,
                       c10::Device device = c10::Device(c10::kCPU),
                       std::optional<c10::ScalarType> dtype = std::nullopt);

// Every tensor of a file, by name.
std::map<std::string, at::Tensor> load_all(const std::string& path,
                                           c10::Device device = c10::Device(c10::kCPU),
                                           std::optional<c10::ScalarType> dtype = std::nullopt);

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes tensors (any device, made contiguous) and metadata. The bytes go to a temporary file
// beside `path` that is renamed over it only when complete, so a crash never leaves a
// half-written file under the final name. Duplicate or empty names are errors.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace anomalysd

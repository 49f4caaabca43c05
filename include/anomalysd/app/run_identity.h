// What makes two runs the same: the identity that `eval` and `infer` compare when they resume, and
// that a calibration carries so that it is only applied to the model and config it measured.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "anomalysd/core/app_config.h"

namespace anomalysd {

// The config as it determines the maps, down to their last bits: the method's keys, the mask
// batch (batched GEMMs round differently), and the numeric setup (device type, dtype, the CPU
// GEMM and attention kernel actually used, LibTorch). Only the thread count and the device's
// index may change between a run and its resume.
nlohmann::json config_identity(AppConfig config);

// The entries of two identities that differ, for a refusal's message ("model '/a' -> '/b',
// 'strength: 0.3'"): the changed YAML lines of a config identity, other keys by name and value.
std::string identity_differences(const nlohmann::json& before, const nlohmann::json& now);

// The identity of a set of images by content (pixel hashes, sorted): the same shots under any
// name, folder or format. Reads every file (InputError naming an unreadable one).
std::vector<std::string> image_set_identity(const std::vector<std::string>& paths);

}  // namespace anomalysd

// The `distributed` section of the config (core/distributed.h runs it). Torch-free.
#pragma once

#include <string>

#include "anomalysd/io/config.h"

namespace anomalysd {

struct DistributedConfig {
  std::string backend = "auto";  // auto (NCCL on CUDA, Gloo on CPU) | gloo | nccl
  double timeout_s = 600;        // a collective's limit, and how long a silent rank may stay silent

  // Reads the keys `backend` and `timeout_s` of the `distributed` section.
  static DistributedConfig from_config(ConfigSection& section);
};

}  // namespace anomalysd

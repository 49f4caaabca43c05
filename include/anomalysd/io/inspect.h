// What `anomalysd inspect` shows of a safetensors file: a table for people, JSON for tools.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "anomalysd/io/safetensors.h"

namespace anomalysd {

std::string inspect_table(const SafetensorsFile& file);
nlohmann::json inspect_json(const SafetensorsFile& file);

}  // namespace anomalysd

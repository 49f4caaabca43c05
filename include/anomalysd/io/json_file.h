#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace anomalysd {

// Parses a JSON file; FormatError naming the file when it is missing or not valid JSON.
nlohmann::json read_json_file(const std::string& path);

}  // namespace anomalysd

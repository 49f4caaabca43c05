#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace anomalysd {

// Parses a JSON file; FormatError naming the file when it is missing or not valid JSON.
nlohmann::json read_json_file(const std::string& path);

// JSON text for files (indent 2) and for hashing (compact). File names need not be UTF-8 (Linux
// allows any bytes): invalid sequences become U+FFFD instead of throwing.
std::string json_text(const nlohmann::json& j);
std::string json_compact(const nlohmann::json& j);

}  // namespace anomalysd

#include "anomalysd/io/json_file.h"

#include <fstream>

#include "anomalysd/io/errors.h"

namespace anomalysd {

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw FormatError(path, "cannot open");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path, std::string("invalid JSON (") + e.what() + ")");
  }
}

std::string json_text(const nlohmann::json& j) { return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"; }

std::string json_compact(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

}  // namespace anomalysd

#include "anomalysd/io/inspect.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace anomalysd {

namespace {

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

}  // namespace

std::string inspect_table(const SafetensorsFile& file) {
  std::size_t name_w = 4, shape_w = 5;
  for (const auto& t : file.tensors()) {
    name_w = std::max(name_w, t.name.size());
    shape_w = std::max(shape_w, format_shape(t.shape).size());
  }
  std::ostringstream s;
  s << file.path() << ": " << file.tensors().size() << " tensors, " << human_bytes(file.file_size()) << "\n";
  char line[64];
  auto pad = [](const std::string& text, std::size_t width) { return text + std::string(width - text.size(), ' '); };
  s << pad("name", name_w) << "  dtype  " << pad("shape", shape_w) << "  bytes\n";
  uint64_t total_bytes = 0;
  int64_t total_elements = 0;
  for (const auto& t : file.tensors()) {
    std::snprintf(line, sizeof line, "%-5s", dtype_name(t.dtype));
    s << pad(t.name, name_w) << "  " << line << "  " << pad(format_shape(t.shape), shape_w) << "  " << t.nbytes() << "\n";
    total_bytes += t.nbytes();
    total_elements += t.numel();
  }
  s << "total: " << total_elements << " elements, " << total_bytes << " bytes (" << human_bytes(total_bytes) << ")\n";
  if (!file.metadata().empty()) {
    s << "metadata:\n";
    for (const auto& [k, v] : file.metadata()) s << "  " << k << ": " << v << "\n";
  }
  return s.str();
}

nlohmann::json inspect_json(const SafetensorsFile& file) {
  nlohmann::json tensors = nlohmann::json::array();
  uint64_t total_bytes = 0;
  for (const auto& t : file.tensors()) {
    tensors.push_back({{"name", t.name},
                       {"dtype", dtype_name(t.dtype)},
                       {"shape", t.shape},
                       {"bytes", t.nbytes()},
                       {"data_offsets", {t.begin, t.end}}});
    total_bytes += t.nbytes();
  }
  return {{"file", file.path()},
          {"file_bytes", file.file_size()},
          {"header_bytes", file.header_size()},
          {"tensor_bytes", total_bytes},
          {"metadata", file.metadata()},
          {"tensors", tensors}};
}

}  // namespace anomalysd

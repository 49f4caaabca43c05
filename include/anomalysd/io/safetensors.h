// safetensors reading (memory-mapped, fully validated) — torch-free, so that tools such as
// `anomalysd inspect` start fast. Tensor conversion lives in io/tensor_io.h.
//
// Format: u64 little-endian header length N, N bytes of JSON
//   {"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
// then the data section; offsets are relative to its start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace anomalysd {

enum class StDtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(StDtype dtype);     // "F32", ...
std::size_t dtype_size(StDtype dtype);     // bytes per element
StDtype parse_dtype(const std::string& name);  // throws std::invalid_argument for unknown names

// "[320, 9, 3, 3]", as error messages and `inspect` show shapes.
std::string format_shape(const std::vector<int64_t>& shape);

struct TensorInfo {
  std::string name;
  StDtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;

  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// Read-only view of one safetensors file. The file stays mapped while the object lives.
class SafetensorsFile {
 public:
  // Validates the whole header; throws FormatError naming the file (and tensor) on any defect.
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  uint64_t header_size() const { return header_size_; }
  uint64_t file_size() const;

  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws FormatError if absent
  // Tensors in name order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor's raw little-endian bytes inside the mapping (may be unaligned).
  const std::byte* data(const std::string& name) const;

 private:
  struct Mapping;
  SafetensorsFile() = default;

  std::string path_;
  std::unique_ptr<Mapping> mapping_;
  uint64_t header_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace anomalysd

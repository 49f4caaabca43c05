// Validating safetensors reader. Every check names the file and, where there is one, the tensor,
// because users meet these errors on truncated downloads and hand-converted checkpoints.
#include "anomalysd/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "anomalysd/io/errors.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian; big-endian hosts are unsupported");

namespace anomalysd {

namespace {

using json = nlohmann::json;

// The reference implementation refuses headers above 100 MB as well.
constexpr uint64_t kMaxHeaderSize = 100ull * 1000 * 1000;

struct DtypeEntry {
  StDtype dtype;
  const char* name;
  std::size_t size;
};
constexpr DtypeEntry kDtypes[] = {
    {StDtype::F64, "F64", 8}, {StDtype::F32, "F32", 4}, {StDtype::F16, "F16", 2},
    {StDtype::BF16, "BF16", 2}, {StDtype::I64, "I64", 8}, {StDtype::I32, "I32", 4},
    {StDtype::I16, "I16", 2}, {StDtype::I8, "I8", 1}, {StDtype::U8, "U8", 1},
    {StDtype::BOOL, "BOOL", 1},
};

const DtypeEntry& entry(StDtype dtype) {
  for (const auto& e : kDtypes)
    if (e.dtype == dtype) return e;
  throw std::logic_error("unhandled StDtype");
}

}  // namespace

std::string format_shape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const char* dtype_name(StDtype dtype) { return entry(dtype).name; }
std::size_t dtype_size(StDtype dtype) { return entry(dtype).size; }

StDtype parse_dtype(const std::string& name) {
  for (const auto& e : kDtypes)
    if (name == e.name) return e.dtype;
  throw std::invalid_argument("unknown safetensors dtype '" + name + "'");
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

struct SafetensorsFile::Mapping {
  void* base = nullptr;
  uint64_t size = 0;
  ~Mapping() {
    if (base) ::munmap(base, size);
  }
};

SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

uint64_t SafetensorsFile::file_size() const { return mapping_->size; }

namespace {


// Parses and checks one tensor entry of the header.
TensorInfo parse_tensor_entry(const std::string& path, const std::string& name, const json& value,
                              uint64_t data_size) {
  auto error = [&](const std::string& what) { return FormatError(path, "tensor '" + name + "': " + what); };
  if (!value.is_object()) throw error("header entry is not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!value.contains(field)) throw error(std::string("header entry lacks '") + field + "'");

  TensorInfo info;
  info.name = name;
  const json& dtype = value["dtype"];
  if (!dtype.is_string()) throw error("'dtype' is not a string");
  try {
    info.dtype = parse_dtype(dtype.get<std::string>());
  } catch (const std::invalid_argument&) {
    throw error("unsupported dtype '" + dtype.get<std::string>() +
         "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
  }

  const json& shape = value["shape"];
  if (!shape.is_array()) throw error("'shape' is not a list");
  uint64_t numel = 1;
  for (const json& d : shape) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) throw error("'shape' " + shape.dump() + " holds a non-integer or negative size");
    const uint64_t dim = d.get<uint64_t>();
    if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim / 8) throw error("'shape' " + shape.dump() + " is too large");
    numel *= dim;
    info.shape.push_back(static_cast<int64_t>(dim));
  }

  const json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
    throw error("'data_offsets' must be two non-negative integers, got " + offsets.dump());
  info.begin = offsets[0].get<uint64_t>();
  info.end = offsets[1].get<uint64_t>();
  if (info.begin > info.end) throw error("data_offsets " + offsets.dump() + " begin after they end");
  if (info.end > data_size)
    throw error("data_offsets " + offsets.dump() + " run past the end of the data section (" + std::to_string(data_size) +
         " bytes): the file is truncated or the header is corrupt");
  const uint64_t expected = numel * dtype_size(info.dtype);
  if (info.nbytes() != expected)
    throw error("shape " + format_shape(info.shape) + " of " + dtype_name(info.dtype) + " needs " + std::to_string(expected) +
         " bytes but data_offsets " + offsets.dump() + " hold " + std::to_string(info.nbytes()));
  return info;
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile file;
  file.path_ = path;

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw FormatError(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw FormatError(path, "not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw FormatError(path, "file is " + std::to_string(size) +
                                " bytes, too small to hold the 8-byte header length: not a safetensors file");
  }
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) throw FormatError(path, std::string("cannot map file: ") + std::strerror(errno));
  file.mapping_ = std::make_unique<Mapping>();
  file.mapping_->base = base;
  file.mapping_->size = size;

  const auto* bytes = static_cast<const unsigned char*>(base);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > kMaxHeaderSize)
    throw FormatError(path, "header length " + std::to_string(header_size) +
                                " is implausibly large (limit 100 MB): not a safetensors file");
  if (header_size > size - 8)
    throw FormatError(path, "header length " + std::to_string(header_size) + " exceeds the file's " +
                                std::to_string(size - 8) + " bytes after the length field: the file is truncated");
  file.header_size_ = header_size;
  const uint64_t data_size = size - 8 - header_size;

  // Duplicate top-level keys are silently merged by JSON parsers; a parser callback catches them.
  std::set<std::string> seen;
  std::string duplicate;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && !seen.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  json header;
  try {
    const char* text = reinterpret_cast<const char*>(bytes + 8);
    header = json::parse(text, text + header_size, on_event);
  } catch (const json::exception& e) {
    throw FormatError(path, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) throw FormatError(path, "header is not a JSON object");
  if (!duplicate.empty()) throw FormatError(path, "header names '" + duplicate + "' twice");

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) throw FormatError(path, "'__metadata__' is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) throw FormatError(path, "'__metadata__' value of '" + mk + "' is not a string");
        file.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    file.tensors_.push_back(parse_tensor_entry(path, key, value, data_size));
  }

  // No two tensors may share bytes.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : file.tensors_)
    if (t.nbytes() > 0) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (std::size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      throw FormatError(path, "tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name +
                                  "' overlap in the data section");

  std::sort(file.tensors_.begin(), file.tensors_.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (std::size_t i = 0; i < file.tensors_.size(); ++i) file.index_[file.tensors_[i].name] = i;
  return file;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) throw FormatError(path_, "no tensor named '" + name + "'");
  return tensors_[it->second];
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& t : tensors_) out.push_back(t.name);
  return out;
}

const std::byte* SafetensorsFile::data(const std::string& name) const {
  const TensorInfo& t = info(name);
  return static_cast<const std::byte*>(mapping_->base) + 8 + header_size_ + t.begin;
}

}  // namespace anomalysd

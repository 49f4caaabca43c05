#include "anomalysd/io/tensor_io.h"

#include <cstring>
#include <set>
#include <stdexcept>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"

namespace anomalysd {

c10::ScalarType to_scalar_type(StDtype dtype) {
  switch (dtype) {
    case StDtype::F64: return at::kDouble;
    case StDtype::F32: return at::kFloat;
    case StDtype::F16: return at::kHalf;
    case StDtype::BF16: return at::kBFloat16;
    case StDtype::I64: return at::kLong;
    case StDtype::I32: return at::kInt;
    case StDtype::I16: return at::kShort;
    case StDtype::I8: return at::kChar;
    case StDtype::U8: return at::kByte;
    case StDtype::BOOL: return at::kBool;
  }
  throw std::logic_error("unhandled StDtype");
}

StDtype to_st_dtype(c10::ScalarType type) {
  switch (type) {
    case at::kDouble: return StDtype::F64;
    case at::kFloat: return StDtype::F32;
    case at::kHalf: return StDtype::F16;
    case at::kBFloat16: return StDtype::BF16;
    case at::kLong: return StDtype::I64;
    case at::kInt: return StDtype::I32;
    case at::kShort: return StDtype::I16;
    case at::kChar: return StDtype::I8;
    case at::kByte: return StDtype::U8;
    case at::kBool: return StDtype::BOOL;
    default: throw std::invalid_argument(std::string("dtype ") + c10::toString(type) + " cannot be stored in safetensors");
  }
}

at::Tensor load_tensor(const SafetensorsFile& file, const std::string& name, c10::Device device,
                       std::optional<c10::ScalarType> dtype) {
  const TensorInfo& info = file.info(name);
  // Copy rather than wrap: the mapping may be unaligned for the element type and must not
  // outlive the file object.
  at::Tensor cpu = at::empty(info.shape, at::TensorOptions().dtype(to_scalar_type(info.dtype)));
  if (info.nbytes() > 0) std::memcpy(cpu.data_ptr(), file.data(name), info.nbytes());
  const c10::ScalarType target = dtype.value_or(cpu.scalar_type());
  if (device.is_cpu() && target == cpu.scalar_type()) return cpu;
  return cpu.to(device, target);
}

std::map<std::string, at::Tensor> load_all(const std::string& path, c10::Device device,
                                           std::optional<c10::ScalarType> dtype) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& t : file.tensors()) out.emplace(t.name, load_tensor(file, t.name, device, dtype));
  return out;
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;

  std::set<std::string> names;
  std::vector<at::Tensor> cpu;
  cpu.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty()) throw FormatError(path, "cannot save a tensor with an empty name");
    if (name == "__metadata__") throw FormatError(path, "'__metadata__' is reserved and cannot name a tensor");
    if (!names.insert(name).second) throw FormatError(path, "tensor '" + name + "' given twice");
    if (!tensor.defined()) throw FormatError(path, "tensor '" + name + "' is undefined");
    StDtype dtype;
    try {
      dtype = to_st_dtype(tensor.scalar_type());
    } catch (const std::invalid_argument& e) {
      throw FormatError(path, "tensor '" + name + "': " + e.what());
    }
    at::Tensor c = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(c.numel()) * dtype_size(dtype);
    header[name] = {{"dtype", dtype_name(dtype)}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    cpu.push_back(std::move(c));
  }

  // Pad the header with spaces to a multiple of 8 so the data section starts aligned.
  std::string text = header.empty() ? std::string("{}") : header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>((static_cast<uint64_t>(text.size()) >> (8 * i)) & 0xff);

  AtomicFileWriter writer(path);
  writer.write(length, sizeof length);
  writer.write(text);
  for (const at::Tensor& c : cpu)
    if (c.numel() > 0) writer.write(c.data_ptr(), static_cast<std::size_t>(c.nbytes()));
  writer.commit();
}

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  save_safetensors(path, NamedTensors(tensors.begin(), tensors.end()), metadata);
}

}  // namespace anomalysd

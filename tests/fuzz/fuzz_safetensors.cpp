// The safetensors reader: header length, JSON header, dtypes, shapes, data offsets. Every tensor
// the reader accepts is read end to end (a read past the mapping would crash), and inspected.
#include "anomalysd/io/errors.h"
#include "anomalysd/io/inspect.h"
#include "anomalysd/io/safetensors.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string path = anomalysd::fuzz::write_input("input.safetensors", data, size);
  try {
    const auto file = anomalysd::SafetensorsFile::open(path);
    volatile unsigned char sink = 0;
    for (const auto& t : file.tensors()) {
      const std::byte* bytes = file.data(t.name);
      for (uint64_t i = 0; i < t.nbytes(); i += 61) sink = sink ^ static_cast<unsigned char>(bytes[i]);
      if (t.nbytes()) sink = sink ^ static_cast<unsigned char>(bytes[t.nbytes() - 1]);
      if (static_cast<uint64_t>(t.numel()) * anomalysd::dtype_size(t.dtype) != t.nbytes()) __builtin_trap();
    }
    (void)anomalysd::inspect_json(file).dump();
    (void)anomalysd::inspect_table(file);
  } catch (const anomalysd::InputError&) {
  }
  return 0;
}

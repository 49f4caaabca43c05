// Image decoding through our image_io (any bytes OpenCV might take): the header size reader,
// RGB / mask / anomaly-map readers (each refuses oversized files from the header).
#include "anomalysd/data/image_io.h"
#include "anomalysd/io/errors.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string path = anomalysd::fuzz::write_input("input.img", data, size);
  try {
    const auto [h, w] = anomalysd::read_image_size(path);
    (void)h;
    (void)w;
  } catch (const anomalysd::InputError&) {
  }
  try {
    const cv::Mat m = anomalysd::read_rgb_float(path);
    if (m.type() != CV_32FC3 || m.rows < anomalysd::kMinImageSide) __builtin_trap();
  } catch (const anomalysd::InputError&) {
  }
  try {
    (void)anomalysd::read_mask(path);
  } catch (const anomalysd::InputError&) {
  }
  try {
    (void)anomalysd::read_anomaly_map(path);
  } catch (const anomalysd::InputError&) {
  }
  return 0;
}

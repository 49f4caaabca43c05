#include "anomalysd/data/image_io.h"

#include <cstdlib>
#include <fstream>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"

namespace anomalysd {

namespace {

cv::Mat read_or_throw(const std::string& path, int flags, const char* what) {
  std::ifstream probe(path, std::ios::binary);
  if (!probe) throw FormatError(path, std::string("cannot open ") + what);
  probe.seekg(0, std::ios::end);
  if (probe.tellg() <= 0) throw FormatError(path, std::string("cannot decode ") + what + ": the file is empty");
  // Only the formats we document reach OpenCV: its other decoders (GDCM's DICOM reader takes any
  // bytes) can allocate gigabytes or spin on a few hundred bytes of garbage (a fuzz finding).
  char head[8] = {};
  probe.seekg(0);
  probe.read(head, sizeof head);
  const std::string magic(head, static_cast<std::size_t>(probe.gcount()));
  const bool known = magic.rfind("\x89PNG\r\n\x1a\n", 0) == 0 || magic.rfind("\xFF\xD8\xFF", 0) == 0 || magic.rfind("BM", 0) == 0 ||
                     magic.rfind(std::string("II*\0", 4), 0) == 0 || magic.rfind(std::string("MM\0*", 4), 0) == 0;
  if (!known) throw FormatError(path, std::string("cannot decode ") + what + ": not a PNG, JPEG, BMP or TIFF file");
  // Refuse huge images from the header, before the decoder allocates them (OpenCV's own cap,
  // OPENCV_IO_MAX_IMAGE_PIXELS, is read when the library loads: too early for us to set it).
  const auto [h, w] = read_image_size(path);
  if (h <= 0 || w <= 0) throw FormatError(path, std::string(what) + " has no pixels");
  if (int64_t(h) * w > kMaxImagePixels)
    throw FormatError(path, std::string(what) + " is " + std::to_string(w) + "x" + std::to_string(h) + ", larger than the " +
                                std::to_string(kMaxImagePixels) + " pixels anomalysd reads (" + std::to_string(kMaxImageBytes >> 20) +
                                " MiB as float RGB)");
  cv::Mat m;
  try {
    m = cv::imread(path, flags);
  } catch (const cv::Exception& e) {
    throw FormatError(path, std::string("cannot decode ") + what + " (" + e.err + ")");
  }
  if (m.empty()) throw FormatError(path, std::string("cannot decode ") + what + " (corrupt or unsupported format)");
  return m;
}

void write_encoded(const std::string& path, const char* ext, const cv::Mat& image, const std::vector<int>& params = {}) {
  std::vector<uchar> bytes;
  bool ok = false;
  try {
    ok = cv::imencode(ext, image, bytes, params);
  } catch (const cv::Exception& e) {
    throw FormatError(path, std::string("cannot encode the image (") + e.err + ")");
  }
  if (!ok) throw FormatError(path, "cannot encode the image");
  write_file_atomically(path, std::string(bytes.begin(), bytes.end()));
}

}  // namespace

std::pair<int, int> read_image_size(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError(path, "cannot open image");
  unsigned char h[26] = {};
  in.read(reinterpret_cast<char*>(h), sizeof h);
  const std::streamsize got = in.gcount();
  auto be16 = [](const unsigned char* p) { return (p[0] << 8) | p[1]; };
  auto be32 = [](const unsigned char* p) { return static_cast<int>((uint32_t(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3]); };
  auto le16 = [](const unsigned char* p) { return p[0] | (p[1] << 8); };
  auto le32 = [](const unsigned char* p) { return static_cast<int32_t>(uint32_t(p[0]) | (p[1] << 8) | (p[2] << 16) | (uint32_t(p[3]) << 24)); };
  const auto no_size = [&](const char* format) { return FormatError(path, std::string("cannot read the image size from its ") + format + " header"); };
  if (got >= 2 && h[0] == 0x89 && h[1] == 'P') {  // PNG: IHDR is the first chunk
    if (got < 24 || std::string(reinterpret_cast<char*>(h) + 12, 4) != "IHDR") throw no_size("PNG");
    return {be32(h + 20), be32(h + 16)};
  }
  if (got >= 2 && h[0] == 0xFF && h[1] == 0xD8) {  // JPEG: walk the markers to a start-of-frame
    in.clear();
    in.seekg(2);
    for (int c; (c = in.get()) != EOF;) {
      if (c != 0xFF) break;
      int marker = in.get();
      while (marker == 0xFF) marker = in.get();  // fill bytes
      if (marker == EOF) break;
      if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // markers without a length
      unsigned char m[5];
      if (!in.read(reinterpret_cast<char*>(m), 2)) break;
      const int length = be16(m);
      if (length < 2) break;
      const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (sof) {
        if (!in.read(reinterpret_cast<char*>(m), 5)) break;
        return {be16(m + 1), be16(m + 3)};
      }
      in.seekg(length - 2, std::ios::cur);
    }
    throw no_size("JPEG");
  }
  if (got >= 2 && h[0] == 'B' && h[1] == 'M') {  // BMP: BITMAPCOREHEADER (12 bytes: 16-bit sides) or a later one (32-bit)
    if (got < 26) throw no_size("BMP");
    const int32_t dib = le32(h + 14);
    if (dib == 12) return {le16(h + 20), le16(h + 18)};
    if (dib < 40) throw no_size("BMP");
    const int64_t height = le32(h + 22);  // negative: stored top-down
    return {static_cast<int>(std::min<int64_t>(std::abs(height), INT32_MAX)), le32(h + 18)};
  }
  if (got >= 8 && ((h[0] == 'I' && h[1] == 'I') || (h[0] == 'M' && h[1] == 'M'))) {  // TIFF: tags 256/257 of the first IFD
    const bool little = h[0] == 'I';
    auto u16 = [&](const unsigned char* p) { return little ? le16(p) : be16(p); };
    auto u32 = [&](const unsigned char* p) { return static_cast<uint32_t>(little ? le32(p) : be32(p)); };
    if (u16(h + 2) != 42) throw no_size("TIFF");
    in.clear();
    in.seekg(u32(h + 4));
    unsigned char count_bytes[2];
    if (!in.read(reinterpret_cast<char*>(count_bytes), 2)) throw no_size("TIFF");
    int64_t width = -1, height = -1;
    for (int i = 0, n = u16(count_bytes); i < n; ++i) {
      unsigned char e[12];
      if (!in.read(reinterpret_cast<char*>(e), 12)) break;
      const int tag = u16(e), type = u16(e + 2);
      if (tag != 256 && tag != 257) continue;
      const int64_t value = type == 3 ? u16(e + 8) : type == 4 ? static_cast<int64_t>(u32(e + 8)) : -1;  // SHORT | LONG
      (tag == 256 ? width : height) = value;
    }
    if (width < 0 || height < 0) throw no_size("TIFF");
    return {static_cast<int>(std::min<int64_t>(height, INT32_MAX)), static_cast<int>(std::min<int64_t>(width, INT32_MAX))};
  }
  throw FormatError(path, "cannot decode image: not a PNG, JPEG, BMP or TIFF file");
}

cv::Mat read_mask(const std::string& path) {
  const cv::Mat m = read_or_throw(path, cv::IMREAD_GRAYSCALE, "mask");
  cv::Mat binary;
  cv::compare(m, 0, binary, cv::CMP_NE);  // 255 where non-zero
  return binary / 255;
}

cv::Mat read_anomaly_map(const std::string& path) {
  const cv::Mat m = read_or_throw(path, cv::IMREAD_UNCHANGED, "anomaly map");
  if (m.channels() != 1) throw FormatError(path, "anomaly map must have one channel, has " + std::to_string(m.channels()));
  cv::Mat f;
  m.convertTo(f, CV_32F);
  if (!cv::checkRange(f)) throw FormatError(path, "anomaly map holds NaN or Inf");
  return f;
}

cv::Mat read_rgb(const std::string& path) {
  const cv::Mat bgr = read_or_throw(path, cv::IMREAD_COLOR, "image");  // grayscale files load as 3-channel
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

cv::Mat read_rgb_float(const std::string& path) {
  const cv::Mat raw = read_or_throw(path, cv::IMREAD_UNCHANGED, "image");  // refuses oversized files from the header
  if (raw.rows < kMinImageSide || raw.cols < kMinImageSide)
    throw FormatError(path, "image is " + std::to_string(raw.cols) + "x" + std::to_string(raw.rows) + ", smaller than the " +
                                std::to_string(kMinImageSide) + "x" + std::to_string(kMinImageSide) + " anomalysd inspects");
  // Depth first (colour conversion has no kernels for signed or 32-bit integer pixels), then
  // channels, in float.
  double scale = 1.0;
  switch (raw.depth()) {
    case CV_8U: scale = 1.0 / 255.0; break;
    case CV_16U: scale = 1.0 / 65535.0; break;
    case CV_32F: case CV_64F: scale = 1.0; break;
    default: throw FormatError(path, "unsupported pixel depth (8-bit, 16-bit unsigned or float expected)");
  }
  int code = 0;
  switch (raw.channels()) {
    case 1: code = cv::COLOR_GRAY2RGB; break;
    case 3: code = cv::COLOR_BGR2RGB; break;
    case 4: code = cv::COLOR_BGRA2RGB; break;
    default: throw FormatError(path, "image has " + std::to_string(raw.channels()) + " channels (1, 3 or 4 expected)");
  }
  // Row by row into the result: the only full-size buffers are the decoded file and the result
  // (a whole-image float copy first would double the peak).
  try {
    cv::Mat rgb(raw.rows, raw.cols, CV_32FC3), row;
    for (int y = 0; y < raw.rows; ++y) {
      raw.row(y).convertTo(row, CV_32F, scale);
      if (!cv::checkRange(row)) throw FormatError(path, "image holds NaN or Inf");
      if (raw.depth() == CV_32F || raw.depth() == CV_64F) row = cv::min(cv::max(row, 0.0), 1.0);
      cv::Mat out = rgb.row(y);
      cv::cvtColor(row, out, code);
    }
    return rgb;
  } catch (const cv::Exception& e) {
    throw FormatError(path, std::string("cannot convert the image (") + e.err + ")");
  }
}

void write_map_tiff(const std::string& path, const cv::Mat& map) {
  if (map.channels() != 1) throw ShapeError(path + ": an anomaly map has one channel");
  cv::Mat f;
  map.convertTo(f, CV_32F);
  write_encoded(path, ".tiff", f);
}

void write_png(const std::string& path, const cv::Mat& image, bool rgb) {
  cv::Mat out;  // a new buffer: converting into a header of `image` would swap the caller's pixels
  if (rgb && image.channels() == 3)
    cv::cvtColor(image, out, cv::COLOR_RGB2BGR);
  else
    out = image;
  write_encoded(path, ".png", out);
}

cv::Mat heatmap(const cv::Mat& map, double lo, double hi) {
  cv::Mat scaled;
  const double range = hi > lo ? hi - lo : 1.0;
  map.convertTo(scaled, CV_8U, 255.0 / range, -lo * 255.0 / range);  // saturates outside [lo, hi]
  cv::Mat bgr, rgb;
  cv::applyColorMap(scaled, bgr, cv::COLORMAP_JET);
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

cv::Mat heatmap_overlay(const cv::Mat& rgb8, const cv::Mat& map, double lo, double hi, double weight) {
  cv::Mat resized = map;
  if (map.size() != rgb8.size()) cv::resize(map, resized, rgb8.size(), 0, 0, cv::INTER_LINEAR);
  cv::Mat blended;
  cv::addWeighted(rgb8, 1.0 - weight, heatmap(resized, lo, hi), weight, 0.0, blended);
  return blended;
}

uint64_t pixel_hash(const cv::Mat& image) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const unsigned char* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  const int dims[3] = {image.rows, image.cols, image.type()};
  mix(reinterpret_cast<const unsigned char*>(dims), sizeof dims);
  const std::size_t row_bytes = image.cols * image.elemSize();
  for (int r = 0; r < image.rows; ++r) mix(image.ptr<unsigned char>(r), row_bytes);
  return h;
}

}  // namespace anomalysd

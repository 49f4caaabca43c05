#include "anomalysd/data/image_io.h"

#include <fstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "anomalysd/io/errors.h"

namespace anomalysd {

namespace {

cv::Mat read_or_throw(const std::string& path, int flags, const char* what) {
  std::ifstream probe(path, std::ios::binary);
  if (!probe) throw FormatError(path, std::string("cannot open ") + what);
  cv::Mat m = cv::imread(path, flags);
  if (m.empty()) throw FormatError(path, std::string("cannot decode ") + what + " (corrupt or unsupported format)");
  return m;
}

}  // namespace

std::pair<int, int> read_image_size(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError(path, "cannot open image");
  unsigned char h[24] = {};
  in.read(reinterpret_cast<char*>(h), sizeof h);
  auto be16 = [](const unsigned char* p) { return (p[0] << 8) | p[1]; };
  auto be32 = [](const unsigned char* p) { return static_cast<int>((uint32_t(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3]); };
  if (in.gcount() == 24 && h[0] == 0x89 && h[1] == 'P' && h[2] == 'N' && h[3] == 'G') return {be32(h + 20), be32(h + 16)};
  if (in.gcount() >= 2 && h[0] == 0xFF && h[1] == 0xD8) {  // JPEG: walk the markers to a start-of-frame
    in.clear();
    in.seekg(2);
    unsigned char m[9];
    while (in.read(reinterpret_cast<char*>(m), 4)) {
      if (m[0] != 0xFF) break;
      const int marker = m[1], length = be16(m + 2);
      const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (sof) {
        if (!in.read(reinterpret_cast<char*>(m), 5)) break;
        return {be16(m + 1), be16(m + 3)};
      }
      in.seekg(length - 2, std::ios::cur);
    }
  }
  const cv::Mat img = read_or_throw(path, cv::IMREAD_UNCHANGED, "image");
  return {img.rows, img.cols};
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

}  // namespace anomalysd

#include "anomalysd/data/photos.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <opencv2/imgproc.hpp>
#include <yaml-cpp/yaml.h>

#include "anomalysd/data/image_io.h"
#include "anomalysd/io/errors.h"
#include "anomalysd_embedded_config.h"

namespace anomalysd {

namespace fs = std::filesystem;

std::vector<PhotoSource> parse_photo_list(const std::string& yaml_text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw InputError(origin + ": not valid YAML: " + e.what());
  }
  if (!root.IsMap() || !root["photos"] || !root["photos"].IsSequence()) throw InputError(origin + ": expected a 'photos:' list");
  for (const auto& kv : root)
    if (kv.first.as<std::string>() != "photos") throw InputError(origin + ": unknown key '" + kv.first.as<std::string>() + "'");
  std::vector<PhotoSource> out;
  const std::set<std::string> keys = {"file", "package", "licence", "role", "class"};
  int index = 0;
  for (const auto& item : root["photos"]) {
    const std::string where = origin + ": photos[" + std::to_string(index++) + "]";
    if (!item.IsMap()) throw InputError(where + ": expected a map");
    for (const auto& kv : item)
      if (!keys.count(kv.first.as<std::string>())) throw InputError(where + ": unknown key '" + kv.first.as<std::string>() + "'");
    auto get = [&](const char* key, bool required) {
      if (!item[key]) {
        if (required) throw InputError(where + ": missing key '" + key + "'");
        return std::string();
      }
      return item[key].as<std::string>();
    };
    // `file`: one path, or the list of places different Debian releases install it at.
    std::vector<std::string> places;
    try {
      if (item["file"] && item["file"].IsSequence())
        for (const auto& f : item["file"]) places.push_back(f.as<std::string>());
      else places.push_back(get("file", true));
    } catch (const YAML::Exception&) {
      throw InputError(where + ".file: expected a path or a list of paths");
    }
    if (places.empty()) throw InputError(where + ".file: an empty list");
    PhotoSource p{places.front(), places, get("package", true), get("licence", true), get("role", true), get("class", false)};
    if (p.role != "bootstrap" && p.role != "heldout") throw InputError(where + ".role: '" + p.role + "' (expected bootstrap or heldout)");
    if (!p.cls.empty() && p.role != "heldout") throw InputError(where + ".class: only held-out photographs become benchmark classes");
    out.push_back(p);
  }
  return out;
}

const std::vector<PhotoSource>& embedded_photo_list() {
  static const std::vector<PhotoSource> list = parse_photo_list(kEmbeddedPhotoList, "configs/photos.yaml (embedded)");
  return list;
}

namespace {
std::string under_root(const std::string& file, const std::string& root) {
  return root.empty() ? file : (fs::path(root) / fs::path(file).relative_path()).string();
}
}  // namespace

std::string photo_path(const PhotoSource& photo, const std::string& root) {
  for (const std::string& f : photo.places)
    if (fs::is_regular_file(under_root(f, root))) return under_root(f, root);
  return under_root(photo.file, root);
}

std::vector<PhotoSource> photos_for_role(const std::vector<PhotoSource>& list, const std::string& role, const std::string& root) {
  std::vector<PhotoSource> out;
  for (const auto& p : list) {
    if (p.role != role) continue;
    if (!fs::is_regular_file(photo_path(p, root))) {
      std::string also;
      for (std::size_t i = 1; i < p.places.size(); ++i) also += (i == 1 ? " (nor at " : ", ") + under_root(p.places[i], root);
      if (!also.empty()) also += ")";
      throw InputError("photograph " + photo_path(p, root) + also + " is missing: it comes with the Debian package '" + p.package +
                       "' (scripts/install-deps.sh installs it; configs/photos.yaml lists it)");
    }
    out.push_back(p);
  }
  return out;
}

cv::Mat read_gimp_pattern(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError(path, "cannot open");
  unsigned char head[24];
  if (!in.read(reinterpret_cast<char*>(head), sizeof head)) throw FormatError(path, "too short for a GIMP pattern header");
  auto be32 = [&](int at) {
    return (uint32_t(head[at]) << 24) | (uint32_t(head[at + 1]) << 16) | (uint32_t(head[at + 2]) << 8) | uint32_t(head[at + 3]);
  };
  const uint32_t header_size = be32(0), version = be32(4), width = be32(8), height = be32(12), bytes = be32(16);
  if (std::memcmp(head + 20, "GPAT", 4) != 0 || version != 1) throw FormatError(path, "not a GIMP pattern (no 'GPAT' version 1 header)");
  if (bytes < 1 || bytes > 4 || width == 0 || height == 0 || width > 16384 || height > 16384 || header_size < 24 || header_size > 4096)
    throw FormatError(path, "GIMP pattern header out of range (" + std::to_string(width) + "x" + std::to_string(height) + ", " +
                    std::to_string(bytes) + " bytes per pixel)");
  in.seekg(header_size);
  cv::Mat raw(static_cast<int>(height), static_cast<int>(width), CV_8UC(static_cast<int>(bytes)));
  if (!in.read(reinterpret_cast<char*>(raw.data), static_cast<std::streamsize>(raw.total() * bytes)))
    throw FormatError(path, "truncated GIMP pattern (" + std::to_string(width) + "x" + std::to_string(height) + " pixels expected)");
  cv::Mat rgb;
  if (bytes == 1) cv::cvtColor(raw, rgb, cv::COLOR_GRAY2RGB);
  else if (bytes == 2) {
    std::vector<cv::Mat> ch;
    cv::split(raw, ch);
    cv::cvtColor(ch[0], rgb, cv::COLOR_GRAY2RGB);
  } else if (bytes == 3) rgb = raw;
  else cv::cvtColor(raw, rgb, cv::COLOR_RGBA2RGB);
  return rgb;
}

namespace {

// libpng prints "iCCP: known incorrect sRGB profile" for every one of MyPaint's scans (a harmless
// colour-profile tag); while a photograph is decoded, standard error goes to /dev/null. Decoding
// errors still surface: as exceptions from read_rgb.
class QuietStderr {
 public:
  QuietStderr() : saved_(::dup(2)) {
    const int null = ::open("/dev/null", O_WRONLY);
    if (saved_ >= 0 && null >= 0) ::dup2(null, 2);
    if (null >= 0) ::close(null);
  }
  ~QuietStderr() {
    if (saved_ >= 0) {
      ::dup2(saved_, 2);
      ::close(saved_);
    }
  }

 private:
  int saved_;
};

}  // namespace

cv::Mat read_photo_rgb8(const std::string& path) {
  if (fs::path(path).extension() == ".pat") return read_gimp_pattern(path);
  std::fflush(stderr);
  QuietStderr quiet;
  return read_rgb(path);
}

std::vector<cv::Mat> augmented_photo_crops(const cv::Mat& rgb8, int count, int size, uint64_t seed) {
  cv::Mat image;
  rgb8.convertTo(image, CV_32FC3, 1.0 / 255.0);
  // A photograph smaller than the crop is tiled (GIMP's patterns are made to tile).
  if (image.rows < size || image.cols < size) {
    cv::Mat tiled;
    cv::repeat(image, (size + image.rows - 1) / image.rows, (size + image.cols - 1) / image.cols, tiled);
    image = tiled;
  }
  cv::RNG rng(seed);
  std::vector<cv::Mat> out;
  const int shorter = std::min(image.rows, image.cols);
  for (int i = 0; i < count; ++i) {
    // Scales log-uniform between the crop's own size and the whole shorter side.
    const double lo = std::log(static_cast<double>(size)), hi = std::log(static_cast<double>(shorter));
    const int side = std::clamp(static_cast<int>(std::exp(rng.uniform(lo, std::max(lo, hi) + 1e-9))), size, shorter);
    const int x = rng.uniform(0, image.cols - side + 1), y = rng.uniform(0, image.rows - side + 1);
    cv::Mat crop;
    cv::resize(image(cv::Rect(x, y, side, side)), crop, cv::Size(size, size), 0, 0, side == size ? cv::INTER_LINEAR : cv::INTER_AREA);
    const int quarter_turns = rng.uniform(0, 4);
    if (quarter_turns == 1) cv::rotate(crop, crop, cv::ROTATE_90_CLOCKWISE);
    if (quarter_turns == 2) cv::rotate(crop, crop, cv::ROTATE_180);
    if (quarter_turns == 3) cv::rotate(crop, crop, cv::ROTATE_90_COUNTERCLOCKWISE);
    if (rng.uniform(0, 2)) cv::flip(crop, crop, 1);
    // Colour jitter: brightness, contrast about the mean, saturation about the grey value.
    const float brightness = static_cast<float>(rng.uniform(-0.08, 0.08)), contrast = static_cast<float>(rng.uniform(0.8, 1.2)),
                saturation = static_cast<float>(rng.uniform(0.7, 1.3));
    const cv::Scalar mean = cv::mean(crop);
    cv::Mat grey;
    cv::cvtColor(crop, grey, cv::COLOR_RGB2GRAY);
    cv::cvtColor(grey, grey, cv::COLOR_GRAY2RGB);
    crop = grey + (crop - grey) * saturation;
    crop = (crop - mean) * contrast + mean + cv::Scalar::all(brightness);
    cv::min(cv::max(crop, 0.0), 1.0, crop);
    out.push_back(crop);
  }
  return out;
}

}  // namespace anomalysd

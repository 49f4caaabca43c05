// Real photographs that Debian packages ship (configs/photos.yaml, embedded): which file, from
// which package, under which licence, and for what — `bootstrap` (crops train the bootstrap's VAE
// and UNet) or `heldout` (only the real-photograph benchmark reads them). Torch-free (OpenCV).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace anomalysd {

struct PhotoSource {
  std::string file;     // absolute path where the package installs it (the first of `places`)
  std::vector<std::string> places;  // every path a Debian release installs it at (GIMP 2.10 / 3.0); the first present is read
  std::string package;  // the Debian package that ships it (scripts/install-deps.sh installs it)
  std::string licence;
  std::string role;     // "bootstrap" or "heldout"
  std::string cls;      // heldout only: the benchmark class it becomes ("" = foreign material)
};

// The list in a YAML text (`origin` names it in errors): unknown keys, missing keys and unknown roles are errors.
std::vector<PhotoSource> parse_photo_list(const std::string& yaml_text, const std::string& origin);
// configs/photos.yaml as built into the binary.
const std::vector<PhotoSource>& embedded_photo_list();

// The photographs of one role, each checked to exist (under `root`, a prefix for tests; "" = /):
// a missing file is an InputError that names the file and its package, never a silent skip.
std::vector<PhotoSource> photos_for_role(const std::vector<PhotoSource>& list, const std::string& role, const std::string& root = "");
// The first of the photograph's places that exists under `root`; the first place when none does.
std::string photo_path(const PhotoSource& photo, const std::string& root = "");

// GIMP's pattern format (.pat: a big-endian header, "GPAT", the name, then raw 1–4 channel pixels) as RGB8.
cv::Mat read_gimp_pattern(const std::string& path);
// A photograph as RGB8: PNG/JPEG/… through OpenCV, .pat through read_gimp_pattern.
cv::Mat read_photo_rgb8(const std::string& path);

// `count` square crops of a photograph for training, size × size, RGB float32 in [0, 1]: every
// scale from the whole shorter side down to `size` pixels, rotations by multiples of 90° and
// mirroring, brightness / contrast / saturation jitter. Deterministic by seed.
std::vector<cv::Mat> augmented_photo_crops(const cv::Mat& rgb8, int count, int size, uint64_t seed);

}  // namespace anomalysd

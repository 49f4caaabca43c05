// Reading and writing images, masks and anomaly maps with OpenCV; errors name the file. Writes are
// atomic (encoded in memory, then written to a temporary file renamed over the target).
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include <opencv2/core.hpp>

namespace anomalysd {

// The largest image read, chosen from memory rather than from a side: read_rgb_float's float RGB
// copy (12 bytes per pixel) is at most kMaxImageBytes, so that the decoded file (1–32 bytes per
// pixel) and that copy stay under 2 GB together — libFuzzer's default RSS limit, and a small
// machine's share. 44.7 M pixels: 8192 × 5461, or a 6688² square; every image is resized to the
// model's resolution anyway. Larger images are refused before decoding. Images with a side under
// kMinImageSide carry nothing to inspect.
constexpr int64_t kMaxImageBytes = int64_t(512) << 20;
constexpr int64_t kMaxImagePixels = kMaxImageBytes / (3 * sizeof(float));
constexpr int kMinImageSide = 8;

// (height, width) from the file header of a PNG (IHDR), JPEG (start of frame), BMP (DIB header) or
// TIFF (first IFD's tags 256/257), without decoding. Every reader below checks it against
// kMaxImagePixels before OpenCV allocates anything: OpenCV's own cap (OPENCV_IO_MAX_IMAGE_PIXELS)
// is read when the library loads, too early for a program to set it. Throws FormatError naming the
// file when the header holds no size or the file is none of the four formats.
std::pair<int, int> read_image_size(const std::string& path);

// A ground-truth mask as CV_8U, 1 where the file is non-zero (masks are binarised).
cv::Mat read_mask(const std::string& path);

// An anomaly map as single-channel CV_32F (float32 TIFF as the MVTec AD evaluation layout; any
// single-channel depth is converted).
cv::Mat read_anomaly_map(const std::string& path);

// An RGB image as CV_8UC3 (grayscale images become 3-channel).
cv::Mat read_rgb(const std::string& path);

// An RGB image as CV_32FC3 in [0, 1], keeping 16-bit precision: gray, RGB and RGBA (alpha dropped),
// 8 or 16 bits. Refuses empty, unreadable and oversized (> kMaxImagePixels) files by name.
cv::Mat read_rgb_float(const std::string& path);

// Writes a single-channel float map as a float32 TIFF (the MVTec AD evaluation layout), atomically.
void write_map_tiff(const std::string& path, const cv::Mat& map);
// Writes an 8-bit image (gray, or RGB — converted to the file's BGR order) as PNG, atomically.
void write_png(const std::string& path, const cv::Mat& image, bool rgb = true);

// A heat map of `map` (float, any size; resized to the image) over an RGB8 image: values in
// [lo, hi] run through the JET colour map, blended at `weight`. Returns RGB8.
cv::Mat heatmap_overlay(const cv::Mat& rgb8, const cv::Mat& map, double lo, double hi, double weight = 0.5);
// The heat map alone, RGB8.
cv::Mat heatmap(const cv::Mat& map, double lo, double hi);

// FNV-1a 64 of an image's pixels and size: the identity that fixes its start noise, the same
// whatever the file's name, folder or format.
uint64_t pixel_hash(const cv::Mat& image);

}  // namespace anomalysd

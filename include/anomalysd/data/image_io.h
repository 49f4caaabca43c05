// Reading images, masks and anomaly maps with OpenCV; errors name the file.
#pragma once

#include <string>
#include <utility>

#include <opencv2/core.hpp>

namespace anomalysd {

// (height, width) from the file header (PNG, JPEG), without decoding; other formats are decoded.
std::pair<int, int> read_image_size(const std::string& path);

// A ground-truth mask as CV_8U, 1 where the file is non-zero (masks are binarised).
cv::Mat read_mask(const std::string& path);

// An anomaly map as single-channel CV_32F (float32 TIFF as the MVTec AD evaluation layout; any
// single-channel depth is converted).
cv::Mat read_anomaly_map(const std::string& path);

// An RGB image as CV_8UC3 (grayscale images become 3-channel).
cv::Mat read_rgb(const std::string& path);

}  // namespace anomalysd

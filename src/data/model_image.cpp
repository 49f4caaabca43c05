#include "anomalysd/data/model_image.h"

#include <opencv2/imgproc.hpp>

#include "anomalysd/data/image_io.h"

namespace anomalysd {

torch::Tensor to_model_tensor(const cv::Mat& rgb_float, int64_t resolution) {
  cv::Mat resized = rgb_float;
  const cv::Size size(static_cast<int>(resolution), static_cast<int>(resolution));
  if (rgb_float.size() != size) {
    const bool shrinking = rgb_float.rows >= resolution && rgb_float.cols >= resolution;
    cv::resize(rgb_float, resized, size, 0, 0, shrinking ? cv::INTER_AREA : cv::INTER_LINEAR);
  }
  cv::Mat contiguous = resized.isContinuous() ? resized : resized.clone();
  return torch::from_blob(contiguous.data, {1, resolution, resolution, 3}, torch::kFloat).permute({0, 3, 1, 2}).clamp(0.0, 1.0).contiguous();
}

ModelImage read_model_image(const std::string& path, int64_t resolution) {
  ModelImage m;
  m.original = read_rgb_float(path);
  m.identity = pixel_hash(m.original);
  m.tensor = to_model_tensor(m.original, resolution);
  return m;
}

cv::Mat map_to_size(const torch::Tensor& map, int height, int width) {
  const torch::Tensor m = map.to(torch::kCPU, torch::kFloat).contiguous();
  const cv::Mat view(static_cast<int>(m.size(0)), static_cast<int>(m.size(1)), CV_32F, m.data_ptr<float>());
  cv::Mat out;
  if (view.rows == height && view.cols == width)
    out = view.clone();
  else
    cv::resize(view, out, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
  return out;
}

cv::Mat to_rgb8(const cv::Mat& rgb_float) {
  cv::Mat out;
  rgb_float.convertTo(out, CV_8U, 255.0);
  return out;
}

cv::Mat tensor_to_rgb8(const torch::Tensor& image) {
  const torch::Tensor hwc = (image.to(torch::kCPU, torch::kFloat).clamp(0, 1) * 255.0).round().to(torch::kByte).permute({1, 2, 0}).contiguous();
  return cv::Mat(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_8UC3, hwc.data_ptr<uint8_t>()).clone();
}

}  // namespace anomalysd

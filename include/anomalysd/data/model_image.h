// An image as the method sees it: read from a file, resized to the model's side, with its pixel
// identity (which fixes its start noise). Kept apart from image_io.h, which stays torch-free for
// the readers and their fuzzers.
#pragma once

#include <cstdint>
#include <string>

#include <opencv2/core.hpp>
#include <torch/torch.h>

namespace anomalysd {

struct ModelImage {
  torch::Tensor tensor;  // [1, 3, R, R] float32 in [0, 1], R = config resolution
  cv::Mat original;      // RGB float32 [0, 1] at the file's size
  uint64_t identity = 0; // pixel_hash(original): fixes the start noise
};

// Reads an image file (PNG/JPEG/BMP/TIFF, gray/RGB/RGBA, 8/16-bit, any size) for a model of
// side `resolution` (area-averaged when shrinking, bilinear when enlarging).
ModelImage read_model_image(const std::string& path, int64_t resolution);
torch::Tensor to_model_tensor(const cv::Mat& rgb_float, int64_t resolution);

// A map [H, W] (tensor, model resolution) resized to height × width, float32.
cv::Mat map_to_size(const torch::Tensor& map, int height, int width);
// An RGB float image to RGB8.
cv::Mat to_rgb8(const cv::Mat& rgb_float);
cv::Mat tensor_to_rgb8(const torch::Tensor& image);  // [3, H, W] in [0, 1]

}  // namespace anomalysd

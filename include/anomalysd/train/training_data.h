// The training samples of fine-tuning (paper §4.1, §5.1): foreground masks m_f, random rectangles
// m_r kept when IoU(m_r, m_f) > γ, and the augmentations of the few shots (brightness, contrast,
// scale, rotation). Every random choice comes from a generator the caller seeds per sample, so a
// sample is a pure function of (seed, sample index): a resumed run sees the same data.
//
// Legend: H×W image size (model resolution).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <torch/torch.h>

#include "anomalysd/train/augment_config.h"

namespace anomalysd {

// --- foreground mask m_f (the paper does not say how; this is our method) ---------------------
enum class ForegroundMode { kObject, kTexture };
ForegroundMode parse_foreground_mode(const std::string& name);  // object | texture

// texture: the whole image. object: the background colour is the median of a border band (5% of
// the side); pixels far from it in Lab colour (Otsu's threshold on the distance) are foreground,
// cleaned up by a closing then an opening (kernel 3% of the side), holes filled, specks under 0.5%
// of the image dropped. When that leaves under 1% or over 98% of the image (no separable
// background) the whole image is used. Input RGB float [0, 1]; returns CV_8U 0/1.
cv::Mat foreground_mask(const cv::Mat& rgb_float, ForegroundMode mode);

// --- training masks m_r -----------------------------------------------------------------------
struct PixelRect {
  int x = 0, y = 0, width = 0, height = 0;
};

// A rectangle with sides uniform in [side/8, 3·side/4] at a uniform position.
PixelRect random_rectangle(std::mt19937_64& rng, int height, int width);
// IoU of a rectangle and a 0/1 mask, from the mask's integral image ([H+1, W+1], CV_64F).
double rectangle_iou(const PixelRect& r, const cv::Mat& integral, double mask_area);

struct TrainingMask {
  PixelRect rect;
  double gamma = 0;      // the γ drawn
  double iou = 0;        // IoU(m_r, m_f)
  int tries = 0;
  bool fallback = false; // no rectangle met IoU > γ within the tries: the best one seen
};

// §4.1: m ∈ {m_r | IoU(m_r, m_f) > γ}, γ drawn from `gammas` with equal probability; with
// `filter` false (Table 4's "random mask"), the first random rectangle.
TrainingMask sample_training_mask(std::mt19937_64& rng, const cv::Mat& foreground, const std::vector<double>& gammas, bool filter,
                                  int max_tries = 1000);
// The rectangle as a mask tensor [1, 1, H, W] (1 = inpaint).
torch::Tensor rectangle_mask(const PixelRect& r, int64_t height, int64_t width);
// A mask tensor [1, 1, H, W] (≥ 0.5 = in) as a CV_8U 0/1 image, on the CPU.
cv::Mat mask_to_mat(const torch::Tensor& mask);

// --- augmentations (§5.1) ---------------------------------------------------------------------
struct AugmentParams {
  bool applied = false;
  double brightness = 0, contrast = 1, scale = 1, angle = 0;  // angle in degrees
};
AugmentParams sample_augment(std::mt19937_64& rng, const AugmentConfig& config);
// Geometric part (scale, rotation about the centre, reflected borders) on images or masks
// [N, C, H, W]; `nearest` for masks. Then, for images only, contrast about the mean and brightness.
torch::Tensor augment_geometry(const torch::Tensor& x, const AugmentParams& p, bool nearest);
torch::Tensor augment_photometric(const torch::Tensor& image, const AugmentParams& p);

}  // namespace anomalysd

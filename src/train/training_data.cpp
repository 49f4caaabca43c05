#include "anomalysd/train/training_data.h"

#include <algorithm>
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "anomalysd/io/errors.h"

namespace anomalysd {

namespace F = torch::nn::functional;

ForegroundMode parse_foreground_mode(const std::string& name) {
  if (name == "object") return ForegroundMode::kObject;
  if (name == "texture") return ForegroundMode::kTexture;
  throw InputError("foreground mode '" + name + "' is not one of: object, texture");
}

cv::Mat foreground_mask(const cv::Mat& rgb_float, ForegroundMode mode) {
  const int h = rgb_float.rows, w = rgb_float.cols;
  cv::Mat all = cv::Mat::ones(h, w, CV_8U);
  if (mode == ForegroundMode::kTexture) return all;
  // 1. background colour: the median of a border band, in Lab (perceptual distances)
  cv::Mat lab;
  cv::cvtColor(rgb_float, lab, cv::COLOR_RGB2Lab);
  const int band = std::max(1, std::min(h, w) / 20);
  std::vector<float> channels[3];
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      if (y < band || y >= h - band || x < band || x >= w - band) {
        const cv::Vec3f v = lab.at<cv::Vec3f>(y, x);
        for (int c = 0; c < 3; ++c) channels[c].push_back(v[c]);
      }
  cv::Vec3f background;
  for (int c = 0; c < 3; ++c) {
    auto& v = channels[c];
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    background[c] = v[v.size() / 2];
  }
  // 2. distance to it, Otsu's threshold
  cv::Mat distance(h, w, CV_32F);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) distance.at<float>(y, x) = static_cast<float>(cv::norm(lab.at<cv::Vec3f>(y, x) - background));
  cv::Mat d8, mask;
  cv::normalize(distance, d8, 0, 255, cv::NORM_MINMAX, CV_8U);
  cv::threshold(d8, mask, 0, 1, cv::THRESH_BINARY | cv::THRESH_OTSU);
  // 3. clean up: close small gaps, open away specks, fill holes, drop tiny components
  const int k = std::max(3, std::min(h, w) * 3 / 100) | 1;
  const cv::Mat kernel = cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(k, k));
  cv::morphologyEx(mask, mask, cv::MORPH_CLOSE, kernel);
  cv::morphologyEx(mask, mask, cv::MORPH_OPEN, kernel);
  cv::Mat flood = mask.clone();
  cv::Mat padded;
  cv::copyMakeBorder(flood, padded, 1, 1, 1, 1, cv::BORDER_CONSTANT, 0);
  cv::floodFill(padded, cv::Point(0, 0), 1);  // background reachable from outside
  const cv::Mat outside = padded(cv::Rect(1, 1, w, h));
  mask.setTo(1, outside == 0);  // holes: neither foreground nor reachable
  cv::Mat labels, stats, centroids;
  const int n = cv::connectedComponentsWithStats(mask, labels, stats, centroids, 8);
  const int min_area = std::max(1, h * w / 200);
  for (int i = 1; i < n; ++i)
    if (stats.at<int>(i, cv::CC_STAT_AREA) < min_area) mask.setTo(0, labels == i);
  const double fraction = cv::countNonZero(mask) / static_cast<double>(h * w);
  if (fraction < 0.01 || fraction > 0.98) return all;
  return mask;
}

PixelRect random_rectangle(std::mt19937_64& rng, int height, int width) {
  std::uniform_int_distribution<int> hs(std::max(1, height / 8), std::max(1, height * 3 / 4));
  std::uniform_int_distribution<int> ws(std::max(1, width / 8), std::max(1, width * 3 / 4));
  PixelRect r;
  r.height = hs(rng);
  r.width = ws(rng);
  r.y = std::uniform_int_distribution<int>(0, height - r.height)(rng);
  r.x = std::uniform_int_distribution<int>(0, width - r.width)(rng);
  return r;
}

double rectangle_iou(const PixelRect& r, const cv::Mat& integral, double mask_area) {
  const double inter = integral.at<double>(r.y + r.height, r.x + r.width) - integral.at<double>(r.y, r.x + r.width) -
                       integral.at<double>(r.y + r.height, r.x) + integral.at<double>(r.y, r.x);
  const double uni = mask_area + static_cast<double>(r.width) * r.height - inter;
  return uni > 0 ? inter / uni : 0.0;
}

TrainingMask sample_training_mask(std::mt19937_64& rng, const cv::Mat& foreground, const std::vector<double>& gammas, bool filter,
                                  int max_tries) {
  if (gammas.empty()) throw InputError("training masks: no IoU thresholds");
  const int h = foreground.rows, w = foreground.cols;
  cv::Mat integral;
  cv::integral(foreground, integral, CV_64F);
  const double area = integral.at<double>(h, w);
  TrainingMask best;
  best.gamma = gammas[std::uniform_int_distribution<std::size_t>(0, gammas.size() - 1)(rng)];
  best.iou = -1;
  for (int t = 1; t <= max_tries; ++t) {
    const PixelRect r = random_rectangle(rng, h, w);
    const double iou = rectangle_iou(r, integral, area);
    if (iou > best.iou) {
      best.rect = r;
      best.iou = iou;
    }
    best.tries = t;
    if (!filter || iou > best.gamma) {
      best.rect = r;
      best.iou = iou;
      return best;
    }
  }
  best.fallback = true;
  return best;
}

torch::Tensor rectangle_mask(const PixelRect& r, int64_t height, int64_t width) {
  torch::Tensor m = torch::zeros({1, 1, height, width});
  m[0][0].narrow(0, r.y, r.height).narrow(1, r.x, r.width).fill_(1.0f);
  return m;
}

AugmentParams sample_augment(std::mt19937_64& rng, const AugmentConfig& c) {
  AugmentParams p;
  std::uniform_real_distribution<double> u(0.0, 1.0);
  // Draw every value whether or not it is used, so that the stream does not depend on the switch.
  const double apply = u(rng), b = u(rng), k = u(rng), s = u(rng), a = u(rng);
  p.applied = apply < c.probability;
  if (!p.applied) return p;
  p.brightness = (2 * b - 1) * c.brightness;
  p.contrast = 1.0 + (2 * k - 1) * c.contrast;
  p.scale = c.scale[0] + s * (c.scale[1] - c.scale[0]);
  p.angle = (2 * a - 1) * c.rotation;
  return p;
}

torch::Tensor augment_geometry(const torch::Tensor& x, const AugmentParams& p, bool nearest) {
  if (!p.applied || (p.scale == 1.0 && p.angle == 0.0)) return x;
  const double a = p.angle * M_PI / 180.0;
  // Output pixel -> input pixel (normalised coordinates): rotate by −angle, shrink by the zoom.
  const double c = std::cos(a) / p.scale, s = std::sin(a) / p.scale;
  const torch::Tensor theta =
      torch::tensor({{c, s, 0.0}, {-s, c, 0.0}}, x.options().dtype(torch::kFloat)).unsqueeze(0).expand({x.size(0), 2, 3});
  const torch::Tensor grid = F::affine_grid(theta, x.sizes().vec(), /*align_corners=*/false);
  auto options = F::GridSampleFuncOptions().padding_mode(torch::kReflection).align_corners(false);
  if (nearest)
    options.mode(torch::kNearest);
  else
    options.mode(torch::kBilinear);
  return F::grid_sample(x.to(torch::kFloat), grid, options);
}

torch::Tensor augment_photometric(const torch::Tensor& image, const AugmentParams& p) {
  if (!p.applied) return image;
  const torch::Tensor mean = image.mean({1, 2, 3}, /*keepdim=*/true);
  return ((image - mean) * p.contrast + mean + p.brightness).clamp(0.0, 1.0);
}

cv::Mat mask_to_mat(const torch::Tensor& mask) {
  const torch::Tensor u8 = (mask[0][0] >= 0.5).to(torch::kCPU, torch::kByte).contiguous();
  return cv::Mat(static_cast<int>(u8.size(0)), static_cast<int>(u8.size(1)), CV_8U, u8.data_ptr<uint8_t>()).clone();
}

}  // namespace anomalysd

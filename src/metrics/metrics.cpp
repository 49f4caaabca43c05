#include "anomalysd/metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include "anomalysd/io/errors.h"

namespace anomalysd {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Streaming integration of the PRO curve up to `limit`, point by point in increasing FPR.
struct ProIntegral {
  double limit;
  double px = 0, py = 0, area = 0;
  bool done = false;
  void add(double x, double y) {
    if (done) return;
    if (x <= limit) {
      area += (x - px) * (y + py) / 2;
      px = x;
      py = y;
      done = x == limit;
    } else {  // the limit falls between (px, py) and (x, y): interpolate there
      const double y_at = py + (y - py) * (limit - px) / (x - px);
      area += (limit - px) * (y_at + py) / 2;
      done = true;
    }
  }
};

}  // namespace

CurveSummary summarize_curve(std::vector<float>& pos, std::vector<float>& neg, std::vector<uint32_t>* regions,
                             const std::vector<int64_t>* region_sizes, double fpr_limit) {
  CurveSummary s;
  s.positives = static_cast<int64_t>(pos.size());
  s.negatives = static_cast<int64_t>(neg.size());
  if (pos.empty() || neg.empty()) {
    s.auroc = s.ap = s.f1_max = s.pro = s.f1_threshold = kNaN;
    return s;
  }
  const bool with_pro = regions != nullptr && region_sizes != nullptr && !region_sizes->empty();
  std::vector<double> weight;  // 1/|region| per region
  if (with_pro) {  // sort (score, region) pairs together
    for (int64_t size : *region_sizes) weight.push_back(1.0 / static_cast<double>(size));
    std::vector<std::pair<float, uint32_t>> pairs(pos.size());
    for (std::size_t i = 0; i < pos.size(); ++i) pairs[i] = {pos[i], (*regions)[i]};
    std::sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (std::size_t i = 0; i < pos.size(); ++i) std::tie(pos[i], (*regions)[i]) = pairs[i];
  } else {
    std::sort(pos.begin(), pos.end(), std::greater<float>());
  }
  std::sort(neg.begin(), neg.end(), std::greater<float>());

  const double P = static_cast<double>(pos.size()), N = static_cast<double>(neg.size());
  std::size_t i = 0, j = 0;
  double tp = 0, fp = 0, pro_sum = 0;
  double prev_fpr = 0, prev_tpr = 0;
  ProIntegral pro{fpr_limit};
  // Thresholds from high to low; all samples sharing a score enter together (one step).
  while (i < pos.size() || j < neg.size()) {
    const float t = i < pos.size() && (j >= neg.size() || pos[i] >= neg[j]) ? pos[i] : neg[j];
    for (; i < pos.size() && pos[i] == t; ++i) {
      tp += 1;
      if (with_pro) pro_sum += weight[(*regions)[i]];
    }
    for (; j < neg.size() && neg[j] == t; ++j) fp += 1;
    const double fpr = fp / N, tpr = tp / P;
    s.auroc += (fpr - prev_fpr) * (tpr + prev_tpr) / 2;
    const double precision = tp / (tp + fp);
    s.ap += (tpr - prev_tpr) * precision;
    // Strictly greater: of equal F1s the first, i.e. the highest threshold, is kept.
    if (precision + tpr > 0 && 2 * precision * tpr / (precision + tpr) > s.f1_max) {
      s.f1_max = 2 * precision * tpr / (precision + tpr);
      s.f1_threshold = t;
      s.f1_true_positives = static_cast<int64_t>(tp);
      s.f1_false_positives = static_cast<int64_t>(fp);
    }
    if (with_pro) pro.add(std::min(fpr, 1.0), std::min(pro_sum / static_cast<double>(weight.size()), 1.0));
    prev_fpr = fpr;
    prev_tpr = tpr;
  }
  if (with_pro) {
    pro.add(1.0, 1.0);  // the official curve ends at (1, 1)
    s.pro = pro.area / fpr_limit;
  } else {
    s.pro = kNaN;
  }
  return s;
}

namespace {

void split_by_label(const at::Tensor& scores, const at::Tensor& labels, std::vector<float>& pos, std::vector<float>& neg) {
  if (scores.dim() != 1 || labels.dim() != 1 || scores.size(0) != labels.size(0))
    throw ShapeError("metrics: scores and labels must both be [N]");
  const at::Tensor s = scores.detach().to(at::kCPU, at::kFloat).contiguous();
  const at::Tensor l = labels.detach().to(at::kCPU).ne(0).contiguous();
  if (!at::isfinite(s).all().item<bool>()) throw InputError("metrics: scores hold NaN or Inf");
  const float* sp = s.data_ptr<float>();
  const bool* lp = l.data_ptr<bool>();
  for (int64_t k = 0; k < s.numel(); ++k) (lp[k] ? pos : neg).push_back(sp[k]);
}

}  // namespace

ImageMetrics image_metrics(const at::Tensor& scores, const at::Tensor& labels) {
  std::vector<float> pos, neg;
  split_by_label(scores, labels, pos, neg);
  const CurveSummary s = summarize_curve(pos, neg);
  ImageMetrics m;
  m.auroc = s.auroc;
  m.ap = s.ap;
  m.f1_max = s.f1_max;
  m.f1_threshold = s.f1_threshold;
  m.f1_true_positives = s.f1_true_positives;
  m.f1_false_positives = s.f1_false_positives;
  m.positives = s.positives;
  m.negatives = s.negatives;
  return m;
}

double auroc(const at::Tensor& scores, const at::Tensor& labels) { return image_metrics(scores, labels).auroc; }
double average_precision(const at::Tensor& scores, const at::Tensor& labels) { return image_metrics(scores, labels).ap; }
double f1_max(const at::Tensor& scores, const at::Tensor& labels) { return image_metrics(scores, labels).f1_max; }

void PixelMetricAccumulator::add(const float* map, const uint8_t* mask, int64_t height, int64_t width) {
  const int64_t n = height * width;
  for (int64_t k = 0; k < n; ++k)
    if (!std::isfinite(map[k])) throw InputError("anomaly map holds NaN or Inf");
  for (int64_t k = 0; k < n; ++k) {
    map_min_ = images_ == 0 && k == 0 ? map[k] : std::min<double>(map_min_, map[k]);
    map_max_ = images_ == 0 && k == 0 ? map[k] : std::max<double>(map_max_, map[k]);
  }
  // GT regions: 8-connected components of the mask (official MVTec AD definition).
  cv::Mat binary(static_cast<int>(height), static_cast<int>(width), CV_8U);
  for (int64_t k = 0; k < n; ++k) binary.data[k] = mask[k] != 0;
  cv::Mat labels;
  const int count = cv::connectedComponents(binary, labels, 8, CV_32S);  // label 0 = background
  const uint32_t first_region = static_cast<uint32_t>(region_sizes_.size());
  region_sizes_.resize(region_sizes_.size() + count - 1, 0);
  const int32_t* lab = labels.ptr<int32_t>();
  for (int64_t k = 0; k < n; ++k) {
    if (lab[k] == 0) {
      negative_scores_.push_back(map[k]);
    } else {
      const uint32_t region = first_region + static_cast<uint32_t>(lab[k] - 1);
      positive_scores_.push_back(map[k]);
      positive_regions_.push_back(region);
      ++region_sizes_[region];
    }
  }
  ++images_;
}

void PixelMetricAccumulator::add(const at::Tensor& map, const at::Tensor& mask) {
  if (map.dim() != 2 || mask.sizes() != map.sizes()) throw ShapeError("pixel metrics: map and mask must both be [H, W]");
  const at::Tensor m = map.detach().to(at::kCPU, at::kFloat).contiguous();
  const at::Tensor g = mask.detach().to(at::kCPU).ne(0).to(at::kByte).contiguous();
  add(m.data_ptr<float>(), g.data_ptr<uint8_t>(), map.size(0), map.size(1));
}

PixelMetrics PixelMetricAccumulator::compute(double fpr_limit) {
  PixelMetrics out;
  out.anomalous_pixels = static_cast<int64_t>(positive_scores_.size());
  out.normal_pixels = static_cast<int64_t>(negative_scores_.size());
  out.regions = static_cast<int64_t>(region_sizes_.size());
  const CurveSummary s = summarize_curve(positive_scores_, negative_scores_, &positive_regions_, &region_sizes_, fpr_limit);
  out.auroc = s.auroc;
  out.ap = s.ap;
  out.f1_max = s.f1_max;
  out.f1_threshold = s.f1_threshold;
  out.pro = s.pro;
  out.map_min = map_min_;
  out.map_max = map_max_;
  return out;
}

double trapezoid_up_to(const std::vector<double>& x, const std::vector<double>& y, double x_max) {
  if (x.size() != y.size() || x.empty()) throw ShapeError("trapezoid: x and y must be non-empty and of equal length");
  ProIntegral integral{x_max, x[0], y[0]};
  for (std::size_t k = 1; k < x.size(); ++k) integral.add(x[k], y[k]);
  return integral.area;
}

}  // namespace anomalysd

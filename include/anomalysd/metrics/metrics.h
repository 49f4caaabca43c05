// Anomaly detection metrics, exact (no binning): image AUROC / AP / F1-max, pixel AUROC / AP /
// F1-max and PRO (AUPRO up to an FPR limit, normalised by it), as sklearn and the official MVTec AD
// evaluation script define them. Tied scores form one threshold step.
//
// Edge cases, decided here: a metric that needs both classes (AUROC, AP, F1, PRO) is NaN when the
// data have no positives or no negatives; callers show it as "n/a" and leave it out of means.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace anomalysd {

// Everything the streaming walk over thresholds (high to low) yields.
struct CurveSummary {
  double auroc = 0;   // area under (FPR, TPR) with trapezoids, from (0, 0)
  double ap = 0;      // Σ_k (R_k − R_{k−1}) · P_k over distinct thresholds (sklearn's average_precision_score)
  double f1_max = 0;  // max over thresholds of 2PR / (P + R)
  // The threshold behind f1_max: samples scoring ≥ it are called positive. Of thresholds with
  // equal F1 the highest (the fewest alarms); with it, the confusion counts at that threshold.
  double f1_threshold = 0;
  int64_t f1_true_positives = 0, f1_false_positives = 0;
  double pro = 0;     // ∫ PRO d(FPR) over [0, fpr_limit] / fpr_limit (only with region weights)
  int64_t positives = 0;
  int64_t negatives = 0;
};

// Scores of positives and of negatives, in any order; sorted in place (descending). For PRO, each
// positive names its GT region (`positive_regions`) and `region_sizes` holds each region's pixel
// count; a positive then weighs 1/|region| (in double, so that PRO sums stay exact).
CurveSummary summarize_curve(std::vector<float>& positive_scores, std::vector<float>& negative_scores,
                             std::vector<uint32_t>* positive_regions = nullptr, const std::vector<int64_t>* region_sizes = nullptr,
                             double fpr_limit = 0.3);

struct ImageMetrics {
  double auroc = 0, ap = 0, f1_max = 0;
  double f1_threshold = 0;  // score ≥ it = anomalous gives f1_max (CurveSummary)
  int64_t f1_true_positives = 0, f1_false_positives = 0, positives = 0, negatives = 0;
};

// scores [N] float, labels [N] (bool or 0/1 integers; 1 = anomalous).
ImageMetrics image_metrics(const at::Tensor& scores, const at::Tensor& labels);
double auroc(const at::Tensor& scores, const at::Tensor& labels);
double average_precision(const at::Tensor& scores, const at::Tensor& labels);
double f1_max(const at::Tensor& scores, const at::Tensor& labels);

struct PixelMetrics {
  double auroc = 0, ap = 0, f1_max = 0, pro = 0;
  double f1_threshold = 0;          // map value ≥ it = anomalous pixel gives f1_max
  double map_min = 0, map_max = 0;  // the range of every map value added
  int64_t anomalous_pixels = 0, normal_pixels = 0, regions = 0;
};

// Accumulates one class's test images (an anomaly map and its ground-truth mask each) and computes
// the pixel metrics over all of them. Keeps 4 bytes per normal pixel and 8 per anomalous pixel
// (a VisA-size class of 500 images at 512² needs ~0.5 GiB); GT regions are the 8-connected
// components of each mask, as in the official MVTec AD script.
class PixelMetricAccumulator {
 public:
  // map: float [H, W]; mask: [H, W], non-zero = anomalous. Sizes must match.
  void add(const float* map, const uint8_t* mask, int64_t height, int64_t width);
  void add(const at::Tensor& map, const at::Tensor& mask);
  PixelMetrics compute(double fpr_limit = 0.3);  // sorts the stored scores; call once
  int64_t images() const { return images_; }

 private:
  std::vector<float> positive_scores_, negative_scores_;
  std::vector<uint32_t> positive_regions_;  // index into region_sizes_
  std::vector<int64_t> region_sizes_;
  double map_min_ = 0, map_max_ = 0;
  int64_t images_ = 0;
};

// The official AUPRO integration: trapezoids over (fpr, pro) points (sorted by fpr) up to x_max,
// interpolating the curve linearly at x_max when it falls between points. Exposed for tests.
double trapezoid_up_to(const std::vector<double>& x, const std::vector<double>& y, double x_max);

}  // namespace anomalysd

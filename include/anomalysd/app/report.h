// The pictures of an evaluation: report.html (the tables, then per class its highest- and
// lowest-scored test images as image | ground truth | anomaly map | overlay) and report.png (the
// same rows in one picture), written atomically into the run's folder.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "anomalysd/data/dataset.h"
#include "anomalysd/metrics/threshold.h"

namespace anomalysd {

struct ReportSample {
  TestSample sample;
  double score = 0;
  std::string map;  // the map file (float32 TIFF)
};

// How a class's pictures are coloured and cut (a calibration's, or none).
struct ReportScale {
  ScoreScale image;  // verdicts: score ≥ image.threshold is anomalous
  ScoreScale pixel;  // colours (normalised map) and predicted regions (map ≥ pixel.threshold)
};

struct ReportOptions {
  std::string title = "AnomalySD evaluation";
  std::vector<std::string> tables_markdown;  // shown in order (table.md contents)
  int per_side = 2;                          // highest and lowest scored images per class
  int thumbnail = 128;                       // pixels per panel
  // Per class: with a scale the map panels are coloured on it (0.5 = the threshold), the overlay
  // outlines the predicted regions and the caption gives the verdict; without, colours span 0 to
  // the class's highest score.
  std::map<std::string, ReportScale> scales;
};

// per_class: every scored test image of each class. Writes <dir>/report.html, <dir>/report.png and
// the panel strips under <dir>/report/.
void write_report(const std::string& dir, const std::map<std::string, std::vector<ReportSample>>& per_class,
                  const ReportOptions& options);

// The pictures `infer` and the report draw.
// The map's values normalised on `scale` (float, 0.5 = the threshold).
cv::Mat normalized_map(const cv::Mat& map, const ScoreScale& scale);
// The predicted defect mask: 255 where map ≥ threshold, else 0 (CV_8U, the map's size).
cv::Mat predicted_mask(const cv::Mat& map, double threshold);
// An inspection overlay: `normalized` (values in [0, 1], the image's size or resized to it) as a
// JET heat map over the RGB8 image, so that colours mean the same on every image of a run; the
// regions of `mask` (if not empty) outlined in white; `banner` (if not empty) printed at the top.
cv::Mat inspection_overlay(const cv::Mat& rgb8, const cv::Mat& normalized, const cv::Mat& mask, const std::string& banner);

// A markdown table block ("| a | b |" lines) as an HTML table; other lines as paragraphs.
std::string markdown_to_html(const std::string& markdown);

}  // namespace anomalysd

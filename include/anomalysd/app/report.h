// The pictures of an evaluation: report.html (the tables, then per class its highest- and
// lowest-scored test images as image | ground truth | anomaly map | overlay) and report.png (the
// same rows in one picture), written atomically into the run's folder.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "anomalysd/data/dataset.h"

namespace anomalysd {

struct ReportSample {
  TestSample sample;
  double score = 0;
  std::string map;  // the map file (float32 TIFF)
};

struct ReportOptions {
  std::string title = "AnomalySD evaluation";
  std::vector<std::string> tables_markdown;  // shown in order (table.md contents)
  int per_side = 2;                          // highest and lowest scored images per class
  int thumbnail = 128;                       // pixels per panel
};

// per_class: every scored test image of each class. Writes <dir>/report.html, <dir>/report.png and
// the panel strips under <dir>/report/.
void write_report(const std::string& dir, const std::map<std::string, std::vector<ReportSample>>& per_class,
                  const ReportOptions& options);

// A markdown table block ("| a | b |" lines) as an HTML table; other lines as paragraphs.
std::string markdown_to_html(const std::string& markdown);

}  // namespace anomalysd

#include "anomalysd/app/report.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include <opencv2/imgproc.hpp>

#include "anomalysd/data/image_io.h"
#include "anomalysd/io/atomic_write.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace {

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::vector<std::string> split_row(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream ss(line.substr(1));
  for (std::string cell; std::getline(ss, cell, '|');) {
    const auto a = cell.find_first_not_of(' '), b = cell.find_last_not_of(' ');
    cells.push_back(a == std::string::npos ? "" : cell.substr(a, b - a + 1));
  }
  if (!cells.empty() && cells.back().empty()) cells.pop_back();
  return cells;
}

cv::Mat thumbnail(const cv::Mat& rgb8, int size) {
  cv::Mat out;
  cv::resize(rgb8, out, cv::Size(size, size), 0, 0, rgb8.rows > size ? cv::INTER_AREA : cv::INTER_NEAREST);
  return out;
}

// image | ground truth | map | overlay, `size` pixels each, 2-pixel white gaps. With a scale the
// map is coloured on it and the overlay outlines the predicted regions.
cv::Mat panel_strip(const ReportSample& r, double hi, const ReportScale* scale, int size) {
  const cv::Mat image = read_rgb(r.sample.image);
  cv::Mat gt = cv::Mat::zeros(image.rows, image.cols, CV_8U);
  if (!r.sample.mask.empty()) gt = read_mask(r.sample.mask) * 255;
  cv::Mat gt_rgb;
  cv::cvtColor(gt, gt_rgb, cv::COLOR_GRAY2RGB);
  cv::Mat map = read_anomaly_map(r.map);
  if (map.size() != image.size()) cv::resize(map, map, image.size(), 0, 0, cv::INTER_LINEAR);
  cv::Mat colours, mask;
  if (scale) {
    colours = normalized_map(map, scale->pixel);
    mask = predicted_mask(map, scale->pixel.threshold);
  } else {
    colours = normalized_map(map, ScoreScale{hi / 2, 0.0, hi});
  }
  const cv::Mat panels[4] = {thumbnail(image, size), thumbnail(gt_rgb, size), thumbnail(heatmap(colours, 0.0, 1.0), size),
                             thumbnail(inspection_overlay(image, colours, mask, ""), size)};
  cv::Mat strip(size, 4 * size + 6, CV_8UC3, cv::Scalar(255, 255, 255));
  for (int i = 0; i < 4; ++i) panels[i].copyTo(strip(cv::Rect(i * (size + 2), 0, size, size)));
  return strip;
}

}  // namespace

cv::Mat normalized_map(const cv::Mat& map, const ScoreScale& scale) {
  cv::Mat out(map.size(), CV_32F);
  for (int y = 0; y < map.rows; ++y) {
    const float* in = map.ptr<float>(y);
    float* o = out.ptr<float>(y);
    for (int x = 0; x < map.cols; ++x) o[x] = static_cast<float>(scale.normalize(in[x]));
  }
  return out;
}

cv::Mat predicted_mask(const cv::Mat& map, double threshold) {
  cv::Mat out(map.size(), CV_8U);
  // float comparison, as the metrics rank the maps' float values
  const float t = static_cast<float>(threshold);
  for (int y = 0; y < map.rows; ++y) {
    const float* in = map.ptr<float>(y);
    uint8_t* o = out.ptr<uint8_t>(y);
    for (int x = 0; x < map.cols; ++x) o[x] = in[x] >= t ? 255 : 0;
  }
  return out;
}

cv::Mat inspection_overlay(const cv::Mat& rgb8, const cv::Mat& normalized, const cv::Mat& mask, const std::string& banner) {
  cv::Mat out = heatmap_overlay(rgb8, normalized, 0.0, 1.0);
  // A small image with a verdict is enlarged (whole pixels) so that the text and outlines stay readable.
  if (!banner.empty() && out.cols < 256) {
    const int factor = (256 + out.cols - 1) / out.cols;
    cv::resize(out, out, cv::Size(out.cols * factor, out.rows * factor), 0, 0, cv::INTER_NEAREST);
  }
  const int line = std::max(1, std::min(out.rows, out.cols) / 160);
  if (!mask.empty()) {
    cv::Mat binary = mask;
    if (binary.size() != out.size()) cv::resize(mask, binary, out.size(), 0, 0, cv::INTER_NEAREST);
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(binary.clone(), contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE);
    cv::drawContours(out, contours, -1, cv::Scalar(255, 255, 255), line, cv::LINE_8);
  }
  if (!banner.empty()) {
    const double font = std::max(0.3, out.cols / 640.0);
    int base = 0;
    const cv::Size text = cv::getTextSize(banner, cv::FONT_HERSHEY_SIMPLEX, font, line, &base);
    // Small images get a band above them rather than text over the whole picture.
    if (text.width > out.cols || out.rows < 4 * (text.height + base)) {
      cv::Mat band(text.height + base + 6, std::max(out.cols, text.width + 6), CV_8UC3, cv::Scalar(0, 0, 0));
      cv::putText(band, banner, cv::Point(3, text.height + 3), cv::FONT_HERSHEY_SIMPLEX, font, cv::Scalar(255, 255, 255), line, cv::LINE_AA);
      cv::Mat padded(out.rows, band.cols, CV_8UC3, cv::Scalar(0, 0, 0));
      out.copyTo(padded(cv::Rect(0, 0, out.cols, out.rows)));
      cv::vconcat(band, padded, out);
    } else {
      cv::rectangle(out, cv::Rect(0, 0, text.width + 6, text.height + base + 6), cv::Scalar(0, 0, 0), cv::FILLED);
      cv::putText(out, banner, cv::Point(3, text.height + 3), cv::FONT_HERSHEY_SIMPLEX, font, cv::Scalar(255, 255, 255), line, cv::LINE_AA);
    }
  }
  return out;
}

std::string markdown_to_html(const std::string& markdown) {
  std::ostringstream html;
  std::stringstream in(markdown);
  bool in_table = false, header = false;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] == '|') {
      const auto cells = split_row(line);
      if (!in_table) {
        html << "<table>\n";
        in_table = true;
        header = true;
      }
      if (!cells.empty() && cells[0].find("---") != std::string::npos) continue;  // the separator row
      html << "<tr>";
      for (const auto& c : cells) {
        std::string text = c;
        const bool bold = text.size() > 4 && text.rfind("**", 0) == 0;
        if (bold) text = text.substr(2, text.size() - 4);
        html << (header ? "<th>" : "<td>") << (bold ? "<b>" : "") << html_escape(text) << (bold ? "</b>" : "") << (header ? "</th>" : "</td>");
      }
      html << "</tr>\n";
      header = false;
      continue;
    }
    if (in_table) {
      html << "</table>\n";
      in_table = false;
    }
    if (!line.empty()) html << "<p>" << html_escape(line) << "</p>\n";
  }
  if (in_table) html << "</table>\n";
  return html.str();
}

void write_report(const std::string& dir, const std::map<std::string, std::vector<ReportSample>>& per_class, const ReportOptions& options) {
  const fs::path root(dir);
  fs::create_directories(root / "report");
  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" << html_escape(options.title) << "</title>\n"
       << "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
       << "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}img{display:block}"
       << ".caption{font-size:90%;color:#333;margin:2px 0 12px}</style></head><body>\n";
  html << "<h1>" << html_escape(options.title) << "</h1>\n";
  for (const auto& t : options.tables_markdown) html << markdown_to_html(t);
  html << "<h2>Highest- and lowest-scored test images per class</h2>\n"
       << "<p>Each row: image | ground truth | anomaly map | overlay. With a calibration (eval's calibration.json) colours are on its "
       << "scale (green = the pixel threshold, red above it) and the overlay outlines the predicted regions; without, colours span 0 "
       << "to the class's highest score.</p>\n";

  std::vector<cv::Mat> rows;
  const int size = options.thumbnail;
  for (const auto& [cls, samples] : per_class) {
    if (samples.empty()) continue;
    std::vector<ReportSample> sorted = samples;
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
    const double hi = std::max(sorted.front().score, 1e-12);
    std::vector<std::pair<std::string, const ReportSample*>> picks;
    const int n = static_cast<int>(sorted.size());
    for (int i = 0; i < std::min(options.per_side, n); ++i) picks.emplace_back("highest #" + std::to_string(i + 1), &sorted[i]);
    for (int i = std::max(options.per_side, n - options.per_side); i < n; ++i) picks.emplace_back("lowest #" + std::to_string(n - i), &sorted[i]);
    html << "<h3>" << html_escape(cls) << "</h3>\n";
    for (const auto& [rank, r] : picks) {
      const auto scale = options.scales.find(cls);
      const cv::Mat strip = panel_strip(*r, hi, scale == options.scales.end() ? nullptr : &scale->second, size);
      const std::string name = cls + "_" + r->sample.defect + "_" + r->sample.id + ".png";
      write_png((root / "report" / name).string(), strip);
      char caption[256];
      std::string verdict;
      if (scale != options.scales.end())
        verdict = std::string(", predicted ") + (static_cast<float>(r->score) >= static_cast<float>(scale->second.image.threshold) ? "anomalous" : "normal") +
                  " at " + std::to_string(scale->second.image.normalize(r->score)).substr(0, 4);
      std::snprintf(caption, sizeof caption, "%s - %s/%s, score %.4g (%s%s)", rank.c_str(), r->sample.defect.c_str(), r->sample.id.c_str(),
                    r->score, r->sample.anomalous ? "anomalous" : "normal", verdict.c_str());
      html << "<img src=\"report/" << html_escape(name) << "\"><div class=\"caption\">" << html_escape(caption) << "</div>\n";
      // report.png: the strip with its caption above it
      cv::Mat row(strip.rows + 18, strip.cols, CV_8UC3, cv::Scalar(255, 255, 255));
      strip.copyTo(row(cv::Rect(0, 18, strip.cols, strip.rows)));
      cv::putText(row, cls + ": " + caption, cv::Point(2, 13), cv::FONT_HERSHEY_SIMPLEX, 0.38, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
      rows.push_back(row);
    }
  }
  html << "</body></html>\n";
  write_file_atomically((root / "report.html").string(), html.str());
  if (!rows.empty()) {
    cv::Mat picture;
    cv::vconcat(rows, picture);
    write_png((root / "report.png").string(), picture);
  }
}

}  // namespace anomalysd

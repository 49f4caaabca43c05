// `finetune`'s loss log: train_log.csv (every step) and loss.png (its curve, redrawn at each save).
#include <cmath>
#include <fstream>
#include <sstream>

#include <opencv2/imgproc.hpp>

#include "anomalysd/data/image_io.h"
#include "app/finetune_internal.h"

namespace anomalysd::finetune_detail {

void write_loss_plot(const std::string& path, const std::vector<LoggedStep>& log) {
  const int width = 720, height = 360, left = 60, right = 20, top = 20, bottom = 40;
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  if (log.empty()) return;
  double lo = INFINITY, hi = -INFINITY;
  int64_t last = 1;
  for (const auto& [step, part, loss] : log) {
    if (loss > 0 && std::isfinite(loss)) {
      lo = std::min(lo, std::log10(loss));
      hi = std::max(hi, std::log10(loss));
    }
    last = std::max(last, step + 1);
  }
  if (!std::isfinite(lo)) return;
  if (hi - lo < 1e-6) hi = lo + 1;
  auto px = [&](int64_t step) { return left + static_cast<int>((width - left - right) * static_cast<double>(step) / static_cast<double>(last)); };
  auto py = [&](double loss) { return top + static_cast<int>((height - top - bottom) * (hi - std::log10(loss)) / (hi - lo)); };
  cv::rectangle(img, cv::Point(left, top), cv::Point(width - right, height - bottom), cv::Scalar(0, 0, 0));
  const cv::Scalar colours[2] = {cv::Scalar(200, 60, 30), cv::Scalar(30, 120, 200)};
  cv::Point prev(-1, -1);
  int prev_part = -1;
  for (const auto& [step, part, loss] : log) {
    if (!(loss > 0) || !std::isfinite(loss)) continue;
    const cv::Point p(px(step), py(loss));
    if (prev.x >= 0 && prev_part == part) cv::line(img, prev, p, colours[part], 1, cv::LINE_AA);
    prev = p;
    prev_part = part;
  }
  char label[64];
  std::snprintf(label, sizeof label, "%.3g", std::pow(10.0, hi));
  cv::putText(img, label, cv::Point(2, top + 10), cv::FONT_HERSHEY_SIMPLEX, 0.4, cv::Scalar(0, 0, 0));
  std::snprintf(label, sizeof label, "%.3g", std::pow(10.0, lo));
  cv::putText(img, label, cv::Point(2, height - bottom), cv::FONT_HERSHEY_SIMPLEX, 0.4, cv::Scalar(0, 0, 0));
  std::snprintf(label, sizeof label, "step %lld", static_cast<long long>(last));
  cv::putText(img, label, cv::Point(width - right - 90, height - 12), cv::FONT_HERSHEY_SIMPLEX, 0.4, cv::Scalar(0, 0, 0));
  cv::putText(img, "unet loss (eq. 8)", cv::Point(left + 10, height - 12), cv::FONT_HERSHEY_SIMPLEX, 0.4, colours[0]);
  cv::putText(img, "decoder loss (eq. 9)", cv::Point(left + 170, height - 12), cv::FONT_HERSHEY_SIMPLEX, 0.4, colours[1]);
  write_png(path, img, /*rgb=*/false);
}

void read_train_log(const std::string& path, int64_t next_step, std::ostringstream& text, std::vector<LoggedStep>& log) {
  text << "step,part,loss,mse,lpips,grad_norm,lr,seconds\n";
  if (next_step <= 0) return;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::string s_step, s_part, s_loss;
    std::getline(ss, s_step, ',');
    std::getline(ss, s_part, ',');
    std::getline(ss, s_loss, ',');
    try {
      if (std::stoll(s_step) >= next_step) continue;
      log.emplace_back(std::stoll(s_step), s_part == "unet" ? kUnet : kDecoder, std::stod(s_loss));
      text << line << "\n";
    } catch (const std::exception&) {
    }
  }
}

}  // namespace anomalysd::finetune_detail

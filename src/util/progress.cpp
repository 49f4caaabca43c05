#include "anomalysd/util/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <spdlog/spdlog.h>

namespace anomalysd {

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), total_(std::max<int64_t>(total, 0)), unit_(std::move(unit)) {
  tty_ = ::isatty(STDERR_FILENO) != 0;
  enabled_ = spdlog::should_log(spdlog::level::info);
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() {
  if (!finished_) finish();
}

double ProgressBar::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::advance(int64_t n) {
  done_ += n;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since >= (tty_ ? 0.1 : log_every_s_)) {
    last_draw_ = now;
    draw(false);
  }
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
}

void ProgressBar::draw(bool final) {
  if (!enabled_) return;
  const std::string line = render(label_, done_, total_, elapsed(), unit_);
  if (tty_) {
    std::fprintf(stderr, "\r%s\033[K%s", line.c_str(), final ? "\n" : "");
    std::fflush(stderr);
  } else {
    spdlog::info("{}", line);
  }
}

std::string ProgressBar::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  return buf;
}

std::string ProgressBar::format_rate(double per_second, const std::string& unit) {
  char buf[64];
  if (!(per_second > 0) || !std::isfinite(per_second)) return "? " + unit + "/s";
  if (per_second >= 1.0)
    std::snprintf(buf, sizeof buf, "%.2f %s/s", per_second, unit.c_str());
  else
    std::snprintf(buf, sizeof buf, "%.2f s/%s", 1.0 / per_second, unit.c_str());
  return buf;
}

std::string ProgressBar::render(const std::string& label, int64_t done, int64_t total, double elapsed_s,
                                const std::string& unit, int bar_width) {
  const double rate = elapsed_s > 0 ? static_cast<double>(done) / elapsed_s : 0.0;
  std::string out = label.empty() ? "" : label + " ";
  if (total > 0) {
    const double frac = std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0);
    const int filled = static_cast<int>(frac * bar_width);
    char pct[8];
    std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(frac * 100.0));
    const double eta = rate > 0 ? static_cast<double>(total - std::min(done, total)) / rate : -1.0;
    out += std::string(pct) + " |" + std::string(filled, '#') + std::string(bar_width - filled, ' ') + "| " +
           std::to_string(done) + "/" + std::to_string(total) + " [" + format_duration(elapsed_s) + "<" +
           format_duration(eta) + ", " + format_rate(rate, unit) + "]";
  } else {
    out += std::to_string(done) + " " + unit + " [" + format_duration(elapsed_s) + ", " + format_rate(rate, unit) + "]";
  }
  return out;
}

}  // namespace anomalysd

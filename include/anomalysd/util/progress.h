// A progress bar for long loops (fine-tuning steps, images, masks) with rate and ETA.
// On a terminal it redraws one line on stderr; otherwise (CI, pipes) it logs a line every
// `log_every_s` seconds, so logs stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace anomalysd {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, std::string unit = "it");
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  ~ProgressBar();

  void advance(int64_t n = 1);
  void finish();  // draws the final state once; called by the destructor if needed
  int64_t done() const { return done_; }

  // "label  42% |########        | 42/100 [00:10<00:14, 4.20 it/s]" — pure, for tests.
  static std::string render(const std::string& label, int64_t done, int64_t total, double elapsed_s,
                            const std::string& unit, int bar_width = 24);
  static std::string format_duration(double seconds);  // "mm:ss" or "h:mm:ss"
  static std::string format_rate(double per_second, const std::string& unit);  // "4.20 it/s" or "3.10 s/it"

 private:
  void draw(bool final);
  double elapsed() const;

  std::string label_;
  int64_t total_;
  std::string unit_;
  int64_t done_ = 0;
  bool finished_ = false;
  bool tty_ = false;
  bool enabled_ = true;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  double log_every_s_ = 10.0;
};

}  // namespace anomalysd

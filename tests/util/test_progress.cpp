#include <gtest/gtest.h>

#include "anomalysd/util/progress.h"

namespace anomalysd {
namespace {

TEST(ProgressBar, RendersFractionRateAndEta) {
  EXPECT_EQ(ProgressBar::render("masks", 25, 100, 10.0, "it", 8),
            "masks  25% |##      | 25/100 [00:10<00:30, 2.50 it/s]");
  EXPECT_EQ(ProgressBar::render("", 100, 100, 4.0, "img", 4), "100% |####| 100/100 [00:04<00:00, 25.00 img/s]");
}

TEST(ProgressBar, SlowRatesShowSecondsPerItem) {
  EXPECT_EQ(ProgressBar::render("steps", 2, 10, 26.0, "step", 4),
            "steps  20% |    | 2/10 [00:26<01:44, 13.00 s/step]");
}

TEST(ProgressBar, UnknownTotalAndNoProgress) {
  EXPECT_EQ(ProgressBar::render("scan", 7, 0, 3.5, "file"), "scan 7 file [00:04, 2.00 file/s]");
  EXPECT_EQ(ProgressBar::render("x", 0, 5, 0.0, "it", 5), "x   0% |     | 0/5 [00:00<--:--, ? it/s]");
}

TEST(ProgressBar, Durations) {
  EXPECT_EQ(ProgressBar::format_duration(0), "00:00");
  EXPECT_EQ(ProgressBar::format_duration(59.4), "00:59");
  EXPECT_EQ(ProgressBar::format_duration(3599.6), "1:00:00");
  EXPECT_EQ(ProgressBar::format_duration(7384), "2:03:04");
  EXPECT_EQ(ProgressBar::format_duration(-1), "--:--");
}

TEST(ProgressBar, CountsAdvances) {
  ProgressBar bar("t", 10);
  bar.advance();
  bar.advance(4);
  EXPECT_EQ(bar.done(), 5);
}

}  // namespace
}  // namespace anomalysd

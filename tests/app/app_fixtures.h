// Shared set-up of the command tests: the tiny pipeline from the fixtures, random feature
// weights written once per test folder, and a config for small, fast runs.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "anomalysd/metrics/results.h"

namespace anomalysd::test {

// A smooth random RGB image (a 4×4 grid of values in [0.2, 0.8] bilinearly enlarged) of h × w,
// as `type` (8- or 16-bit; 1, 3 or 4 channels): what the command tests feed `infer`.
cv::Mat smooth_image(int h, int w, int seed, int type = CV_8UC3);

// Writes alexnet / lpips / efficientnet_b0 random weights into `dir` and returns the --set
// overrides that point the config at them (plus small, fast inference settings at 32²).
std::vector<std::string> small_run_overrides(const std::filesystem::path& dir);

// A small MVTec-layout dataset of smooth random textures: per class `train` normal training
// images, `good` normal and `bad` anomalous test images (a bright square, its exact mask), size².
void make_textured_dataset(const std::filesystem::path& root, const std::vector<std::string>& classes, int train, int good, int bad,
                           int size = 32);

// Two runs' metrics, class by class, exactly (GoogleTest expectations).
void expect_same_metrics(const RunResults& a, const RunResults& b);

// Runs the CLI (ANOMALYSD_CLI) with arguments; returns its exit code, output in `log`.
int run_cli(const std::string& args, std::string* log = nullptr);

}  // namespace anomalysd::test

// Small synthetic dataset trees for the data and evaluation tests.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace anomalysd::test {

// A PNG/JPEG of height × width; a mask has a 4×4 square of 255 at (2..5, 2..5) when `mask` is set.
void write_image(const std::filesystem::path& path, int height, int width, bool mask);

// <root>/<cls>/{train/good/NNN.png × train, test/<defect>/NNN.png, ground_truth/<defect>/NNN<suffix>.png}
// for each (defect, count); images 16×20.
void make_mvtec_class(const std::filesystem::path& root, const std::string& cls, int train,
                      const std::vector<std::pair<std::string, int>>& test, const std::string& mask_suffix = "_mask");

}  // namespace anomalysd::test

// The dataset readers' text formats: VisA's split_csv/1cls.csv (input part 1, against a small
// tree whose images exist), a shots.json record (part 2) and a scores CSV (part 3), separated by
// "\n===\n".
#include <filesystem>

#include <nlohmann/json.hpp>

#include "anomalysd/data/dataset.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/metrics/results.h"
#include "fuzz_support.h"

namespace {

const std::filesystem::path& visa_root() {
  static const std::filesystem::path root = [] {
    namespace fs = std::filesystem;
    const fs::path r = anomalysd::fuzz::scratch() / "visa";
    for (const char* f : {"candle/Data/Images/Normal/0000.JPG", "candle/Data/Images/Anomaly/0001.JPG", "candle/Data/Masks/Anomaly/0001.png",
                          "pcb1/Data/Images/Normal/0000.JPG"}) {
      fs::create_directories((r / f).parent_path());
      std::FILE* out = std::fopen((r / f).c_str(), "wb");
      std::fclose(out);
    }
    fs::create_directories(r / "split_csv");
    return r;
  }();
  return root;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto parts = anomalysd::fuzz::split_input(data, size, "\n===\n", 3);
  const auto& root = visa_root();
  anomalysd::fuzz::write_input("visa/split_csv/1cls.csv", reinterpret_cast<const uint8_t*>(parts[0].data()), parts[0].size());
  try {
    const auto d = anomalysd::load_dataset("visa", root.string(), {"candle", "pcb1"});
    for (const auto& c : d.classes)
      for (const auto& s : c.test)
        if (s.anomalous && s.mask.empty()) __builtin_trap();
  } catch (const anomalysd::InputError&) {
  }
  // As eval reads a shots record: the JSON reader, then the selection.
  const std::string shots = anomalysd::fuzz::write_input("shots.json", reinterpret_cast<const uint8_t*>(parts[1].data()), parts[1].size());
  try {
    (void)anomalysd::ShotSelection::from_json(anomalysd::read_json_file(shots), shots);
  } catch (const anomalysd::InputError&) {
  }
  const std::string scores = anomalysd::fuzz::write_input("scores.csv", reinterpret_cast<const uint8_t*>(parts[2].data()), parts[2].size());
  try {
    for (const auto& [key, v] : anomalysd::read_scores_csv(scores))
      if (!std::isfinite(v)) __builtin_trap();
  } catch (const anomalysd::InputError&) {
  }
  return 0;
}

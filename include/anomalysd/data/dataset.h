// Anomaly detection datasets as laid out on disk (no downloads): MVTec AD, VisA (raw release with
// split_csv/1cls.csv, or the MVTec-like "1cls" layout its prepare_data.py writes) and a generic
// folder layout for users' own data. Torch-free: paths and labels only; pixels are read by
// data/image_io.h when needed.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace anomalysd {

struct TestSample {
  std::string cls;
  std::string defect;  // test sub-folder: "good" for normal images
  std::string id;      // file stem
  std::string image;   // path
  std::string mask;    // path, "" for normal images (or when the class has no masks)
  bool anomalous = false;
};

struct ClassData {
  std::string name;
  std::vector<std::string> train_good;  // normal training images (the few-shot pool), sorted
  std::vector<TestSample> test;         // sorted by defect, then id
  bool has_masks = true;                // false: only image-level metrics
};

struct Dataset {
  std::string kind;  // mvtec | visa | folder
  std::string root;
  std::vector<ClassData> classes;

  const ClassData& at(const std::string& cls) const;  // throws InputError for an unknown class
};

const std::vector<std::string>& mvtec_classes();
const std::vector<std::string>& visa_classes();

// `classes` empty = all of the dataset's classes (folder: every sub-folder with a test/ folder).
// Errors name the missing class folder, the anomalous image without its mask, the bad CSV row.
Dataset load_dataset(const std::string& kind, const std::string& root, const std::vector<std::string>& classes = {});

// Few-shot sampling (paper: K normal shots per class, one sample for all classes): K training
// images per class, chosen by a portable seeded shuffle, with the chosen files recorded so that a
// run can be repeated exactly.
struct ShotSelection {
  int64_t k = 0;
  uint64_t seed = 0;
  std::map<std::string, std::vector<std::string>> shots;  // class -> image paths

  nlohmann::json to_json() const;
  static ShotSelection from_json(const nlohmann::json& j, const std::string& where);
};

ShotSelection sample_shots(const Dataset& dataset, int64_t k, uint64_t seed);

}  // namespace anomalysd

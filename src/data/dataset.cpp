#include "anomalysd/data/dataset.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "anomalysd/io/errors.h"

namespace anomalysd {

namespace fs = std::filesystem;

const std::vector<std::string>& mvtec_classes() {
  static const std::vector<std::string> names = {"bottle", "cable",  "capsule", "carpet",     "grid",
                                                 "hazelnut", "leather", "metal_nut", "pill", "screw",
                                                 "tile",   "toothbrush", "transistor", "wood", "zipper"};
  return names;
}

const std::vector<std::string>& visa_classes() {
  static const std::vector<std::string> names = {"candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1",
                                                 "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum"};
  return names;
}

const ClassData& Dataset::at(const std::string& cls) const {
  for (const auto& c : classes)
    if (c.name == cls) return c;
  throw InputError("class '" + cls + "' is not in the " + kind + " dataset at " + root);
}

namespace {

bool is_image(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp" || ext == ".tif" || ext == ".tiff";
}

// Folder listings skip what cannot be examined (a symlink loop, a dangling link, an entry without
// permission) instead of failing on it; the error codes keep std::filesystem from throwing.
std::vector<std::string> images_in(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code e2;
    if (it->is_regular_file(e2) && is_image(it->path())) out.push_back(it->path().string());
  }
  if (ec) throw FormatError(dir.string(), "cannot list the folder: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> subfolders(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code e2;
    if (it->is_directory(e2)) out.push_back(it->path().filename().string());
  }
  if (ec) throw FormatError(dir.string(), "cannot list the folder: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

// MVTec-style class folder: train/good, test/<defect>, ground_truth/<defect>/<id>[_mask].png.
ClassData read_mvtec_style_class(const fs::path& root, const std::string& cls, bool masks_required) {
  const fs::path dir = root / cls;
  if (!fs::is_directory(dir)) throw FormatError(dir.string(), "class folder not found");
  if (!fs::is_directory(dir / "test")) throw FormatError(dir.string(), "has no test/ folder");
  ClassData c;
  c.name = cls;
  c.train_good = images_in(dir / "train" / "good");
  const fs::path gt = dir / "ground_truth";
  c.has_masks = masks_required || fs::is_directory(gt);
  for (const std::string& defect : subfolders(dir / "test")) {
    for (const std::string& image : images_in(dir / "test" / defect)) {
      TestSample s;
      s.cls = cls;
      s.defect = defect;
      s.id = fs::path(image).stem().string();
      s.image = image;
      s.anomalous = defect != "good";
      if (s.anomalous && c.has_masks) {
        for (const fs::path& candidate : {gt / defect / (s.id + "_mask.png"), gt / defect / (s.id + ".png")})
          if (fs::is_regular_file(candidate)) s.mask = candidate.string();
        if (s.mask.empty())
          throw FormatError(image, "anomalous test image without its mask (looked for " + (gt / defect / (s.id + "_mask.png")).string() +
                                       " and " + (gt / defect / (s.id + ".png")).string() + ")");
      }
      c.test.push_back(std::move(s));
    }
  }
  if (c.test.empty()) throw FormatError((dir / "test").string(), "holds no test images");
  return c;
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  for (std::string cell; std::getline(ss, cell, ',');) {
    while (!cell.empty() && (cell.back() == '\r' || cell.back() == ' ')) cell.pop_back();
    out.push_back(cell);
  }
  if (!line.empty() && line.back() == ',') out.emplace_back();
  return out;
}

// VisA's raw release: images and masks listed in split_csv/1cls.csv (object,split,label,image,mask).
std::vector<ClassData> read_visa_raw(const fs::path& root, const std::vector<std::string>& wanted) {
  const fs::path csv = root / "split_csv" / "1cls.csv";
  std::ifstream in(csv);
  if (!in) throw FormatError(csv.string(), "cannot open");
  std::string line;
  std::getline(in, line);
  const auto header = split_csv_line(line);
  if (header != std::vector<std::string>{"object", "split", "label", "image", "mask"})
    throw FormatError(csv.string(), "expected the header 'object,split,label,image,mask', got '" + line + "'");
  std::map<std::string, ClassData> classes;
  for (const auto& cls : wanted) {
    classes[cls].name = cls;
    if (!fs::is_directory(root / cls)) throw FormatError((root / cls).string(), "class folder not found");
  }
  int row = 1;
  while (std::getline(in, line)) {
    ++row;
    if (line.empty() || line == "\r") continue;
    const auto cells = split_csv_line(line);
    const std::string where = csv.string() + ":" + std::to_string(row);
    if (cells.size() < 4) throw FormatError(where, "expected 5 columns, got '" + line + "'");
    const std::string& object = cells[0];
    if (!classes.count(object)) continue;
    const std::string image = (root / cells[3]).string();
    if (!fs::is_regular_file(image)) throw FormatError(where, "image not found: " + image);
    ClassData& c = classes[object];
    if (cells[1] == "train") {
      if (cells[2] == "normal") c.train_good.push_back(image);
    } else if (cells[1] == "test") {
      TestSample s;
      s.cls = object;
      s.anomalous = cells[2] == "anomaly";
      s.defect = s.anomalous ? "bad" : "good";
      s.id = fs::path(image).stem().string();
      s.image = image;
      if (s.anomalous) {
        if (cells.size() < 5 || cells[4].empty()) throw FormatError(where, "anomalous test image without its mask: " + image);
        s.mask = (root / cells[4]).string();
        if (!fs::is_regular_file(s.mask)) throw FormatError(where, "mask not found: " + s.mask);
      }
      c.test.push_back(std::move(s));
    } else {
      throw FormatError(where, "unknown split '" + cells[1] + "' (train or test)");
    }
  }
  std::vector<ClassData> out;
  for (const auto& cls : wanted) {
    ClassData c = std::move(classes[cls]);
    if (c.test.empty()) throw FormatError(csv.string(), "lists no test images for class '" + cls + "'");
    std::sort(c.train_good.begin(), c.train_good.end());
    std::sort(c.test.begin(), c.test.end(), [](const auto& a, const auto& b) { return std::tie(a.defect, a.id) < std::tie(b.defect, b.id); });
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

Dataset load_dataset(const std::string& kind, const std::string& root_path, const std::vector<std::string>& classes) {
  const fs::path root(root_path);
  if (!fs::is_directory(root)) throw FormatError(root_path, "dataset folder not found");
  Dataset d;
  d.kind = kind;
  d.root = root_path;
  std::vector<std::string> wanted = classes;
  if (kind == "mvtec" || kind == "visa") {
    const auto& known = kind == "mvtec" ? mvtec_classes() : visa_classes();
    if (wanted.empty()) wanted = known;
    for (const auto& c : wanted)
      if (std::find(known.begin(), known.end(), c) == known.end()) throw InputError("'" + c + "' is not a " + kind + " class");
  } else if (kind == "folder") {
    if (wanted.empty())
      for (const auto& sub : subfolders(root))
        if (fs::is_directory(root / sub / "test")) wanted.push_back(sub);
    if (wanted.empty()) throw FormatError(root_path, "no class folders with a test/ folder");
  } else {
    throw InputError("unknown dataset '" + kind + "' (mvtec, visa or folder)");
  }

  if (kind == "visa" && fs::is_regular_file(root / "split_csv" / "1cls.csv")) {
    d.classes = read_visa_raw(root, wanted);
  } else {
    for (const auto& c : wanted) d.classes.push_back(read_mvtec_style_class(root, c, kind != "folder"));
  }
  return d;
}

nlohmann::json ShotSelection::to_json() const { return {{"k", k}, {"seed", seed}, {"shots", shots}}; }

ShotSelection ShotSelection::from_json(const nlohmann::json& j, const std::string& where) {
  try {
    ShotSelection s;
    // Integers only: a float such as 1.7e28 would overflow the conversion (a fuzz finding).
    if (!j.at("k").is_number_integer() || j.at("k").get<int64_t>() < 0) throw FormatError(where, "'k' must be a non-negative integer, got " + j.at("k").dump());
    if (!j.at("seed").is_number_integer()) throw FormatError(where, "'seed' must be an integer, got " + j.at("seed").dump());
    s.k = j.at("k").get<int64_t>();
    s.seed = j.at("seed").get<uint64_t>();
    s.shots = j.at("shots").get<std::map<std::string, std::vector<std::string>>>();
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(where, std::string("not a shot selection (") + e.what() + ")");
  }
}

ShotSelection sample_shots(const Dataset& dataset, int64_t k, uint64_t seed) {
  if (k < 0) throw InputError("number of shots must be >= 0");
  ShotSelection s;
  s.k = k;
  s.seed = seed;
  for (const ClassData& c : dataset.classes) {
    if (static_cast<int64_t>(c.train_good.size()) < k)
      throw InputError("class '" + c.name + "' has " + std::to_string(c.train_good.size()) + " normal training images, fewer than " +
                       std::to_string(k) + " shots");
    // Portable Fisher–Yates with mt19937_64 (std::shuffle's algorithm differs between libraries),
    // seeded per class so that adding a class does not change another's shots.
    uint64_t h = 1469598103934665603ull;
    for (unsigned char ch : c.name) h = (h ^ ch) * 1099511628211ull;
    std::mt19937_64 rng(seed ^ h);
    std::vector<std::string> pool = c.train_good;
    for (std::size_t i = pool.size(); i > 1; --i) {
      const uint64_t bound = i, limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % bound;
      uint64_t r;
      do r = rng(); while (r >= limit);  // unbiased
      std::swap(pool[i - 1], pool[r % bound]);
    }
    pool.resize(static_cast<std::size_t>(k));
    s.shots[c.name] = pool;
  }
  return s;
}

}  // namespace anomalysd

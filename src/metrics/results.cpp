#include "anomalysd/metrics/results.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"

namespace anomalysd {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The metric fields of ClassResult by key, so that JSON, CSV, tables and means share one list.
struct MetricField {
  const char* key;
  const char* header;
  double ClassResult::*member;
};
const std::vector<MetricField>& fields() {
  static const std::vector<MetricField> f = {
      {"image_auroc", "I-AUROC", &ClassResult::image_auroc}, {"image_ap", "I-AP", &ClassResult::image_ap},
      {"image_f1_max", "I-F1max", &ClassResult::image_f1_max}, {"pixel_auroc", "P-AUROC", &ClassResult::pixel_auroc},
      {"pixel_ap", "P-AP", &ClassResult::pixel_ap}, {"pixel_f1_max", "P-F1max", &ClassResult::pixel_f1_max},
      {"pixel_pro", "PRO", &ClassResult::pixel_pro},
  };
  return f;
}

nlohmann::json number(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }

std::string percent(double v) {
  if (std::isnan(v)) return "n/a";
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.1f", 100.0 * v);
  return buf;
}

nlohmann::json class_json(const ClassResult& c) {
  nlohmann::json j;
  for (const auto& f : fields()) j[f.key] = number(c.*f.member);
  j["test_images"] = c.test_images;
  j["anomalous_images"] = c.anomalous_images;
  j["seconds"] = c.seconds;
  return j;
}

}  // namespace

ClassResult RunResults::mean() const {
  ClassResult m;
  m.name = "mean";
  for (const auto& f : fields()) {
    double sum = 0;
    int n = 0;
    for (const auto& c : classes)
      if (!std::isnan(c.*f.member)) {
        sum += c.*f.member;
        ++n;
      }
    m.*f.member = n ? sum / n : kNaN;
  }
  for (const auto& c : classes) {
    m.test_images += c.test_images;
    m.anomalous_images += c.anomalous_images;
    m.seconds += c.seconds;
  }
  return m;
}

nlohmann::json RunResults::to_json() const {
  nlohmann::json per_class = nlohmann::json::object();
  for (const auto& c : classes) per_class[c.name] = class_json(c);
  return {{"format", "anomalysd-metrics"}, {"dataset", dataset}, {"method", method}, {"setup", setup}, {"note", note},
          {"classes", per_class},         {"mean", class_json(mean())}, {"config", config},
          {"shots", shots},               {"versions", versions},      {"timing", {{"seconds", seconds}}}};
}

RunResults RunResults::from_json(const nlohmann::json& j, const std::string& where) {
  try {
    if (j.value("format", "") != "anomalysd-metrics") throw FormatError(where, "not an anomalysd metrics file ('format' is not 'anomalysd-metrics')");
    RunResults r;
    r.dataset = j.at("dataset").get<std::string>();
    r.method = j.at("method").get<std::string>();
    r.setup = j.at("setup").get<std::string>();
    r.note = j.value("note", "");
    for (const auto& [name, v] : j.at("classes").items()) {
      ClassResult c;
      c.name = name;
      for (const auto& f : fields()) c.*f.member = v.at(f.key).is_null() ? kNaN : v.at(f.key).get<double>();
      for (const char* key : {"test_images", "anomalous_images"})
        if (!v.at(key).is_number_integer()) throw FormatError(where, std::string("'") + key + "' of class '" + name + "' is not an integer");
      c.test_images = v.at("test_images").get<int64_t>();
      c.anomalous_images = v.at("anomalous_images").get<int64_t>();
      c.seconds = v.value("seconds", 0.0);
      r.classes.push_back(c);
    }
    r.config = j.value("config", nlohmann::json::object());
    r.shots = j.value("shots", nlohmann::json::object());
    r.versions = j.value("versions", nlohmann::json::object());
    r.seconds = j.contains("timing") ? j["timing"].value("seconds", 0.0) : 0.0;
    return r;
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(where, std::string("malformed metrics file (") + e.what() + ")");
  }
}

RunResults RunResults::load(const std::string& path) { return from_json(read_json_file(path), path); }

std::string results_csv(const RunResults& r) {
  std::ostringstream s;
  s << "class";
  for (const auto& f : fields()) s << "," << f.key;
  s << ",test_images,anomalous_images\n";
  auto row = [&](const ClassResult& c) {
    s << c.name;
    for (const auto& f : fields()) {
      s << ",";
      if (!std::isnan(c.*f.member)) s << std::to_string(c.*f.member);
    }
    s << "," << c.test_images << "," << c.anomalous_images << "\n";
  };
  for (const auto& c : r.classes) row(c);
  row(r.mean());
  return s.str();
}

std::string results_table(const RunResults& r) {
  const ClassResult m = r.mean();
  std::ostringstream s;
  s << "| Setup | Method | Image AUROC | Image AUPR | Image F1-max | Pixel AUROC | Pixel PRO |\n";
  s << "|---|---|---|---|---|---|---|\n";
  s << "| " << (r.setup.empty() ? "-" : r.setup) << " | " << r.method << " | " << percent(m.image_auroc) << " | "
    << percent(m.image_ap) << " | " << percent(m.image_f1_max) << " | " << percent(m.pixel_auroc) << " | " << percent(m.pixel_pro)
    << " |\n\n";
  s << "| Class |";
  for (const auto& f : fields()) s << " " << f.header << " |";
  s << "\n|---|";
  for (std::size_t i = 0; i < fields().size(); ++i) s << "---|";
  s << "\n";
  auto row = [&](const ClassResult& c, bool bold) {
    s << "| " << (bold ? "**" + c.name + "**" : c.name) << " |";
    for (const auto& f : fields()) s << " " << percent(c.*f.member) << " |";
    s << "\n";
  };
  for (const auto& c : r.classes) row(c, false);
  row(m, true);
  s << "\n" << r.dataset << ", " << r.classes.size() << " classes; metrics in percent (PRO: AUPRO up to FPR 0.3, normalised).\n";
  if (!r.note.empty()) s << "Note: " << r.note << ".\n";
  return s.str();
}

std::string settings_table(const std::vector<RunResults>& runs) {
  std::ostringstream s;
  s << "| Dataset | Setup | Method | Image AUROC | Image AUPR | Image F1-max | Pixel AUROC | Pixel PRO |\n";
  s << "|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : runs) {
    const ClassResult m = r.mean();
    s << "| " << r.dataset << " | " << (r.setup.empty() ? "-" : r.setup) << " | " << r.method << " | " << percent(m.image_auroc) << " | "
      << percent(m.image_ap) << " | " << percent(m.image_f1_max) << " | " << percent(m.pixel_auroc) << " | " << percent(m.pixel_pro)
      << " |\n";
  }
  s << "\nMean over classes, percent (PRO: AUPRO up to FPR 0.3, normalised).\n";
  for (const auto& r : runs)
    if (!r.note.empty()) s << "- " << r.dataset << " " << r.setup << " " << r.method << ": " << r.note << ".\n";
  return s.str();
}

void write_results(const RunResults& r, const std::string& json_path) {
  const std::filesystem::path dir = std::filesystem::path(json_path).parent_path();
  write_file_atomically(json_path, json_text(r.to_json()));
  write_file_atomically((dir / "metrics.csv").string(), results_csv(r));
  write_file_atomically((dir / "table.md").string(), results_table(r));
}

std::string sample_key(const std::string& cls, const std::string& defect, const std::string& id) {
  return cls + "/" + defect + "/" + id;
}

std::map<std::string, double> read_scores_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw FormatError(path, "cannot open scores file");
  std::map<std::string, double> scores;
  std::string line;
  std::getline(in, line);
  if (line.rfind("class,defect,id,score", 0) != 0) throw FormatError(path, "expected the header 'class,defect,id,score'");
  int row = 1;
  while (std::getline(in, line)) {
    ++row;
    if (line.empty() || line == "\r") continue;
    std::stringstream ss(line);
    std::string cls, defect, id, score;
    std::getline(ss, cls, ',');
    std::getline(ss, defect, ',');
    std::getline(ss, id, ',');
    std::getline(ss, score, ',');
    try {
      std::size_t used = 0;
      const double v = std::stod(score, &used);
      if (!std::isfinite(v)) throw std::invalid_argument("not finite");
      scores[sample_key(cls, defect, id)] = v;
    } catch (const std::exception&) {
      throw FormatError(path + ":" + std::to_string(row), "score '" + score + "' is not a finite number");
    }
  }
  return scores;
}
RunResults merge_results(
const std::vector<RunResults>& runs, const std::vector<std::string>& sources) {
  if (runs.empty()) throw InputError("merge-results: no results given");
  RunResults out = runs[0];
  out.classes.clear();
  out.seconds = 0;
  std::map<std::string, std::string> seen;  // class -> source
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const RunResults& r = runs[i];
    const std::string& src = sources.at(i);
    if (r.dataset != out.dataset || r.method != out.method || r.setup != out.setup)
      throw FormatError(src, "is " + r.dataset + "/" + r.method + "/" + r.setup + ", not " + out.dataset + "/" + out.method + "/" + out.setup);
    for (const auto& c : r.classes) {
      if (seen.count(c.name)) throw FormatError(src, "class '" + c.name + "' is also in " + seen[c.name]);
      seen[c.name] = src;
      out.classes.push_back(c);
    }
    if (i > 0 && r.shots.contains("shots"))  // the same sampling, other classes: union of the recorded files
      for (const auto& [cls, files] : r.shots["shots"].items()) out.shots["shots"][cls] = files;
    out.seconds += r.seconds;
  }
  std::sort(out.classes.begin(), out.classes.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  out.config["merged_from"] = sources;
  return out;
}

}  // namespace anomalysd

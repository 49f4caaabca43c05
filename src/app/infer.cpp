#include "anomalysd/app/infer.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "anomalysd/app/calibration.h"
#include "anomalysd/app/method.h"
#include "anomalysd/app/report.h"
#include "anomalysd/app/run_identity.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/io/append_log.h"
#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/util/hash.h"
#include "anomalysd/util/progress.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace {

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp" || ext == ".tif" || ext == ".tiff";
}

bool is_under(const fs::path& p, const fs::path& dir) {
  const fs::path rel = p.lexically_normal().lexically_relative(dir.lexically_normal());
  return !rel.empty() && rel.native().rfind("..", 0) != 0;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// A file's size and modification time: an image is done when a record with its path, size and
// time exists (a file replaced under the same name is new).
struct FileStamp {
  uintmax_t bytes = 0;
  int64_t mtime = 0;
  bool operator==(const FileStamp& o) const { return bytes == o.bytes && mtime == o.mtime; }
  bool operator!=(const FileStamp& o) const { return !(*this == o); }
};

std::optional<FileStamp> stamp_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  FileStamp s;
  s.bytes = static_cast<uintmax_t>(st.st_size);
  s.mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;  // ns since the epoch
  return s;
}

// The decision of a run: thresholds (raw), the scales of its normalised scores, the cuts at the
// sensitivity, and where they came from.
struct Decision {
  bool labelled = false;
  ScoreScale image, pixel;
  double image_cut = 0, pixel_cut = 0;
  double sensitivity = 0.5;
  std::string source;

  nlohmann::json to_json() const {
    if (!labelled) return nullptr;
    return {{"source", source},
            {"sensitivity", sensitivity},
            {"image", {{"threshold", image.threshold}, {"low", image.low}, {"high", image.high}, {"cut", image_cut}}},
            {"pixel", {{"threshold", pixel.threshold}, {"low", pixel.low}, {"high", pixel.high}, {"cut", pixel_cut}}}};
  }
};

// A threshold given alone gets the scale 0 … 2 × threshold (0.5 at the threshold).
ScoreScale scale_around(double threshold) { return {threshold, std::min(0.0, threshold), threshold + std::abs(threshold)}; }

// Replaces a scale's threshold, keeping its range where the new threshold lies inside it.
ScoreScale with_threshold(ScoreScale s, double threshold) {
  s.threshold = threshold;
  if (s.low >= threshold) s.low = std::min(0.0, threshold - std::abs(threshold));
  if (s.high <= threshold) s.high = threshold + (threshold - s.low);
  return s;
}

Decision decide(const InferOptions& options, const nlohmann::json& identity, const std::vector<std::string>& shot_ids) {
  Decision d;
  if (!(options.sensitivity >= 0.0 && options.sensitivity <= 1.0)) throw InputError("--sensitivity must be in [0, 1] (0.5 = the calibrated threshold)");
  for (const auto& [name, v] : {std::pair{"--threshold", options.threshold}, {"--pixel-threshold", options.pixel_threshold}})
    if (std::isinf(v)) throw InputError(std::string(name) + " must be finite");
  d.sensitivity = options.sensitivity;
  std::vector<std::string> sources;
  bool has_pixel = false;
  if (!options.calibration.empty()) {
    const ClassCalibration c = calibration_for(Calibration::load(options.calibration), options.calibration, identity, options.cls, shot_ids);
    d.labelled = true;
    d.image = c.image;
    has_pixel = c.has_pixel;
    if (c.has_pixel) d.pixel = c.pixel;
    sources.push_back("calibration " + options.calibration + " (" + c.method + ", " + std::to_string(c.normal_images) + " normal and " +
                      std::to_string(c.anomalous_images) + " anomalous image(s))");
  }
  if (!std::isnan(options.threshold)) {
    d.image = d.labelled ? with_threshold(d.image, options.threshold) : scale_around(options.threshold);
    d.labelled = true;
    sources.push_back("--threshold");
  }
  if (!std::isnan(options.pixel_threshold)) {
    if (!d.labelled) throw InputError("--pixel-threshold needs an image threshold too (--threshold or --calibration)");
    d.pixel = has_pixel ? with_threshold(d.pixel, options.pixel_threshold) : scale_around(options.pixel_threshold);
    has_pixel = true;
    sources.push_back("--pixel-threshold");
  }
  if (!d.labelled) {
    if (options.sensitivity != 0.5) throw InputError("--sensitivity shifts a threshold: give --calibration or --threshold");
    return d;
  }
  // Without a pixel threshold the image one cuts the map: an image's score is its map's maximum,
  // so the predicted regions are what raised the alarm.
  if (!has_pixel) d.pixel = d.image;
  d.image_cut = d.image.threshold_at_sensitivity(options.sensitivity);
  d.pixel_cut = d.pixel.threshold_at_sensitivity(options.sensitivity);
  for (std::size_t i = 0; i < sources.size(); ++i) d.source += (i ? " + " : "") + sources[i];
  if (options.sensitivity != 0.5) d.source += ", sensitivity " + number_text(options.sensitivity);
  return d;
}

// Output names: the path relative to the input folder without its extension, made unique when two
// inputs share it (a.png, a.jpg -> a_png, a_jpg); names of earlier runs are kept.
class OutputNames {
 public:
  void keep(const std::string& rel, const std::string& name) {
    names_[rel] = name;
    used_.insert(name);
  }
  // Names for a listing: clashing stems get their extension appended.
  void assign_batch(const std::vector<std::string>& rels) {
    std::map<std::string, int> count;
    for (const auto& r : rels)
      if (!names_.count(r)) ++count[stem(r)];
    for (const auto& r : rels)
      if (!names_.count(r)) assign(r, count[stem(r)] > 1);
  }
  const std::string& name(const std::string& rel) {
    if (!names_.count(rel)) assign(rel, false);
    return names_.at(rel);
  }

 private:
  static std::string stem(const std::string& rel) { return (fs::path(rel).parent_path() / fs::path(rel).stem()).generic_string(); }
  void assign(const std::string& rel, bool with_extension) {
    std::string n = stem(rel);
    const std::string ext = fs::path(rel).extension().string();
    if (with_extension || used_.count(n)) n += "_" + (ext.empty() ? std::string("x") : ext.substr(1));
    for (int k = 2; used_.count(n); ++k) n = stem(rel) + "_" + std::to_string(k);
    keep(rel, n);
  }
  std::map<std::string, std::string> names_;
  std::set<std::string> used_;
};

struct Record {
  nlohmann::json json;
  FileStamp stamp;
};

// The whole run: outputs, resume state and the per-image step.
class InferRun {
 public:
  InferRun(const InferOptions& options, const AppConfig& config, Decision decision, nlohmann::json identity)
      : options_(options), config_(config), decision_(std::move(decision)), identity_(std::move(identity)), out_(options.output) {}

  // Refuses or discards another run in the folder; loads this run's records.
  void open(const std::string& model_dir, const std::vector<std::string>& shots) {
    const fs::path run_json = out_ / "run.json";
    std::error_code ec;
    const bool exists = fs::exists(out_, ec);
    nlohmann::json previous;
    if (fs::is_regular_file(run_json)) previous = read_json_file(run_json.string());
    const bool same = previous.is_object() && previous.value("identity", nlohmann::json()) == identity_;
    if (exists && !same) {
      const bool empty = fs::is_directory(out_, ec) && fs::is_empty(out_, ec);
      if (!options_.overwrite && !empty) {
        const std::string differs = previous.is_object() ? identity_differences(previous.value("identity", nlohmann::json()), identity_) : "";
        throw InputError(options_.output + (previous.is_object() ? ": holds an infer run with another config, model, class, shots or decision" +
                                                                 (differs.empty() ? std::string() : " (differs in: " + differs + ")")
                                                           : std::string(": the output folder exists and holds no infer run")) +
                         "; rerun the same command to resume it, pass --overwrite to discard it, or choose another --output");
      }
      if (!empty) {
        spdlog::warn("--overwrite: discarding what {} held", options_.output);
        for (const char* p : {"maps", "overlays", "masks", "inpainted"}) fs::remove_all(out_ / p);
        for (const char* f : {"run.json", "results.jsonl", "scores.csv", "scores.json"}) fs::remove(out_ / f);
      }
    }
    for (const char* p : {"maps", "overlays"}) fs::create_directories(out_ / p);
    if (decision_.labelled) fs::create_directories(out_ / "masks");
    if (config_.inference.save_inpainted) fs::create_directories(out_ / "inpainted");
    if (const int n = remove_stale_temporaries(options_.output)) spdlog::info("removed {} temporary file(s) of an interrupted run", n);

    // Colours: a threshold's scale, or one fixed for the whole run (given, or from its first image).
    if (decision_.labelled) {
      colours_ = decision_.pixel;
    } else if (!std::isnan(options_.map_max)) {
      if (!(options_.map_max > 0)) throw InputError("--map-max must be > 0");
      colours_ = {options_.map_max / 2, 0.0, options_.map_max};
    } else if (previous.is_object() && same && previous.contains("colour_scale") && previous["colour_scale"].is_object()) {
      colours_ = {previous["colour_scale"].value("threshold", 0.0), 0.0, previous["colour_scale"].value("high", 0.0)};
    }
    run_ = {{"format", "anomalysd-infer-run"}, {"identity", identity_},      {"class", options_.cls},
            {"model", model_dir},            {"shots", shots},              {"decision", decision_.to_json()},
            {"config", config_.to_yaml()},   {"input", options_.input}};
    if (colours_) run_["colour_scale"] = {{"threshold", colours_->threshold}, {"high", colours_->high}};
    write_file_atomically(run_json.string(), json_text(run_));

    // Records of earlier runs (a torn last line cut off); scores.csv rebuilt from them.
    const std::string results = (out_ / "results.jsonl").string();
    if (repair_line_log(results)) spdlog::warn("{}: cut off a torn last line (an interrupted write)", results);
    for (const std::string& line : read_line_log(results)) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {
        spdlog::warn("{}: skipped an unreadable line", results);
        continue;
      }
      if (!j.is_object() || !j.contains("path") || !j.contains("name")) continue;
      Record r{j, {j.value("bytes", uintmax_t{0}), j.value("mtime", int64_t{0})}};
      names_.keep(j["path"].get<std::string>(), j["name"].get<std::string>());
      if (!index_.count(j["path"].get<std::string>())) order_.push_back(j["path"].get<std::string>());
      index_[j["path"].get<std::string>()] = r;
    }
    const std::string csv = csv_text();
    const fs::path csv_path = out_ / "scores.csv";
    std::string old;
    if (fs::is_regular_file(csv_path)) {
      std::ifstream in(csv_path, std::ios::binary);
      old.assign(std::istreambuf_iterator<char>(in), {});
    }
    if (old != csv) write_file_atomically(csv_path.string(), csv);
    results_log_ = std::make_unique<LineLog>(results);
    csv_log_ = std::make_unique<LineLog>(csv_path.string());
  }

  bool done(const std::string& rel, const fs::path& file) const {
    const auto it = index_.find(rel);
    if (it == index_.end()) return false;
    const auto stamp = stamp_of(file);
    if (stamp && *stamp != it->second.stamp) return false;  // replaced since
    return fs::is_regular_file(out_ / "maps" / (it->second.json.value("name", "") + ".tiff"));
  }

  OutputNames& names() { return names_; }

  // Scores one image and writes its results; false (logged, counted) when it cannot be read.
  bool process(MethodRunner& method, const fs::path& file, const std::string& rel, InferSummary& summary, int64_t& unet_calls) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto stamp = stamp_of(file);
    ModelImage image;
    try {
      image = read_model_image(file.string(), config_.resolution);
    } catch (const InputError& e) {
      spdlog::error("skipped: {}", e.what());
      summary.failed.push_back(e.what());
      ++summary.failures;
      failures_.push_back(e.what());
      return false;
    }
    const Detection d = method.detect(image);
    unet_calls += d.unet_calls;
    const std::string name = names_.name(rel);
    const int h = image.original.rows, w = image.original.cols;
    const cv::Mat map = map_to_size(d.map, h, w);
    auto output = [&](const char* dir, const std::string& ext) {
      const fs::path p = out_ / dir / (name + ext);
      fs::create_directories(p.parent_path());
      return p.string();
    };
    const std::string map_path = output("maps", ".tiff"), overlay_path = output("overlays", ".png");
    write_map_tiff(map_path, map);

    nlohmann::json row = {{"path", rel}, {"name", name}, {"bytes", stamp ? stamp->bytes : 0}, {"mtime", stamp ? stamp->mtime : 0},
                          {"score", d.score}, {"map", map_path}, {"overlay", overlay_path}};
    std::string banner = fmt::format("score {:.4g}", d.score);
    cv::Mat mask;
    if (decision_.labelled) {
      // float comparisons, as the metrics (and so a calibration's thresholds) rank float scores
      const bool anomalous = static_cast<float>(d.score) >= static_cast<float>(decision_.image_cut);
      const double normalized = decision_.image.normalize(d.score);
      mask = predicted_mask(map, decision_.pixel_cut);
      const std::string mask_path = output("masks", ".png");
      write_png(mask_path, mask, /*rgb=*/false);
      row["normalized"] = normalized;
      row["label"] = anomalous ? "anomalous" : "normal";
      row["mask"] = mask_path;
      row["defect_pixels"] = cv::countNonZero(mask);
      char text[96];
      std::snprintf(text, sizeof text, "%s %.2f (score %.4g)", anomalous ? "ANOMALOUS" : "normal", normalized, d.score);
      banner = text;
      summary.anomalous += anomalous;
    } else if (!colours_) {  // the run's colour scale, fixed by its first image and kept in run.json
      const double hi = d.score > 0 ? 2.0 * d.score : 1.0;
      colours_ = ScoreScale{hi / 2, 0.0, hi};
      run_["colour_scale"] = {{"threshold", colours_->threshold}, {"high", colours_->high}};
      write_file_atomically((out_ / "run.json").string(), json_text(run_));
      spdlog::info("colour scale of this run: 0 to {:.4g} (twice the first image's score; --map-max sets it, a threshold centres it)", hi);
    }
    write_png(overlay_path, inspection_overlay(to_rgb8(image.original), normalized_map(map, *colours_), mask, banner));
    if (config_.inference.save_inpainted) {
      for (std::size_t k = 0; k < d.inpainted.size(); ++k) {
        const bool proto = k >= d.scale_maps.size();
        const std::string tag = proto ? "prototype" : "k" + std::to_string(config_.inference.scales[k]);
        write_png(output("inpainted", "_" + tag + ".png"), tensor_to_rgb8(d.inpainted[k]));
      }
    }
    row["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // The record marks the image done: everything it names is written before it.
    results_log_->append(json_compact(row));
    csv_log_->append(csv_line(row));
    if (!index_.count(rel)) order_.push_back(rel);
    index_[rel] = {row, stamp.value_or(FileStamp{})};
    ++summary.images;
    return true;
  }

  void write_report(const MethodRunner* method, const InferSummary& summary, const std::vector<std::string>& shots) {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& rel : order_) rows.push_back(index_.at(rel).json);
    nlohmann::json report = {{"class", options_.cls},
                             {"model", run_.value("model", "")},
                             {"shots", shots},
                             {"images", rows},
                             {"failures", failures_},
                             {"decision", decision_.to_json()},
                             {"threshold", decision_.labelled ? nlohmann::json(decision_.image_cut) : nlohmann::json(nullptr)},
                             {"pixel_threshold", decision_.labelled ? nlohmann::json(decision_.pixel_cut) : nlohmann::json(nullptr)},
                             {"seconds_per_image", summary.seconds_per_image},
                             {"masks_per_image", summary.masks_per_image},
                             {"unet_calls_per_image", summary.unet_calls_per_image},
                             {"random_feature_weights", method ? method->random_weight_files() : std::vector<std::string>{}},
                             {"config", config_.to_yaml()}};
    write_file_atomically((out_ / "scores.json").string(), json_text(report));
  }

 private:
  std::string csv_header() const { return decision_.labelled ? "path,score,normalized,label" : "path,score"; }
  std::string csv_line(const nlohmann::json& row) const {
    std::string line = csv_field(row.value("path", "")) + "," + number_text(row.value("score", 0.0));
    if (decision_.labelled) line += "," + number_text(row.value("normalized", 0.0)) + "," + row.value("label", "");
    return line;
  }
  std::string csv_text() const {
    std::string s = csv_header() + "\n";
    for (const auto& rel : order_) s += csv_line(index_.at(rel).json) + "\n";
    return s;
  }

  const InferOptions& options_;
  const AppConfig& config_;
  Decision decision_;
  nlohmann::json identity_, run_;
  fs::path out_;
  std::optional<ScoreScale> colours_;
  OutputNames names_;
  std::map<std::string, Record> index_;  // by relative path: the latest record
  std::vector<std::string> order_;       // relative paths, first seen first
  std::vector<std::string> failures_;
  std::unique_ptr<LineLog> results_log_, csv_log_;
};

bool stopped(const InferOptions& options) { return options.stop && options.stop->load(); }

// Sleeps up to `seconds`, waking early when asked to stop.
void idle(const InferOptions& options, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!stopped(options) && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

// Moves a finished image under `dir`, keeping its relative path (copy + remove across devices).
void move_done(const fs::path& file, const std::string& rel, const fs::path& dir) {
  const fs::path target = dir / rel;
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  fs::rename(file, target, ec);
  if (ec) {
    std::error_code copy_ec;
    fs::copy_file(file, target, fs::copy_options::overwrite_existing, copy_ec);
    if (copy_ec || !fs::remove(file, copy_ec)) {
      spdlog::error("{}: could not move it to {} ({}); its results are written", file.string(), target.string(), (copy_ec ? copy_ec : ec).message());
      return;
    }
  }
}

}  // namespace

std::vector<std::string> list_images(const std::string& folder_or_file, bool recursive, const std::vector<std::string>& exclude) {
  const fs::path p(folder_or_file);
  std::error_code ec;
  if (fs::is_regular_file(p, ec)) return {p.string()};
  if (!fs::is_directory(p, ec)) throw FormatError(folder_or_file, "not found (expected an image file or a folder of images)");
  std::vector<std::string> out;
  auto consider = [&](const fs::directory_entry& e) {
    std::error_code e2;
    const std::string name = e.path().filename().string();
    if (!name.empty() && name[0] == '.') return;  // hidden: editors' and copiers' partial files
    if (has_image_extension(e.path()) && !e.is_directory(e2)) out.push_back(e.path().string());
  };
  if (recursive) {
    fs::recursive_directory_iterator it(p, fs::directory_options::skip_permission_denied, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
      std::error_code e2;
      const bool excluded = std::any_of(exclude.begin(), exclude.end(), [&](const std::string& x) {
        return !x.empty() && (fs::absolute(it->path()).lexically_normal() == fs::absolute(x).lexically_normal() || is_under(fs::absolute(it->path()), fs::absolute(x)));
      });
      const std::string name = it->path().filename().string();
      if (it->is_directory(e2) && (excluded || (!name.empty() && name[0] == '.'))) {
        it.disable_recursion_pending();
        continue;
      }
      if (!excluded) consider(*it);
    }
  } else {
    for (fs::directory_iterator it(p, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end; it.increment(ec)) consider(*it);
  }
  if (ec) throw FormatError(folder_or_file, "cannot list the folder: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

InferSummary run_infer(const InferOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  // 1. options and inputs
  const AppConfig config = load_app_config(options.config, options.overrides);
  if (options.cls.empty()) throw InputError("--class is required (it selects the prompts and λ)");
  if (options.output.empty()) throw InputError("--output is required");
  const fs::path input(options.input);
  std::error_code ec;
  const bool folder = fs::is_directory(input, ec);
  if (options.watch && !folder) throw InputError("--watch needs a folder: " + options.input + " is not one");
  if (!options.move_done.empty() && !options.watch) throw InputError("--move-done goes with --watch");
  if (options.watch && !(options.settle_seconds >= 0 && options.poll_seconds > 0)) throw InputError("--settle must be >= 0 and the poll interval > 0");
  const std::vector<std::string> exclude = {options.output, options.move_done};
  const std::vector<std::string> inputs = list_images(options.input, options.recursive, exclude);
  if (inputs.empty() && !options.watch) throw FormatError(options.input, "holds no images (PNG, JPEG, BMP or TIFF)");
  const std::vector<std::string> shots = options.shots.empty() ? std::vector<std::string>{} : list_images(options.shots);
  if (!options.shots.empty() && shots.empty()) throw FormatError(options.shots, "holds no shot images");
  auto relative = [&](const std::string& file) {
    if (!folder) return fs::path(file).filename().string();
    return fs::path(file).lexically_normal().lexically_relative(input.lexically_normal()).generic_string();
  };

  // 2. the decision, checked against this model, config and shots before anything is written
  const std::string model_dir = model_dir_of(config, options.model);
  const std::vector<std::string> shot_ids = image_set_identity(shots);
  const nlohmann::json calib_identity = calibration_identity(config, model_dir);
  const Decision decision = decide(options, calib_identity, shot_ids);
  if (decision.labelled) spdlog::info("decision: {}; image threshold {:.6g} (raw), pixel threshold {:.6g}", decision.source, decision.image_cut, decision.pixel_cut);

  // 3. the output folder: a new run, or this run resumed
  nlohmann::json identity = calib_identity;
  identity["class"] = options.cls;
  identity["shots"] = shot_ids;
  identity["decision"] = decision.to_json();
  identity["map_max"] = std::isnan(options.map_max) ? nlohmann::json(nullptr) : nlohmann::json(options.map_max);
  InferRun run(options, config, decision, identity);
  run.open(model_dir, shots);
  std::vector<std::string> rels;
  for (const auto& f : inputs) rels.push_back(relative(f));
  run.names().assign_batch(rels);

  InferSummary summary;
  summary.output = options.output;
  summary.decision = decision.source;
  std::vector<std::string> pending;
  for (const auto& f : inputs)
    if (!run.done(relative(f), f)) pending.push_back(f);
  summary.resumed = static_cast<int64_t>(inputs.size() - pending.size());
  if (summary.resumed > 0) spdlog::info("resuming: {} of {} image(s) already done in {}", summary.resumed, inputs.size(), options.output);

  // 4. the model, the class's conditioning and prototype bank: loaded once
  std::unique_ptr<MethodRunner> method;
  int64_t unet_calls = 0;
  if (!pending.empty() || options.watch) {
    method = std::make_unique<MethodRunner>(config, model_dir, !shots.empty());
    method->set_class(options.cls, shots);
    summary.masks_per_image = method->masks_per_image(method->bank_size() > 0);
  }

  // 5. the images there now
  if (!pending.empty()) {
    ProgressBar bar("infer " + options.cls, static_cast<int64_t>(pending.size()), "img");
    for (const std::string& path : pending) {
      if (stopped(options)) break;
      run.process(*method, path, relative(path), summary, unet_calls);
      bar.advance();
    }
    bar.finish();
  }

  // 6. --watch: each new image once it is complete, until stopped
  if (options.watch) {
    spdlog::info("watching {} for new images (a file counts once unchanged for {:.1f} s); stop with Ctrl-C or SIGTERM", options.input, options.settle_seconds);
    struct Seen {
      FileStamp stamp;
      std::chrono::steady_clock::time_point since;
    };
    std::map<std::string, Seen> seen;
    std::map<std::string, FileStamp> failed;  // unreadable as they were: retried only when they change
    while (!stopped(options)) {
      if (!fs::is_directory(input, ec)) {
        run.write_report(method.get(), summary, shots);
        throw InputError(options.input + ": the watched folder is gone; the " + std::to_string(summary.images) + " result(s) of this watch are in " +
                         options.output + " (results.jsonl, scores.csv, scores.json)");
      }
      const auto now = std::chrono::steady_clock::now();
      std::vector<std::string> files;
      try {
        files = list_images(options.input, options.recursive, exclude);
      } catch (const FormatError&) {
        continue;  // the folder vanished mid-listing: the next pass says so
      }
      std::set<std::string> present(files.begin(), files.end());
      for (auto it = seen.begin(); it != seen.end();) it = present.count(it->first) ? std::next(it) : seen.erase(it);
      for (const std::string& file : files) {
        if (stopped(options)) break;
        const std::string rel = relative(file);
        const auto stamp = stamp_of(file);
        if (!stamp || run.done(rel, file)) continue;
        const auto f = failed.find(file);
        if (f != failed.end() && f->second == *stamp) continue;
        auto s = seen.find(file);
        if (s == seen.end() || s->second.stamp != *stamp) {  // new, or still changing
          seen[file] = {*stamp, now};
          if (options.settle_seconds > 0) continue;
          s = seen.find(file);
        }
        if (std::chrono::duration<double>(now - s->second.since).count() < options.settle_seconds) continue;
        if (run.process(*method, file, rel, summary, unet_calls)) {
          failed.erase(file);
          if (!options.move_done.empty()) move_done(file, rel, options.move_done);
          spdlog::info("{}: done ({} in this watch)", rel, summary.images);
        } else {
          failed[file] = *stamp;
        }
        seen.erase(file);
      }
      idle(options, options.poll_seconds);
    }
    spdlog::info("watch stopped: {} image(s) scored, {} failed", summary.images, summary.failures);
  }

  // 7. the report of everything the folder holds
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  summary.seconds_per_image = summary.images ? summary.seconds / static_cast<double>(summary.images) : 0.0;
  summary.unet_calls_per_image = summary.images ? static_cast<double>(unet_calls) / static_cast<double>(summary.images) : 0.0;
  run.write_report(method.get(), summary, shots);
  return summary;
}

}  // namespace anomalysd

#include "anomalysd/app/infer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "anomalysd/app/method.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/util/progress.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace {

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp" || ext == ".tif" || ext == ".tiff";
}

// Output names: the file stem, made unique when two inputs share it (a.png, a.jpg -> a_png, a_jpg).
std::map<std::string, std::string> output_stems(const std::vector<std::string>& files) {
  std::map<std::string, int> count;
  for (const auto& f : files) ++count[fs::path(f).stem().string()];
  std::map<std::string, std::string> out;
  for (const auto& f : files) {
    const fs::path p(f);
    std::string stem = p.stem().string();
    if (count[stem] > 1) stem += "_" + p.extension().string().substr(1);
    out[f] = stem;
  }
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

std::vector<std::string> list_images(const std::string& folder_or_file) {
  const fs::path p(folder_or_file);
  std::error_code ec;
  if (fs::is_regular_file(p, ec)) return {p.string()};
  if (!fs::is_directory(p, ec)) throw FormatError(folder_or_file, "not found (expected an image file or a folder of images)");
  std::vector<std::string> out;
  for (fs::directory_iterator it(p, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code e2;
    if (has_image_extension(it->path()) && !it->is_directory(e2)) out.push_back(it->path().string());
  }
  if (ec) throw FormatError(folder_or_file, "cannot list the folder: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

InferSummary run_infer(const InferOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const AppConfig config = load_app_config(o.config, o.overrides);
  if (o.cls.empty()) throw InputError("--class is required (it selects the prompts and λ)");
  if (o.output.empty()) throw InputError("--output is required");
  const std::vector<std::string> inputs = list_images(o.input);
  if (inputs.empty()) throw FormatError(o.input, "holds no images (PNG, JPEG, BMP or TIFF)");
  const std::vector<std::string> shots = o.shots.empty() ? std::vector<std::string>{} : list_images(o.shots);
  if (!o.shots.empty() && shots.empty()) throw FormatError(o.shots, "holds no shot images");

  const fs::path out(o.output);
  if (fs::exists(out) && !o.overwrite)
    throw InputError(o.output + ": the output folder exists; pass --overwrite to write into it, or choose another");
  fs::create_directories(out / "maps");
  fs::create_directories(out / "overlays");
  if (config.inference.save_inpainted) fs::create_directories(out / "inpainted");

  MethodRunner method(config, o.model, !shots.empty());
  method.set_class(o.cls, shots);
  const bool with_bank = method.bank_size() > 0;

  InferSummary summary;
  summary.output = o.output;
  summary.masks_per_image = method.masks_per_image(with_bank);
  const auto stems = output_stems(inputs);
  const bool labelled = !std::isnan(o.threshold);
  nlohmann::json rows = nlohmann::json::array();
  std::ostringstream csv;
  csv << "path,score" << (labelled ? ",label" : "") << "\n";
  int64_t unet_calls = 0;
  ProgressBar bar("infer " + o.cls, static_cast<int64_t>(inputs.size()), "img");
  for (const std::string& path : inputs) {
    ModelImage image;
    try {
      image = read_model_image(path, config.resolution);
    } catch (const InputError& e) {
      spdlog::error("skipped: {}", e.what());
      summary.failed.push_back(e.what());
      ++summary.failures;
      bar.advance();
      continue;
    }
    const Detection d = method.detect(image);
    unet_calls += d.unet_calls;
    const std::string& stem = stems.at(path);
    const int h = image.original.rows, w = image.original.cols;
    const cv::Mat map = map_to_size(d.map, h, w);
    write_map_tiff((out / "maps" / (stem + ".tiff")).string(), map);
    // Colours: with a threshold it sits mid-scale (2× saturates); without, each map spans its range.
    double lo = 0, hi = 0;
    if (labelled) {
      hi = 2.0 * o.threshold;
    } else {
      cv::minMaxLoc(map, &lo, &hi);
    }
    write_png((out / "overlays" / (stem + ".png")).string(), heatmap_overlay(to_rgb8(image.original), map, lo, hi));
    if (config.inference.save_inpainted) {
      for (std::size_t k = 0; k < d.inpainted.size(); ++k) {
        const bool proto = k >= d.scale_maps.size();
        const std::string tag = proto ? "prototype" : "k" + std::to_string(config.inference.scales[k]);
        write_png((out / "inpainted" / (stem + "_" + tag + ".png")).string(), tensor_to_rgb8(d.inpainted[k]));
      }
    }
    nlohmann::json row = {{"path", path}, {"score", d.score}, {"map", (out / "maps" / (stem + ".tiff")).string()}};
    csv << csv_field(path) << "," << std::to_string(d.score);
    if (labelled) {
      const bool anomalous = d.score >= o.threshold;
      row["label"] = anomalous ? "anomalous" : "normal";
      csv << "," << (anomalous ? "anomalous" : "normal");
    }
    csv << "\n";
    rows.push_back(row);
    ++summary.images;
    bar.advance();
  }
  bar.finish();

  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  summary.seconds_per_image = summary.images ? summary.seconds / static_cast<double>(summary.images) : 0.0;
  summary.unet_calls_per_image = summary.images ? static_cast<double>(unet_calls) / static_cast<double>(summary.images) : 0.0;
  write_file_atomically((out / "scores.csv").string(), csv.str());
  nlohmann::json report = {{"class", o.cls},
                           {"model", method.model_dir()},
                           {"shots", shots},
                           {"images", rows},
                           {"failures", summary.failed},
                           {"threshold", labelled ? nlohmann::json(o.threshold) : nlohmann::json(nullptr)},
                           {"seconds_per_image", summary.seconds_per_image},
                           {"masks_per_image", summary.masks_per_image},
                           {"unet_calls_per_image", summary.unet_calls_per_image},
                           {"random_feature_weights", method.random_weight_files()},
                           {"config", config.to_yaml()}};
  write_file_atomically((out / "scores.json").string(), json_text(report));
  return summary;
}

}  // namespace anomalysd

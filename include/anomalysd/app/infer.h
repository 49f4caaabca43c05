// `anomalysd infer`: AnomalySD on a folder (or one file) of images of one class — per image an
// anomaly map, an overlay, a raw score and, with a threshold, a verdict an inspection line can use.
//
// The decision: `--calibration FILE` (eval's calibration.json, or `anomalysd calibrate`'s) gives
// the image and pixel thresholds measured on data, refused when it was measured on another model,
// config or shots; `--threshold` / `--pixel-threshold` override them; `--sensitivity` shifts the
// decision without recalibrating. Scores are also given normalised to [0, 1], with the threshold
// at 0.5 (metrics/threshold.h).
//
// <output>/
//   run.json            what determines the results (config, model, class, shots, decision)
//   results.jsonl       one line per finished image, appended and synced as it finishes
//   scores.csv          path,score[,normalized,label], appended likewise
//   scores.json         the whole report, written when the run ends
//   maps/<name>.tiff    float32 at the image's size; overlays/<name>.png; masks/<name>.png
//                       (255 = predicted defect, with a threshold); inpainted/ if configured
// <name> is the image's path relative to the input folder without its extension.
//
// Never losing work: an image counts as done once its line is in results.jsonl; rerunning the
// same command resumes (done images are skipped); another config, model, class, shots or
// decision is refused (--overwrite discards the old run). Every file is written atomically; a
// file that cannot be read is reported by name and skipped, the rest go on.
//
// --watch keeps the model loaded and processes each new image that appears in the folder once its
// size and time have been still for `settle_seconds` (a file still being written is not read
// half), until `stop` is set (the CLI: SIGINT, SIGTERM); --move-done moves finished images away.
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace anomalysd {

struct InferOptions {
  std::string config;                  // YAML file ("" = embedded default)
  std::vector<std::string> overrides;  // --set key=value
  std::string model;                   // pipeline folder (overrides model.path)
  std::string input;                   // folder or file
  std::string cls;                     // class name: prompts and λ
  std::string shots;                   // folder (or file) of normal images; "" = 0-shot
  std::string output;
  bool overwrite = false;
  bool recursive = false;              // images in subfolders too (relative paths kept)
  // The decision. NaN = not given.
  std::string calibration;             // calibration.json (eval / calibrate)
  double threshold = std::numeric_limits<double>::quiet_NaN();        // raw image score: ≥ it = anomalous
  double pixel_threshold = std::numeric_limits<double>::quiet_NaN();  // raw map value: ≥ it = defect
  double sensitivity = 0.5;            // anomalous when the normalised score ≥ 1 − sensitivity
  double map_max = std::numeric_limits<double>::quiet_NaN();  // colour scale top without a threshold
  // --watch
  bool watch = false;
  std::string move_done;               // move each finished image here (relative path kept)
  double settle_seconds = 1.0;
  double poll_seconds = 0.5;
  const std::atomic<bool>* stop = nullptr;  // ends a watch (checked between images and while idle)
};

struct InferSummary {
  int64_t images = 0;     // scored now
  int64_t resumed = 0;    // found done from an earlier run, skipped
  int64_t failures = 0;   // unreadable, skipped
  int64_t anomalous = 0;  // labelled anomalous now (with a threshold)
  std::vector<std::string> failed;  // "path: reason"
  double seconds = 0;
  double seconds_per_image = 0;
  int64_t masks_per_image = 0;
  double unet_calls_per_image = 0;
  std::string decision;   // where the thresholds came from ("" = none)
  std::string output;
};

// Image files of a folder (PNG, JPEG, BMP, TIFF by extension, sorted; hidden files skipped), or
// the one file given. `recursive`: subfolders too, except those under `exclude` (an output folder
// inside the input).
std::vector<std::string> list_images(const std::string& folder_or_file, bool recursive = false,
                                     const std::vector<std::string>& exclude = {});

InferSummary run_infer(const InferOptions& options);

}  // namespace anomalysd

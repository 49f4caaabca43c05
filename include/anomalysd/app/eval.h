// `anomalysd eval`: AnomalySD on MVTec-AD, VisA or a folder dataset — the paper's tables.
// Maps and scores are written as they come, so an interrupted run resumes where it stopped; a
// run can be split into shards (machines, GPUs) whose folders `merge-results` joins into metrics
// on the union of the maps, equal to an unsharded run's.
//
// <output>/
//   run.json                 resolved config, its hash, dataset, shots, shard, versions
//   shots.json               the K normal images per class (paths relative to the dataset root)
//   maps/<class>/test/<defect>/<id>.tiff   float32 at the ground truth's size (MVTec AD evaluation layout)
//   scores.csv               class,defect,id,score
//   metrics.json, metrics.csv, table.md, report.html (+ report/, report.png)
//   calibration.json         per class the thresholds behind the image and pixel F1-max (app/calibration.h;
//                            not for one shard of a sharded run)
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "anomalysd/data/dataset.h"
#include "anomalysd/metrics/results.h"

namespace anomalysd {

struct EvalOptions {
  std::string config;                  // YAML file ("" = embedded default)
  std::vector<std::string> overrides;  // --set key=value
  std::string dataset = "mvtec";       // mvtec | visa | folder
  std::string root;
  std::string model;                   // pipeline folder (overrides model.path)
  std::string output;
  int64_t shots = -1;                  // K; -1 = from --shots-file
  std::vector<std::string> classes;    // empty = all
  std::string shots_file;              // reuse a shots.json (e.g. the one finetune wrote)
  int64_t shard_index = 0, shard_count = 1;
  // --shard auto: the shard from the process group (RANK/WORLD_SIZE, Slurm's SLURM_PROCID/NTASKS)
  // or a Slurm job array (SLURM_ARRAY_TASK_ID/COUNT), each in <output>/shards/<i>-of-<n>/; the
  // merged metrics.json, table.md and report of the union are written to <output> by rank 0 once
  // every rank is done (a job array: by the task that completes the set). Without either: one run.
  bool shard_auto = false;
  int64_t limit_per_class = 0;         // 0 = all test images
  bool overwrite = false;              // discard a previous run with another config
  std::string setting;                 // table label; default "<K>-shot"
  std::string method = "AnomalySD";    // table label (e.g. for ablations)
  // Also write the maps of the ablations "multi-scale masks only" (S_ms) and "prototype mask
  // only" (S_pg) from the same inpaintings (Table 4 without two more runs), under
  // <output>/variants/{multiscale,prototype}/. Needs both mask kinds and at least one shot.
  bool ablation_maps = false;
};

struct EvalSummary {
  RunResults results;
  std::vector<RunResults> variant_results;  // with ablation_maps
  int64_t images = 0;     // test images of this run (after limit and shard)
  int64_t computed = 0;   // maps computed now
  int64_t resumed = 0;    // maps found from a previous run and kept
  int64_t unet_calls = 0; // UNet evaluations now
  double seconds = 0;
  double seconds_per_image = 0;  // of the images computed now
  std::map<std::string, double> seconds_per_class;  // average per computed image
  std::string output;
  // --shard auto: this process's shard folder, and whether `results` is the union (rank 0, or the
  // job array's last task) rather than that shard's.
  std::string shard_output;
  bool merged = false;
};

EvalSummary run_eval(const EvalOptions& options);

// Test images in a fixed order that interleaves the defect folders (good, defect a, defect b, …,
// good, …), so that the first N hold normal and anomalous images alike (--limit-per-class).
std::vector<TestSample> interleaved_by_defect(const std::vector<TestSample>& test);

// Shard I of N: per class, the test images ranked by a hash of their identity (class/defect/id)
// and dealt round-robin — deterministic, balanced within every class, independent of listing order.
std::vector<TestSample> shard_of(const std::vector<TestSample>& test, int64_t index, int64_t count);

// "I/N" -> (I, N) with 0 ≤ I < N; InputError otherwise.
std::pair<int64_t, int64_t> parse_shard(const std::string& text);

// Shot selections on disk store paths relative to the dataset root (portable across machines).
nlohmann::json shots_to_json(const ShotSelection& shots, const std::string& root);
// Reads a shots.json, resolving its paths against `root`; every image must exist and none may be
// a test image of the dataset. Errors name the file and the image.
ShotSelection read_shots_file(const std::string& path, const Dataset& dataset);

// `merge-results`: joins eval output folders (shards of one run: metrics recomputed on the union of
// their maps) and metrics files (class-disjoint parts), then writes one table per setting and,
// with several settings, the paper's Table 1 layout across them. `root` overrides the dataset root
// recorded in run.json (folders copied from another machine).
std::vector<RunResults> merge_runs(const std::vector<std::string>& inputs, const std::string& output, const std::string& root = "");

}  // namespace anomalysd

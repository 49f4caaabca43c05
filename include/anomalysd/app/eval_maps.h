// `anomalysd eval-maps`: evaluates any method's anomaly maps, saved in the official MVTec AD
// evaluation layout <maps>/<class>/test/<defect>/<id>.tiff (float32, any size), on a dataset's
// ground truth with the same metric code as `anomalysd eval`.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "anomalysd/metrics/results.h"

namespace anomalysd {

struct EvalMapsOptions {
  std::string dataset = "mvtec";  // mvtec | visa | folder
  std::string root;
  std::string maps;
  std::vector<std::string> classes;  // empty = all
  std::string scores_csv;            // optional image scores: class,defect,id,score (default: max of the map)
  int64_t eval_size = 0;             // 0: evaluate at the GT size; N: resize maps (bilinear) and masks (nearest) to N×N
  double fpr_limit = 0.3;
  std::string method = "method";
  std::string setup;
  // Shards of one evaluation: further map folders and score files. A map is taken from the first
  // folder that holds it; scores are the union of the files (a sample in two must agree).
  std::vector<std::string> extra_maps;
  std::vector<std::string> extra_scores;
  // Evaluate only these samples ("class/defect/id"); empty = every test image of the classes.
  std::set<std::string> subset;
};



RunResults evaluate_maps(const EvalMapsOptions& options);

struct BenchFigures;  // tools/components.h

// `bench eval-maps`: a synthetic class of `images` test images at size² (~30 % anomalous, three
// rectangular regions each; maps = mask + noise) written in the MVTec layout, then evaluate_maps
// timed `repeats` times.
BenchFigures bench_eval_maps(int64_t images, int64_t size, int64_t repeats);

}  // namespace anomalysd

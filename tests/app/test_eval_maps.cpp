// `eval-maps` end to end on generated trees: perfect and partial maps, maps of another size, image
// scores from a CSV, missing maps, mask-size mismatch, results files and merging partial runs.
#include <fstream>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "anomalysd/data/dataset.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/app/eval_maps.h"
#include "anomalysd/metrics/results.h"
#include "data/tree_builder.h"
#include "test_support.h"

namespace anomalysd {
namespace {

namespace fs = std::filesystem;

// Writes a float32 TIFF map per test image: the GT mask (perfect) plus `noise`, at `scale`× size.
void write_maps(const Dataset& d, const fs::path& maps, float noise, double scale = 1.0) {
  cv::RNG rng(5);
  for (const auto& c : d.classes)
    for (const auto& s : c.test) {
      const auto [h, w] = read_image_size(s.image);
      cv::Mat m = s.mask.empty() ? cv::Mat::zeros(h, w, CV_32F) : cv::Mat();
      if (!s.mask.empty()) read_mask(s.mask).convertTo(m, CV_32F);
      cv::Mat n(h, w, CV_32F);
      rng.fill(n, cv::RNG::UNIFORM, 0.0, noise);
      m += n;
      if (scale != 1.0) cv::resize(m, m, cv::Size(), scale, scale, cv::INTER_LINEAR);
      const fs::path out = maps / s.cls / "test" / s.defect / (s.id + ".tiff");
      fs::create_directories(out.parent_path());
      ASSERT_TRUE(cv::imwrite(out.string(), m));
    }
}

struct Tree {
  test::TempDir dir;
  fs::path root() const { return dir.path() / "data"; }
  fs::path maps() const { return dir.path() / "maps"; }
  Tree() {
    test::make_mvtec_class(root(), "bottle", 2, {{"good", 3}, {"broken", 2}});
    test::make_mvtec_class(root(), "cable", 2, {{"good", 2}, {"cut", 3}});
  }
  EvalMapsOptions options() const {
    EvalMapsOptions o;
    o.dataset = "mvtec";
    o.root = root().string();
    o.maps = maps().string();
    o.classes = {"bottle", "cable"};
    o.method = "test";
    o.setup = "0-shot";
    return o;
  }
};

TEST(EvalMaps, PerfectMapsScoreOne) {
  Tree t;
  write_maps(load_dataset("mvtec", t.root().string(), {"bottle", "cable"}), t.maps(), 0.5f);
  const RunResults r = evaluate_maps(t.options());
  ASSERT_EQ(r.classes.size(), 2u);
  for (const auto& c : r.classes) {
    SCOPED_TRACE(c.name);
    EXPECT_DOUBLE_EQ(c.image_auroc, 1.0);
    EXPECT_DOUBLE_EQ(c.pixel_auroc, 1.0);
    EXPECT_DOUBLE_EQ(c.pixel_pro, 1.0);
    EXPECT_DOUBLE_EQ(c.pixel_ap, 1.0);
  }
  EXPECT_EQ(r.classes[0].test_images, 5);
  EXPECT_EQ(r.classes[0].anomalous_images, 2);
  EXPECT_DOUBLE_EQ(r.mean().image_auroc, 1.0);
}

TEST(EvalMaps, MapsOfAnotherSizeAreResizedAndNoiseLowersScores) {
  Tree t;
  write_maps(load_dataset("mvtec", t.root().string(), {"bottle", "cable"}), t.maps(), 1.5f, 0.5);
  const RunResults r = evaluate_maps(t.options());
  for (const auto& c : r.classes) {
    EXPECT_GT(c.pixel_auroc, 0.5);
    EXPECT_LT(c.pixel_auroc, 1.0);
  }
  EvalMapsOptions fixed = t.options();
  fixed.eval_size = 8;
  EXPECT_NO_THROW(evaluate_maps(fixed));
}

TEST(EvalMaps, ScoresCsvOverridesImageScores) {
  Tree t;
  const Dataset d = load_dataset("mvtec", t.root().string(), {"bottle"});
  write_maps(d, t.maps(), 0.5f);
  const std::string csv = t.dir.file("scores.csv");
  std::ofstream out(csv);
  out << "class,defect,id,score\n";
  // Inverted: normal images score high.
  for (const auto& s : d.at("bottle").test) out << s.cls << "," << s.defect << "," << s.id << "," << (s.anomalous ? 0.1 : 0.9) << "\n";
  out.close();
  EvalMapsOptions o = t.options();
  o.classes = {"bottle"};
  o.scores_csv = csv;
  EXPECT_DOUBLE_EQ(evaluate_maps(o).classes[0].image_auroc, 0.0);
}

TEST(EvalMaps, MissingMapsAreListedAndMaskSizeChecked) {
  Tree t;
  const Dataset d = load_dataset("mvtec", t.root().string(), {"bottle", "cable"});
  write_maps(d, t.maps(), 0.5f);
  fs::remove(t.maps() / "bottle/test/broken/001.tiff");
  fs::remove(t.maps() / "cable/test/good/000.tiff");
  try {
    evaluate_maps(t.options());
    ADD_FAILURE();
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("2 anomaly map(s) missing"), std::string::npos) << m;
    EXPECT_NE(m.find("bottle/test/broken/001.tiff"), std::string::npos) << m;
    EXPECT_NE(m.find("cable/test/good/000.tiff"), std::string::npos) << m;
  }
  write_maps(d, t.maps(), 0.5f);
  test::write_image(t.root() / "bottle/ground_truth/broken/000_mask.png", 8, 8, true);
  try {
    evaluate_maps(t.options());
    ADD_FAILURE();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("000_mask.png: mask is 8x8 but its image is 20x16"), std::string::npos) << e.what();
  }
}

TEST(Results, FilesTableAndMergeOfPartialRuns) {
  Tree t;
  write_maps(load_dataset("mvtec", t.root().string(), {"bottle", "cable"}), t.maps(), 1.0f);
  const RunResults full = evaluate_maps(t.options());
  EvalMapsOptions a = t.options(), b = t.options();
  a.classes = {"bottle"};
  b.classes = {"cable"};
  const RunResults ra = evaluate_maps(a), rb = evaluate_maps(b);
  fs::create_directories(t.dir.path() / "a");
  write_results(ra, (t.dir.path() / "a/metrics.json").string());
  const RunResults reloaded = RunResults::load((t.dir.path() / "a/metrics.json").string());
  EXPECT_DOUBLE_EQ(reloaded.classes[0].pixel_pro, ra.classes[0].pixel_pro);
  EXPECT_TRUE(fs::exists(t.dir.path() / "a/metrics.csv"));
  EXPECT_TRUE(fs::exists(t.dir.path() / "a/table.md"));

  const RunResults merged = merge_results({reloaded, rb}, {"a", "b"});
  ASSERT_EQ(merged.classes.size(), 2u);
  EXPECT_NEAR(merged.mean().pixel_auroc, full.mean().pixel_auroc, 1e-12);
  EXPECT_NEAR(merged.mean().image_ap, full.mean().image_ap, 1e-12);
  EXPECT_THROW(merge_results({ra, ra}, {"a", "a2"}), FormatError);
  RunResults other = rb;
  other.setup = "1-shot";
  EXPECT_THROW(merge_results({ra, other}, {"a", "b"}), FormatError);

  const std::string table = results_table(merged);
  EXPECT_NE(table.find("| Setup | Method | Image AUROC | Image AUPR | Image F1-max | Pixel AUROC | Pixel PRO |"), std::string::npos);
  EXPECT_NE(table.find("| 0-shot | test |"), std::string::npos) << table;
  EXPECT_NE(table.find("| **mean** |"), std::string::npos);
}

TEST(Results, UndefinedMetricsShowAsNotAvailable) {
  RunResults r;
  r.dataset = "folder";
  ClassResult c;
  c.name = "widget";
  c.image_auroc = 0.8766;
  c.pixel_auroc = c.pixel_ap = c.pixel_f1_max = c.pixel_pro = std::nan("");
  r.classes.push_back(c);
  EXPECT_NE(results_table(r).find("| widget | 87.7 |"), std::string::npos) << results_table(r);
  EXPECT_NE(results_table(r).find("n/a"), std::string::npos);
  EXPECT_TRUE(r.to_json()["classes"]["widget"]["pixel_pro"].is_null());
  EXPECT_TRUE(std::isnan(RunResults::from_json(r.to_json(), "x").classes[0].pixel_pro));
}

}  // namespace
}  // namespace anomalysd

// The synthetic benchmark and the demo: deterministic data in the MVTec layout with exact masks,
// and the whole method end to end at CI's reduced scale — outputs exist, are finite, and the full
// method beats chance by a clear margin.
#include <cmath>
#include <filesystem>
#include <set>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include "anomalysd/app/demo.h"
#include "anomalysd/data/dataset.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/data/synthetic.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "test_support.h"

namespace anomalysd {
namespace {

namespace fs = std::filesystem;

TEST(Synthetic, DeterministicBySeedInTheMvtecLayoutWithMasks) {
  test::TempDir tmp;
  SyntheticOptions o;
  o.output = (tmp.path() / "a").string();
  o.seed = 3;
  o.train = 3;
  o.test_good = 2;
  o.test_bad = 8;
  EXPECT_EQ(make_synthetic(o).images, 4 * 13);
  o.output = (tmp.path() / "b").string();
  make_synthetic(o);
  EXPECT_EQ(test::read_bytes((tmp.path() / "a/pill/test/chip/000.png").string()), test::read_bytes((tmp.path() / "b/pill/test/chip/000.png").string()));
  o.output = (tmp.path() / "c").string();
  o.seed = 4;
  make_synthetic(o);
  EXPECT_NE(test::read_bytes((tmp.path() / "a/pill/train/good/000.png").string()), test::read_bytes((tmp.path() / "c/pill/train/good/000.png").string()));

  // Every reader takes it: two textures, two objects, 4 defect types each, masks for each defect.
  const Dataset d = load_dataset("folder", (tmp.path() / "a").string());
  ASSERT_EQ(d.classes.size(), 4u);
  int textures = 0;
  for (const auto& c : d.classes) {
    textures += synthetic_class_kind(c.name) == "texture";
    EXPECT_EQ(c.train_good.size(), 3u);
    std::set<std::string> defects;
    for (const auto& s : c.test) {
      if (!s.anomalous) continue;
      defects.insert(s.defect);
      const cv::Mat mask = read_mask(s.mask);
      EXPECT_GE(cv::countNonZero(mask), 3) << s.mask;
      EXPECT_LT(cv::countNonZero(mask), 64 * 64 / 4) << s.mask;
    }
    EXPECT_EQ(defects.size(), 4u) << c.name;
  }
  EXPECT_EQ(textures, 2);
  // Normal images vary (position, rotation, lighting, noise): no two are alike.
  const cv::Mat n0 = synthetic_normal("washer", 1, 0, 64), n1 = synthetic_normal("washer", 1, 1, 64);
  EXPECT_GT(cv::norm(n0, n1, cv::NORM_L1) / (64 * 64 * 3), 2.0);
  cv::Mat mask;
  EXPECT_THROW(synthetic_defective("washer", "crack", 1, 0, 64, mask), InputError);
  EXPECT_THROW(synthetic_normal("teapot", 1, 0, 64), InputError);
}

TEST(Demo, QuickRunEndToEndBeatsChance) {
  test::TempDir tmp;
  DemoOptions o;
  o.output = (tmp.path() / "results").string();
  o.cache = (tmp.path() / "cache").string();
  o.quick = true;
  const DemoSummary s = run_demo(o);
  for (const char* f : {"table.md", "metrics.json", "report.png", "report.html", "demo.yaml"})
    EXPECT_TRUE(fs::is_regular_file(fs::path(o.output) / f)) << f;
  ASSERT_EQ(s.table.size(), 6u);  // full, its two ablations, 0-shot, CPU setting, baseline
  for (const auto& r : s.table) {
    const ClassResult m = r.mean();
    EXPECT_TRUE(std::isfinite(m.image_auroc) && std::isfinite(m.pixel_auroc) && std::isfinite(m.pixel_pro)) << r.method;
  }
  const ClassResult full = s.table[0].mean();
  ASSERT_EQ(s.table.back().method, "Baseline: distance to the mean training image");
  const ClassResult baseline = s.table.back().mean();
  // What the README claims of the demo (the full method above the mean-image baseline at the pixel
  // level), checked at CI's reduced scale. Measured with this quick run (`ctest -R Demo.QuickRun`,
  // seeded, 2-core AMD EPYC): full method pixel AUROC 0.784 vs the baseline's 0.768 on LibTorch 1.13,
  // 0.791 vs 0.768 on LibTorch 2.6 (Debian 13). The quick run's margin is small (its bootstrap is
  // 40 s of CPU): the thresholds keep one point of it and fail when the method falls to the baseline.
  // (At the image level the quick run is below the baseline, 0.57 vs 0.63: see the README.)
  EXPECT_GT(full.pixel_auroc, baseline.pixel_auroc + 0.01) << "full method vs mean-image baseline, pixel AUROC";
  EXPECT_GT(full.pixel_auroc, 0.77) << "full method, pixel AUROC";
  EXPECT_GT(full.image_auroc, 0.55) << "full method, image AUROC (above chance)";
  std::fprintf(stderr, "quick demo: full method image/pixel AUROC %.3f / %.3f; mean-image baseline %.3f / %.3f\n", full.image_auroc,
              full.pixel_auroc, baseline.image_auroc, baseline.pixel_auroc);
  const nlohmann::json j = read_json_file((fs::path(o.output) / "metrics.json").string());
  EXPECT_EQ(j["settings"].size(), 6u);
  // The bootstrap is cached for the next run.
  EXPECT_FALSE(s.cache_used);
  EXPECT_TRUE(fs::is_regular_file(fs::path(o.cache) / "bootstrap/bootstrap.json"));
  EXPECT_TRUE(fs::is_regular_file(fs::path(o.cache) / "bootstrap/model/unet/diffusion_pytorch_model.safetensors"));
}

}  // namespace
}  // namespace anomalysd

// `anomalysd infer` on folders as users have them: mixed formats, sizes and bit depths, a corrupt
// and an empty file; outputs at each image's own size; exit codes.
#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "anomalysd/app/infer.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/io/errors.h"
#include "app/app_fixtures.h"
#include "test_support.h"

namespace anomalysd {
namespace {

namespace fs = std::filesystem;

using test::smooth_image;

TEST(Infer, MixedFolderWritesEveryReadableImageAndNamesTheFailures) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  test::TempDir tmp;
  const auto overrides = test::small_run_overrides(tmp.path() / "weights");
  const fs::path in = tmp.path() / "in", shots = tmp.path() / "shots";
  fs::create_directories(in);
  fs::create_directories(shots);
  cv::imwrite((in / "rgb.png").string(), smooth_image(48, 64, 1));
  cv::imwrite((in / "gray.jpg").string(), smooth_image(40, 40, 2, CV_8UC1));
  cv::imwrite((in / "deep.tiff").string(), smooth_image(33, 50, 3, CV_16UC3));
  cv::imwrite((in / "alpha.png").string(), smooth_image(32, 32, 4, CV_8UC4));
  cv::imwrite((in / "plain.bmp").string(), smooth_image(20, 30, 5));
  test::write_bytes((in / "corrupt.png").string(), std::string("\x89PNG\r\n\x1a\nbroken", 14));
  test::write_bytes((in / "empty.jpg").string(), "");
  test::write_bytes((in / "notes.txt").string(), "not an image");
  cv::imwrite((shots / "good.png").string(), smooth_image(48, 64, 9));

  std::string args = "infer --model " + (fixtures / "pipeline_sd2_inpaint_tiny").string() + " --input " + in.string() +
                     " --class bottle --shots " + shots.string() + " --output " + (tmp.path() / "out").string();
  for (const auto& o : overrides) args += " --set " + o;
  std::string log;
  EXPECT_EQ(test::run_cli(args, &log), 3) << log;  // some files failed, the rest written
  EXPECT_NE(log.find("corrupt.png"), std::string::npos) << log;
  EXPECT_NE(log.find("empty.jpg"), std::string::npos) << log;
  EXPECT_NE(log.find("5 scored, 2 failed"), std::string::npos) << log;

  const std::map<std::string, std::pair<int, int>> sizes = {
      {"rgb", {48, 64}}, {"gray", {40, 40}}, {"deep", {33, 50}}, {"alpha", {32, 32}}, {"plain", {20, 30}}};
  for (const auto& [stem, hw] : sizes) {
    const cv::Mat map = read_anomaly_map((tmp.path() / "out/maps" / (stem + ".tiff")).string());
    EXPECT_EQ(map.rows, hw.first) << stem;
    EXPECT_EQ(map.cols, hw.second) << stem;
    EXPECT_TRUE(fs::is_regular_file(tmp.path() / "out/overlays" / (stem + ".png"))) << stem;
  }
  std::ifstream js(tmp.path() / "out/scores.json");
  const nlohmann::json report = nlohmann::json::parse(js);
  ASSERT_EQ(report["images"].size(), 5u);
  for (const auto& row : report["images"]) EXPECT_TRUE(std::isfinite(row["score"].get<double>()));
  EXPECT_EQ(report["failures"].size(), 2u);
  EXPECT_EQ(report["masks_per_image"].get<int64_t>(), 1 + 4 + 1);  // 𝒦 = {1, 2} + prototype
  // ⌈6 / 8⌉ batches × ⌊10 · 0.4⌋ steps
  EXPECT_EQ(report["unet_calls_per_image"].get<double>(), 4.0);
  std::ifstream csv(tmp.path() / "out/scores.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header, "path,score");

  // The same command again resumes: every readable image is done, nothing is recomputed or
  // rewritten (the two unreadable files are tried again and named again).
  const auto before = fs::last_write_time(tmp.path() / "out/scores.csv");
  EXPECT_EQ(test::run_cli(args, &log), 3) << log;
  EXPECT_NE(log.find("0 scored, 2 failed; 5 already done"), std::string::npos) << log;
  EXPECT_EQ(fs::last_write_time(tmp.path() / "out/scores.csv"), before);
  // Another config into the same folder: refused, naming what changed, nothing touched.
  EXPECT_EQ(test::run_cli(args + " --set inference.alpha=0.25", &log), 2) << log;
  EXPECT_NE(log.find("alpha: 0.25"), std::string::npos) << log;
  EXPECT_NE(log.find("--overwrite"), std::string::npos) << log;
  EXPECT_EQ(fs::last_write_time(tmp.path() / "out/scores.csv"), before);
}

TEST(Infer, AnImageGetsTheSameMapUnderAnyNameFormatOrThreshold) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  test::TempDir tmp;
  const auto overrides = test::small_run_overrides(tmp.path() / "weights");
  fs::create_directories(tmp.path() / "a");
  fs::create_directories(tmp.path() / "b");
  const cv::Mat img = smooth_image(32, 32, 7);
  cv::imwrite((tmp.path() / "a/first.png").string(), img);
  cv::imwrite((tmp.path() / "b/zzz_other_name.bmp").string(), img);  // lossless: same pixels
  cv::imwrite((tmp.path() / "b/aaa_before.png").string(), smooth_image(32, 32, 8));
  InferOptions o;
  o.overrides = overrides;
  o.overrides.push_back("inference.prototype_mask=false");
  o.model = (fixtures / "pipeline_sd2_inpaint_tiny").string();
  o.cls = "tile";
  o.input = (tmp.path() / "a").string();
  o.output = (tmp.path() / "out_a").string();
  EXPECT_EQ(run_infer(o).images, 1);
  o.input = (tmp.path() / "b").string();
  o.output = (tmp.path() / "out_b").string();
  o.threshold = 0.5;
  EXPECT_EQ(run_infer(o).images, 2);
  const cv::Mat a = read_anomaly_map((tmp.path() / "out_a/maps/first.tiff").string());
  const cv::Mat b = read_anomaly_map((tmp.path() / "out_b/maps/zzz_other_name.tiff").string());
  EXPECT_EQ(cv::norm(a, b, cv::NORM_INF), 0.0);
  std::ifstream csv(tmp.path() / "out_b/scores.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header, "path,score,normalized,label");
}

TEST(Infer, MissingFeatureWeightsNameTheKeyAndTheCommand) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  test::TempDir tmp;
  fs::create_directories(tmp.path() / "in");
  cv::imwrite((tmp.path() / "in/x.png").string(), smooth_image(32, 32, 1));
  InferOptions o;
  o.overrides = {"features.alexnet=" + (tmp.path() / "none.safetensors").string(), "resolution=32"};
  o.model = (fixtures / "pipeline_sd2_inpaint_tiny").string();
  o.cls = "x";
  o.input = (tmp.path() / "in").string();
  o.output = (tmp.path() / "out").string();
  try {
    run_infer(o);
    FAIL() << "expected an error";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("features.alexnet"), std::string::npos) << m;
    EXPECT_NE(m.find("convert_torchvision_weights.py"), std::string::npos) << m;
    EXPECT_NE(m.find("init-weights"), std::string::npos) << m;
  }
  // A resolution the pipeline cannot take (tiny pipeline: multiples of 4).
  o.overrides = {"resolution=30"};
  o.output = (tmp.path() / "out2").string();
  EXPECT_THROW(run_infer(o), InputError);
}

}  // namespace
}  // namespace anomalysd

namespace anomalysd {
namespace {

// A PNG signature and IHDR claiming width × height, then nothing: what a hostile or truncated
// download looks like to the header reader.
std::string png_header(uint32_t width, uint32_t height) {
  std::string s("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16);
  for (uint32_t v : {width, height})
    for (int shift = 24; shift >= 0; shift -= 8) s += static_cast<char>((v >> shift) & 0xFF);
  s += std::string("\x08\x02\0\0\0", 5);
  return s;
}

TEST(Infer, HostileFolderEveryCaseAClearErrorOrASkipNeverACrash) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  test::TempDir tmp;
  const auto overrides = test::small_run_overrides(tmp.path() / "weights");
  const fs::path in = tmp.path() / "in";
  fs::create_directories(in);
  cv::imwrite((in / "ok.png").string(), smooth_image(32, 32, 1));
  cv::imwrite((in / std::string("name\xff\xfe.png")).string(), smooth_image(32, 32, 2));  // not UTF-8
  fs::create_symlink(in / "loop.png", in / "loop.png");                                   // a symlink to itself
  fs::create_symlink(in / "gone.png", in / "dangling.png");
  test::write_bytes((in / "zero.png").string(), "");
  const std::string full = test::read_bytes((in / "ok.png").string());
  test::write_bytes((in / "truncated.png").string(), full.substr(0, full.size() / 2));
  cv::imwrite((in / "tiny.png").string(), smooth_image(1, 1, 3));
  test::write_bytes((in / "huge.png").string(), png_header(20000, 20000));
  cv::Mat small = smooth_image(32, 32, 4);
  cv::imwrite((in / "wrong_ext.bmp").string(), small);
  fs::create_directories(in / "sub.png");  // a folder named like an image
  std::string args = "infer --model " + (fixtures / "pipeline_sd2_inpaint_tiny").string() + " --input " + in.string() +
                     " --class x --output " + (tmp.path() / "out").string();
  for (const auto& o : overrides) args += " --set " + o;
  std::string log;
  EXPECT_EQ(test::run_cli(args, &log), 3) << log;
  EXPECT_NE(log.find("3 scored"), std::string::npos) << log;
  for (const char* name : {"loop.png", "dangling.png", "zero.png", "truncated.png", "tiny.png", "huge.png"})
    EXPECT_NE(log.find(name), std::string::npos) << name << " not named in:\n" << log;
  EXPECT_NE(log.find("larger than"), std::string::npos) << log;
  EXPECT_NE(log.find("smaller than"), std::string::npos) << log;
  EXPECT_TRUE(fs::is_regular_file(tmp.path() / "out/scores.json"));
  EXPECT_TRUE(fs::is_regular_file(tmp.path() / "out/maps/ok.tiff"));
  EXPECT_TRUE(fs::is_regular_file(tmp.path() / "out/maps/wrong_ext.tiff"));
  EXPECT_TRUE(fs::is_regular_file(tmp.path() / "out/maps" / std::string("name\xff\xfe.tiff")));
}

}  // namespace
}  // namespace anomalysd

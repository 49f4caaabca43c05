// The synthetic benchmark and the demo: deterministic data in the MVTec layout with exact masks,
// and the whole method end to end at CI's reduced scale — outputs exist, are finite, and the full
// method beats chance by a clear margin.
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include "anomalysd/app/calibration.h"
#include "anomalysd/app/demo.h"
#include "anomalysd/app/infer.h"
#include "anomalysd/io/append_log.h"
#include "anomalysd/metrics/results.h"
#include "anomalysd/data/dataset.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/data/photos.h"
#include "anomalysd/data/synthetic.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/tools/components.h"
#include "anomalysd/models/alexnet_lpips.h"
#include "anomalysd/models/efficientnet.h"
#include "anomalysd/models/vae.h"
#include "anomalysd/app/method.h"
#include "anomalysd/metrics/metrics.h"
#include "anomalysd/app/eval.h"
#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/io/safetensors.h"
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

TEST(Demo, QuickRunEndToEndBeatsTheMeanImageBaselineAtImageAndPixelLevel) {
  test::TempDir tmp;
  DemoOptions o;
  o.output = (tmp.path() / "results").string();
  o.cache = (tmp.path() / "cache").string();
  o.quick = true;
  const DemoSummary s = run_demo(o);
  for (const char* f : {"table.md", "metrics.json", "report.png", "report.html", "demo.yaml"})
    EXPECT_TRUE(fs::is_regular_file(fs::path(o.output) / f)) << f;
  ASSERT_EQ(s.table.size(), 8u);  // full, its two ablations, 0-shot, CPU setting, patch-NN, raw-patch-NN and mean-image baselines
  for (const auto& r : s.table) {
    const ClassResult m = r.mean();
    EXPECT_TRUE(std::isfinite(m.image_auroc) && std::isfinite(m.pixel_auroc) && std::isfinite(m.pixel_pro)) << r.method;
  }
  const ClassResult full = s.table[0].mean();
  ASSERT_EQ(s.table[5].method, "Baseline: patch nearest neighbour (PatchCore-style, EfficientNet-B6 bank)");
  ASSERT_EQ(s.table[7].method, "Baseline: distance to the mean training image");
  const ClassResult baseline = s.table[7].mean();
  // What the README claims of the demo (the full method above the mean-image baseline at the image
  // and the pixel level), checked at CI's reduced scale. Measured with this quick run (`ctest -R
  // Demo.QuickRun`, seeded, 2-core Intel Xeon with AVX512-BF16, LibTorch 1.13): full method image /
  // pixel AUROC 0.898 / 0.933 against the baseline's 0.633 / 0.768. With the photographs' class in
  // the bootstrap, the quick run's former shorter training (VAE 200 / UNet 250 steps) measured
  // 0.586 / 0.788 — below the baseline, the failure this test is for; the quick plan now trains as
  // long as the full run. Each assertion fails when the method falls to the baseline.
  EXPECT_GT(full.image_auroc, baseline.image_auroc + 0.01) << "full method vs mean-image baseline, image AUROC";
  EXPECT_GT(full.pixel_auroc, baseline.pixel_auroc) << "full method vs mean-image baseline, pixel AUROC";
  EXPECT_TRUE(s.beats_mean_image) << "the verdict behind the demo's exit code 3";
  std::fprintf(stderr, "quick demo: full method image/pixel AUROC %.3f / %.3f; patch NN %.3f / %.3f; mean image %.3f / %.3f\n", full.image_auroc,
               full.pixel_auroc, s.table[5].mean().image_auroc, s.table[5].mean().pixel_auroc, baseline.image_auroc, baseline.pixel_auroc);
  const nlohmann::json j = read_json_file((fs::path(o.output) / "metrics.json").string());
  ASSERT_EQ(j["settings"].size(), 8u);
  // metrics.json, as written, holds the table's figures: the full method's and the mean image's.
  EXPECT_EQ(j["settings"][0]["method"], "AnomalySD");
  EXPECT_DOUBLE_EQ(j["settings"][0]["mean"]["image_auroc"].get<double>(), full.image_auroc);
  EXPECT_DOUBLE_EQ(j["settings"][0]["mean"]["pixel_auroc"].get<double>(), full.pixel_auroc);
  EXPECT_DOUBLE_EQ(j["settings"][7]["mean"]["image_auroc"].get<double>(), baseline.image_auroc);
  EXPECT_DOUBLE_EQ(j["settings"][7]["mean"]["pixel_auroc"].get<double>(), baseline.pixel_auroc);
  // The same model in bfloat16 (`dtype: bfloat16`: the networks in it; latents, scheduler and the
  // GroupNorm statistics float32) holds the same claim. Before GroupNorm's statistics were float32,
  // the bfloat16 decoder's noise put the full demo 24 image points down, below the baseline.
  {
    const fs::path features = fs::path(o.cache) / "bootstrap" / "features";
    EvalOptions e;
    e.config = (fs::path(o.output) / "demo.yaml").string();
    e.overrides = {"features.efficientnet=" + (features / "efficientnet_b6.safetensors").string(),
                   "features.alexnet=" + (features / "alexnet.safetensors").string(),
                   "features.lpips=" + (features / "lpips.safetensors").string(), "dtype=bfloat16"};
    e.dataset = "folder";
    e.root = (fs::path(o.output) / "data").string();
    e.model = (fs::path(o.output) / "finetune" / "model").string();
    e.shots_file = e.model + "/shots.json";
    e.output = (tmp.path() / "bfloat16").string();
    const ClassResult half = run_eval(e).results.mean();
    std::fprintf(stderr, "quick demo in bfloat16: image/pixel AUROC %.3f / %.3f\n", half.image_auroc, half.pixel_auroc);
    EXPECT_GT(half.image_auroc, baseline.image_auroc + 0.01) << "bfloat16 full method vs mean-image baseline, image AUROC";
    EXPECT_GT(half.pixel_auroc, baseline.pixel_auroc) << "bfloat16 full method vs mean-image baseline, pixel AUROC";
  }
  // The bootstrap is cached for the next run, with what it learnt from: the synthetic classes and
  // crops of every real photograph of configs/photos.yaml's bootstrap role (none held out); its
  // feature networks are the seeded random ones unless --plan pretrained_features=1.
  EXPECT_FALSE(s.cache_used);
  const nlohmann::json boot = read_json_file((fs::path(o.cache) / "bootstrap/bootstrap.json").string());
  EXPECT_GT(boot["seconds"].get<double>(), 0.0);
  EXPECT_EQ(boot["photos"].size(), photos_for_role(embedded_photo_list(), "bootstrap").size());
  for (const auto& p : boot["photos"]) EXPECT_EQ(p.get<std::string>().find("gimp"), std::string::npos) << p;
  EXPECT_EQ(boot["photo_images"].get<int64_t>(), 24);
  EXPECT_EQ(boot["classes"].back(), "photo");
  EXPECT_EQ(SafetensorsFile::open((fs::path(o.cache) / "bootstrap/features/alexnet.safetensors").string()).metadata().at("anomalysd_init"), "random");
  EXPECT_TRUE(fs::is_regular_file(fs::path(o.cache) / "bootstrap/model/unet/diffusion_pytorch_model.safetensors"));
  // The bootstrap's VAE reproduces a benchmark image it never saw: its posterior is narrow (the
  // log-variance starts at −6, so the decoder learns from informative latents) and the round trip
  // keeps the object where it is. Measured (this quick run): posterior std 0.066, mean absolute
  // round-trip error 0.028 of [0, 1]; with the log-variance starting at 0 the std is ≈ 0.3.
  {
    torch::NoGradGuard no_grad;
    AutoencoderKL vae = load_vae((fs::path(o.cache) / "bootstrap/model/vae").string());
    vae->eval();
    std::vector<torch::Tensor> images;
    for (const char* cls : {"washer", "pill", "weave", "marble"})
      images.push_back(read_model_image((fs::path(o.output) / "data" / cls / "test/good/000.png").string(), 64).tensor);
    const torch::Tensor x = torch::cat(images, 0);
    const LatentPosterior post = vae->encode(x * 2.0 - 1.0);
    const double std_mean = post.std.mean().item<double>();
    const double error = ((vae->decode(post.mean) / 2.0 + 0.5).clamp(0.0, 1.0) - x).abs().mean().item<double>();
    std::fprintf(stderr, "quick demo: bootstrap VAE posterior std %.4f, round-trip error %.4f\n", std_mean, error);
    EXPECT_LT(std_mean, 0.1) << "the VAE's posterior std (log-variance initialised low)";
    EXPECT_LT(error, 0.07) << "the VAE's round-trip error on benchmark images";
  }
  // From eval to a line's verdicts: the full method's calibration.json, applied by `infer` to the
  // same test images with the same model, config and shots, labels them exactly as its F1-max
  // threshold did (its accuracy), and the predicted masks reach its pixel F1 against the ground truth.
  {
    const fs::path eval_dir = fs::path(o.output) / "eval/full";
    const Calibration calibration = Calibration::load((eval_dir / "calibration.json").string());
    ASSERT_EQ(calibration.classes.size(), 4u);
    std::set<std::string> evaluated;
    const nlohmann::json eval_run = read_json_file((eval_dir / "run.json").string());
    for (const auto& k : eval_run.at("samples")) evaluated.insert(k.get<std::string>());
    const Dataset dataset = load_dataset("folder", (fs::path(o.output) / "data").string());
    for (const ClassData& c : dataset.classes) {
      const ClassCalibration& k = calibration.classes.at(c.name);
      // The evaluated test images (the quick run evaluates a part), in the dataset's layout.
      const fs::path in = tmp.path() / "inspect-in" / c.name;
      std::map<std::string, TestSample> by_path;
      for (const TestSample& t : c.test) {
        if (!evaluated.count(sample_key(t.cls, t.defect, t.id))) continue;
        const std::string rel = t.defect + "/" + fs::path(t.image).filename().string();
        fs::create_directories(in / t.defect);
        fs::copy_file(t.image, in / rel);
        by_path[rel] = t;
      }
      InferOptions io;
      io.config = s.config_file;
      io.overrides = s.overrides;
      io.model = s.model;
      io.cls = c.name;
      io.shots = (fs::path(o.output) / "shots" / c.name).string();
      io.input = in.string();
      io.recursive = true;
      io.calibration = (eval_dir / "calibration.json").string();
      io.output = (tmp.path() / "inspect" / c.name).string();
      const InferSummary r = run_infer(io);
      ASSERT_EQ(r.images, static_cast<int64_t>(by_path.size()));
      int64_t correct = 0, tp = 0, fp = 0, fn = 0;
      for (const auto& line : read_line_log((fs::path(io.output) / "results.jsonl").string())) {
        const auto j = nlohmann::json::parse(line);
        const TestSample& t = by_path.at(j["path"].get<std::string>());
        correct += (j["label"] == "anomalous") == t.anomalous;
        const cv::Mat predicted = cv::imread(j["mask"].get<std::string>(), cv::IMREAD_GRAYSCALE);
        const cv::Mat truth = t.mask.empty() ? cv::Mat::zeros(predicted.size(), CV_8U) : read_mask(t.mask);
        ASSERT_EQ(predicted.size(), truth.size());
        for (int y = 0; y < truth.rows; ++y)
          for (int x = 0; x < truth.cols; ++x) {
            const bool p = predicted.at<uint8_t>(y, x) != 0, g = truth.at<uint8_t>(y, x) != 0;
            tp += p && g;
            fp += p && !g;
            fn += !p && g;
          }
      }
      const double pixel_f1 = 2.0 * static_cast<double>(tp) / static_cast<double>(2 * tp + fp + fn);
      std::fprintf(stderr, "quick demo, infer --calibration on %s: accuracy %.3f (calibration: %.3f), pixel F1 %.3f (calibration: %.3f)\n",
                   c.name.c_str(), static_cast<double>(correct) / static_cast<double>(by_path.size()), k.accuracy(), pixel_f1, k.pixel_f1);
      EXPECT_EQ(correct, k.true_positives + k.normal_images - k.false_positives) << c.name << ": image verdicts against the calibration's";
      ASSERT_TRUE(k.has_pixel);
      EXPECT_NEAR(pixel_f1, k.pixel_f1, 1e-9) << c.name << ": predicted masks against the ground truth";
      EXPECT_GT(tp, 0) << c.name << ": the predicted masks overlap the defects";
    }
  }
}

TEST(Demo, PretrainFeaturesLearnsItsTasksAndRecordsHow) {
  test::TempDir tmp;
  SyntheticOptions so;
  so.output = (tmp.path() / "data").string();
  so.seed = 5;
  so.classes = {"weave", "marble", "washer"};
  so.train = 30;
  so.test_good = 1;
  so.test_bad = 0;
  make_synthetic(so);
  PretrainFeaturesOptions p;
  p.data = so.output;
  p.texture_classes = {"weave", "marble"};
  p.output = (tmp.path() / "features").string();
  p.alexnet_steps = 150;
  p.efficientnet_steps = 1;
  p.batch = 16;
  const auto nets = run_pretrain_features(p);
  ASSERT_EQ(nets.size(), 2u);
  ASSERT_EQ(nets[0].arch, "alexnet");
  // On held-out images: the classes apart (chance 1/3, reached at init), and the foreign regions
  // found by the distance map. Measured (this data, 2-core AMD EPYC): class accuracy 1.000,
  // foreign-region AUROC 0.945 — and 0.963 with the random weights it started from: on these
  // images random AlexNet features already see pasted regions, and 150 steps do not improve on
  // them (with the 20 photographs as well, training lifts it from 0.81 to 0.93; README).
  std::fprintf(stderr, "alexnet, 150 steps: class accuracy %.3f, foreign-region AUROC %.3f (at init %.3f)\n", nets[0].class_accuracy,
               nets[0].foreign_auroc, nets[0].initial_foreign_auroc);
  EXPECT_GT(nets[0].class_accuracy, 0.6);
  EXPECT_GT(nets[0].foreign_auroc, 0.85);
  EXPECT_GT(nets[0].initial_foreign_auroc, 0.5);
  for (const char* f : {"alexnet.safetensors", "efficientnet_b6.safetensors", "lpips.safetensors"}) {
    const auto meta = SafetensorsFile::open((fs::path(p.output) / f).string()).metadata();
    EXPECT_EQ(meta.at("anomalysd_init"), "bootstrap") << f;
    EXPECT_NE(meta.at("how").find("foreign region"), std::string::npos) << f;
    EXPECT_NE(meta.at("heldout_accuracy").find("at init"), std::string::npos) << f;
  }
  // The lins are learnt (not the all-ones start) and non-negative, as LPIPS keeps them.
  for (const auto& [name, w] : load_all((fs::path(p.output) / "lpips.safetensors").string())) {
    EXPECT_GE(w.min().item<float>(), 0.0f) << name;
    EXPECT_GT((w - 1).abs().max().item<float>(), 1e-3f) << name;
  }
  // The method loads them, and no longer counts them as random weights.
  EXPECT_NO_THROW(load_lpips((fs::path(p.output) / "alexnet.safetensors").string(), (fs::path(p.output) / "lpips.safetensors").string()));
  EXPECT_NO_THROW(load_efficientnet((fs::path(p.output) / "efficientnet_b6.safetensors").string(), 6));
}

TEST(Demo, PatchNearestNeighbourBaselineScoresItsOwnShotZero) {
  test::TempDir tmp;
  SyntheticOptions so;
  so.output = (tmp.path() / "data").string();
  so.classes = {"washer"};
  so.train = 2;
  so.test_good = 2;
  so.test_bad = 2;
  make_synthetic(so);
  // The shot is also a normal test image: its nearest neighbours are its own features (rotation 0
  // is in the bank), so its whole map is 0 — and the defective images' are not.
  fs::copy_file(fs::path(so.output) / "washer/train/good/000.png", fs::path(so.output) / "washer/test/good/000.png",
                fs::copy_options::overwrite_existing);
  ShotSelection shots;
  shots.k = 1;
  shots.shots["washer"] = {(fs::path(so.output) / "washer/train/good/000.png").string()};
  const Dataset dataset = load_dataset("folder", so.output);
  write_file_atomically(tmp.file("shots.json"), json_text(shots_to_json(shots, so.output)));
  PatchNnBaselineOptions o;
  o.dataset_root = so.output;
  o.shots_file = tmp.file("shots.json");
  o.maps_dir = tmp.file("maps");
  o.efficientnet = tmp.file("efficientnet.safetensors");
  init_feature_weights("efficientnet_b6", 0, o.efficientnet);
  const RunResults r = patch_nn_baseline(o);
  EXPECT_EQ(r.method, "Baseline: patch nearest neighbour (PatchCore-style, EfficientNet-B6 bank)");
  const cv::Mat own = cv::imread((fs::path(o.maps_dir) / "washer/test/good/000.tiff").string(), cv::IMREAD_UNCHANGED);
  const cv::Mat other = cv::imread((fs::path(o.maps_dir) / "washer/test/good/001.tiff").string(), cv::IMREAD_UNCHANGED);
  double own_max = 0, other_max = 0;
  cv::minMaxLoc(own, nullptr, &own_max);
  cv::minMaxLoc(other, nullptr, &other_max);
  EXPECT_LT(own_max, 1e-3 * other_max) << "the shot itself is its own nearest neighbour";
  EXPECT_GT(other_max, 0.0);
}

}  // namespace
}  // namespace anomalysd

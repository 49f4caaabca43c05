// Fine-tuning (paper §4.1): training masks and the IoU filter, foreground masks, augmentations,
// Adam against LibTorch's, gradient checkpointing, pipeline folders, and `finetune` itself — the
// loss decreases, a resumed run equals an uninterrupted one bit for bit, a killed run never leaves
// a checkpoint that loads half, and the result runs in `infer`.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <limits>
#include <fstream>
#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "anomalysd/anomaly/inpaint.h"
#include "anomalysd/app/finetune.h"
#include "anomalysd/app/infer.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/models/sd_pipeline.h"
#include "anomalysd/train/checkpoint.h"
#include "anomalysd/train/losses.h"
#include "anomalysd/train/optim.h"
#include "anomalysd/train/training_data.h"
#include "app/app_fixtures.h"
#include "test_support.h"

namespace anomalysd {
namespace {

namespace fs = std::filesystem;

TEST(TrainingMasks, IoUFilterRespectsGammaAndRectangleIoUIsExact) {
  std::mt19937_64 rng(1);
  const std::vector<double> gammas{0.0, 0.2, 0.5};
  for (int trial = 0; trial < 60; ++trial) {
    // A random elliptic foreground.
    cv::Mat fg = cv::Mat::zeros(64, 64, CV_8U);
    const int cx = 16 + static_cast<int>(rng() % 32), cy = 16 + static_cast<int>(rng() % 32);
    cv::ellipse(fg, cv::Point(cx, cy), cv::Size(6 + static_cast<int>(rng() % 20), 6 + static_cast<int>(rng() % 20)), 0, 0, 360, 1, -1);
    const TrainingMask m = sample_training_mask(rng, fg, gammas, true);
    EXPECT_NE(std::find(gammas.begin(), gammas.end(), m.gamma), gammas.end());
    // The exact IoU, by counting pixels.
    cv::Mat rect = cv::Mat::zeros(64, 64, CV_8U);
    rect(cv::Rect(m.rect.x, m.rect.y, m.rect.width, m.rect.height)).setTo(1);
    const double inter = cv::countNonZero(rect & fg), uni = cv::countNonZero(rect | fg);
    EXPECT_NEAR(m.iou, inter / uni, 1e-12);
    if (!m.fallback) {
      EXPECT_GT(m.iou, m.gamma);
    }
    EXPECT_GE(m.rect.width, 8);
    EXPECT_LE(m.rect.x + m.rect.width, 64);
  }
  // Without the filter (Table 4's "random mask"): the first rectangle.
  cv::Mat fg = cv::Mat::zeros(64, 64, CV_8U);
  fg(cv::Rect(0, 0, 4, 4)).setTo(1);
  EXPECT_EQ(sample_training_mask(rng, fg, {0.5}, false).tries, 1);
  // An unreachable γ falls back to the best rectangle seen, flagged.
  const TrainingMask hopeless = sample_training_mask(rng, fg, {0.99}, true, 50);
  EXPECT_TRUE(hopeless.fallback);
  EXPECT_EQ(hopeless.tries, 50);
}

TEST(Foreground, ObjectOnBackgroundTextureAndNoObject) {
  cv::Mat img(64, 64, CV_32FC3, cv::Scalar(0.1, 0.1, 0.12));
  cv::circle(img, cv::Point(30, 34), 14, cv::Scalar(0.8, 0.6, 0.2), -1);
  cv::circle(img, cv::Point(30, 34), 4, cv::Scalar(0.1, 0.1, 0.12), -1);  // a hole: filled
  cv::Mat truth = cv::Mat::zeros(64, 64, CV_8U);
  cv::circle(truth, cv::Point(30, 34), 14, 1, -1);
  const cv::Mat fg = foreground_mask(img, ForegroundMode::kObject);
  const double iou = cv::countNonZero(fg & truth) / static_cast<double>(cv::countNonZero(fg | truth));
  EXPECT_GT(iou, 0.9);
  EXPECT_EQ(fg.at<uint8_t>(34, 30), 1);  // the hole is filled
  EXPECT_EQ(cv::countNonZero(foreground_mask(img, ForegroundMode::kTexture)), 64 * 64);
  const cv::Mat flat(64, 64, CV_32FC3, cv::Scalar(0.5, 0.5, 0.5));
  EXPECT_EQ(cv::countNonZero(foreground_mask(flat, ForegroundMode::kObject)), 64 * 64);  // nothing separable: all
}

TEST(Augment, SeededIdentityAndGeometry) {
  AugmentConfig c;
  std::mt19937_64 a(5), b(5);
  const AugmentParams pa = sample_augment(a, c), pb = sample_augment(b, c);
  EXPECT_EQ(pa.angle, pb.angle);
  EXPECT_EQ(pa.scale, pb.scale);
  torch::manual_seed(0);
  const torch::Tensor x = torch::rand({1, 3, 16, 16});
  AugmentParams none;
  EXPECT_TRUE(torch::equal(augment_photometric(augment_geometry(x, none, false), none), x));
  AugmentParams rot;
  rot.applied = true;
  rot.angle = 90;
  const torch::Tensor m = torch::zeros({1, 1, 16, 16}).index_put_({0, 0, 2, torch::indexing::Slice()}, 1.0f);
  const torch::Tensor r = augment_geometry(m, rot, true);
  EXPECT_TRUE(torch::equal(r, torch::rot90(m, 1, {2, 3})) || torch::equal(r, torch::rot90(m, -1, {2, 3})));
  EXPECT_EQ(std::get<0>(at::_unique(r)).numel(), 2);  // still 0/1
  AugmentParams bright;
  bright.applied = true;
  bright.brightness = 0.1;
  EXPECT_NEAR((augment_photometric(x, bright) - x).mean().item<double>(), 0.1, 0.02);
}

TEST(Optim, AdamMatchesLibTorchsAdam) {
  torch::manual_seed(3);
  const torch::Tensor target = torch::randn({5, 4});
  torch::Tensor w1 = torch::randn({5, 4}).requires_grad_(), w2 = w1.detach().clone().requires_grad_();
  Adam mine({{"w", w1}}, 1e-2);
  torch::optim::Adam theirs({w2}, torch::optim::AdamOptions(1e-2));
  for (int i = 0; i < 20; ++i) {
    mine.zero_grad();
    (w1 - target).pow(3).abs().sum().backward();
    mine.step();
    theirs.zero_grad();
    (w2 - target).pow(3).abs().sum().backward();
    theirs.step();
  }
  EXPECT_TRUE(torch::allclose(w1, w2, 1e-6, 1e-7)) << (w1 - w2).abs().max().item<double>();
  // Clipping: the norm before, gradients scaled to the limit.
  torch::Tensor g = torch::zeros({2}, torch::requires_grad());
  (g * torch::tensor({3.0f, 4.0f})).sum().backward();
  EXPECT_NEAR(clip_gradients({{"g", g}}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(g.grad().norm().item<double>(), 1.0, 1e-5);
}

TEST(GradientCheckpointing, SameGradientsAsThePlainBackward) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  UNet2DConditionModel unet = load_unet((fixtures / "unet_sd2_inpaint_tiny").string());
  unet->train();
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({2, 9, 16, 16}), ctx = torch::randn({2, 77, 32});
  const torch::Tensor t = torch::tensor({10, 500}, torch::kLong);
  auto grads = [&](bool checkpointing) {
    unet->gradient_checkpointing = checkpointing;
    for (auto& p : unet->parameters()) p.mutable_grad() = torch::Tensor();
    unet->forward(x, t, ctx).pow(2).mean().backward();
    std::vector<torch::Tensor> g;
    for (auto& p : unet->named_parameters()) {
      EXPECT_TRUE(p.value().grad().defined()) << p.key() << (checkpointing ? " (checkpointed)" : "");
      g.push_back(p.value().grad().defined() ? p.value().grad().clone() : torch::zeros_like(p.value()));
    }
    return g;
  };
  const auto plain = grads(false), ckpt = grads(true);
  ASSERT_EQ(plain.size(), ckpt.size());
  for (std::size_t i = 0; i < plain.size(); ++i) EXPECT_TRUE(torch::allclose(plain[i], ckpt[i], 1e-4, 1e-6)) << "parameter " << i;
}

TEST(PipelineFolder, SavedWeightsLoadBackBitIdenticalAndAsHalf) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  test::TempDir tmp;
  const std::string base = (fixtures / "pipeline_sd2_inpaint_tiny").string();
  SdPipeline pipe = load_sd_pipeline(base);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : pipe.unet->parameters()) p.add_(torch::randn_like(p) * 0.01);
    for (auto& p : pipe.vae->parameters()) p.add_(torch::randn_like(p) * 0.01);
  }
  PipelineWrite w;
  w.base = base;
  w.target = (tmp.path() / "tuned").string();
  w.text_files = {{"shots.json", "{}"}};
  write_pipeline_folder(w, pipe.unet, pipe.vae);
  SdPipeline back = load_sd_pipeline(w.target);
  auto same = [](torch::nn::Module& a, torch::nn::Module& b, bool half) {
    auto pa = a.named_parameters(), pb = b.named_parameters();
    for (const auto& p : pa) {
      const torch::Tensor expected = half ? p.value().to(torch::kHalf).to(torch::kFloat) : p.value();
      if (!torch::equal(expected, pb[p.key()])) return false;
    }
    return true;
  };
  EXPECT_TRUE(same(*pipe.unet, *back.unet, false));
  EXPECT_TRUE(same(*pipe.vae, *back.vae, false));
  EXPECT_TRUE(fs::is_regular_file(fs::path(w.target) / "shots.json"));
  EXPECT_TRUE(fs::is_regular_file(fs::path(w.target) / "text_encoder/model.safetensors"));
  w.variant = "fp16";
  w.target = (tmp.path() / "half").string();
  write_pipeline_folder(w, pipe.unet, pipe.vae);
  SdPipeline half = load_sd_pipeline(w.target, "fp16");
  EXPECT_TRUE(same(*pipe.unet, *half.unet, true));
  // No temporary folder is left behind.
  for (const auto& e : fs::directory_iterator(tmp.path())) EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
}

struct FinetuneFixture {
  test::TempDir tmp;
  FinetuneOptions base;
  explicit FinetuneFixture(const fs::path& fixtures) {
    base.overrides = test::small_run_overrides(tmp.path() / "weights");
    for (const char* o : {"train.unet_steps=12", "train.decoder_steps=4", "train.batch_size=2", "train.save_every=4", "train.keep=3",
                          "train.ema_decay=0.9", "train.log_every=100"})
      base.overrides.push_back(o);
    test::make_textured_dataset(tmp.path() / "data", {"alpha", "beta"}, 3, 2, 2);
    base.model = (fixtures / "pipeline_sd2_inpaint_tiny").string();
    base.dataset = "folder";
    base.root = (tmp.path() / "data").string();
    base.shots = 2;
  }
  FinetuneOptions with_output(const std::string& name) const {
    FinetuneOptions o = base;
    o.output = (tmp.path() / name).string();
    return o;
  }
};

bool same_file(const fs::path& a, const fs::path& b) { return test::read_bytes(a.string()) == test::read_bytes(b.string()); }

TEST(Finetune, LossDecreasesOverDozensOfSteps) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  FinetuneFixture f(fixtures);
  FinetuneOptions o = f.with_output("run");
  o.overrides.push_back("train.unet_steps=60");
  o.overrides.push_back("train.decoder_steps=30");
  o.overrides.push_back("train.lr=3e-4");
  o.overrides.push_back("train.save_every=0");
  const FinetuneSummary s = run_finetune(o);
  EXPECT_TRUE(s.finished);
  // Mean loss of the last 10 steps of each part below that of the first 10.
  std::ifstream in(fs::path(o.output) / "train_log.csv");
  std::string line;
  std::getline(in, line);
  std::vector<double> unet, decoder;
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::string step, part, loss;
    std::getline(ss, step, ',');
    std::getline(ss, part, ',');
    std::getline(ss, loss, ',');
    (part == "unet" ? unet : decoder).push_back(std::stod(loss));
  }
  ASSERT_EQ(unet.size(), 60u);
  ASSERT_EQ(decoder.size(), 30u);
  auto mean = [](const std::vector<double>& v, std::size_t a, std::size_t b) {
    double s = 0;
    for (std::size_t i = a; i < b; ++i) s += v[i];
    return s / static_cast<double>(b - a);
  };
  EXPECT_LT(mean(unet, 50, 60), 0.9 * mean(unet, 0, 10));
  EXPECT_LT(mean(decoder, 20, 30), 0.9 * mean(decoder, 0, 10));
  EXPECT_TRUE(fs::is_regular_file(fs::path(o.output) / "loss.png"));
  // The fine-tuned folder is a pipeline that infer runs on, with the shots it was tuned on.
  EXPECT_EQ(read_json_file((fs::path(o.output) / "model/shots.json").string())["k"], 2);
  fs::create_directories(f.tmp.path() / "in");
  fs::copy_file(f.tmp.path() / "data/alpha/test/square/000.png", f.tmp.path() / "in/x.png");
  InferOptions io;
  io.overrides = f.base.overrides;
  io.model = (fs::path(o.output) / "model").string();
  io.cls = "alpha";
  io.input = (f.tmp.path() / "in").string();
  io.output = (f.tmp.path() / "infer").string();
  EXPECT_EQ(run_infer(io).images, 1);
}

TEST(Finetune, ResumedRunEqualsUninterruptedBitForBit) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  FinetuneFixture f(fixtures);
  const FinetuneSummary whole = run_finetune(f.with_output("whole"));
  ASSERT_TRUE(whole.finished);
  FinetuneOptions parts = f.with_output("parts");
  parts.stop_after = 5;  // stops inside the UNet part (a checkpoint at 4 and at 5)
  EXPECT_FALSE(run_finetune(parts).finished);
  parts.resume = true;
  parts.stop_after = 9;  // crosses into the decoder part, stops at 14
  EXPECT_FALSE(run_finetune(parts).finished);
  parts.stop_after = 0;
  const FinetuneSummary rest = run_finetune(parts);
  EXPECT_TRUE(rest.finished);
  EXPECT_EQ(rest.start_step, 14);
  for (const char* file : {"model/unet/diffusion_pytorch_model.safetensors", "model/vae/diffusion_pytorch_model.safetensors"})
    EXPECT_TRUE(same_file(f.tmp.path() / "whole" / file, f.tmp.path() / "parts" / file)) << file;
  // The loss log holds every step once, equal to the uninterrupted run's losses.
  auto losses = [](const fs::path& p) {
    std::ifstream in(p);
    std::string line;
    std::vector<std::string> out;
    while (std::getline(in, line)) out.push_back(line.substr(0, line.find(',', line.find(',', line.find(',') + 1) + 1)));
    return out;
  };
  EXPECT_EQ(losses(f.tmp.path() / "whole/train_log.csv"), losses(f.tmp.path() / "parts/train_log.csv"));
  // Without --resume or --overwrite the folder is refused.
  EXPECT_THROW(run_finetune(f.with_output("whole")), InputError);
}

TEST(Finetune, KilledAtRandomMomentsNeverLeavesAHalfCheckpointAndResumesToTheSameModel) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  FinetuneFixture f(fixtures);
  const FinetuneSummary whole = run_finetune(f.with_output("whole"));
  std::string args = "--log-level warn finetune --model " + f.base.model + " --dataset folder --root " + f.base.root +
                     " --shots 2 --output " + (f.tmp.path() / "killed").string() + " --resume";
  for (const auto& o : f.base.overrides) args += " --set " + o;
  std::mt19937_64 rng(7);
  for (int attempt = 0; attempt < 4; ++attempt) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", (std::string("exec ") + ANOMALYSD_CLI + " " + args + " > /dev/null 2>&1").c_str(), nullptr);
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 1500));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    // Every checkpoint that exists loads completely.
    const fs::path dir = f.tmp.path() / "killed/checkpoints";
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().filename().string()[0] == '.') continue;  // an interrupted save: never read
      EXPECT_NO_THROW(load_sd_pipeline(e.path().string())) << e.path();
      EXPECT_NO_THROW(read_json_file((e.path() / "training_state.json").string())) << e.path();
    }
  }
  FinetuneOptions finish = f.with_output("killed");
  finish.resume = true;
  ASSERT_TRUE(run_finetune(finish).finished);
  for (const char* file : {"model/unet/diffusion_pytorch_model.safetensors", "model/vae/diffusion_pytorch_model.safetensors"})
    EXPECT_TRUE(same_file(f.tmp.path() / "whole" / file, f.tmp.path() / "killed" / file)) << file;
}

}  // namespace
}  // namespace anomalysd

namespace anomalysd {
namespace {

TEST(Finetune, NonFiniteLossStopsWithAClearErrorAndKeepsTheLastGoodCheckpoint) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  FinetuneFixture f(fixtures);
  // A base model whose VAE decoder holds a NaN: the UNet part trains normally (it never decodes),
  // the decoder part's first loss is NaN.
  SdPipeline pipe = load_sd_pipeline(f.base.model);
  {
    torch::NoGradGuard no_grad;
    pipe.vae->decoder->conv_out->bias[0] = std::numeric_limits<float>::quiet_NaN();
  }
  PipelineWrite w;
  w.base = f.base.model;
  w.target = (f.tmp.path() / "base-nan").string();
  write_pipeline_folder(w, pipe.unet, pipe.vae);
  FinetuneOptions o = f.with_output("nan");
  o.model = w.target;
  o.overrides.push_back("train.unet_steps=3");
  o.overrides.push_back("train.decoder_steps=2");
  o.overrides.push_back("train.save_every=1");
  try {
    run_finetune(o);
    FAIL() << "expected the run to stop";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("the loss is"), std::string::npos) << m;
    EXPECT_NE(m.find("last good checkpoint"), std::string::npos) << m;
  }
  const std::string last = newest_checkpoint(o.output);
  EXPECT_EQ(fs::path(last).filename().string(), "step-0000003");  // the end of the UNet part
  EXPECT_NO_THROW(load_sd_pipeline(last));
  EXPECT_FALSE(fs::exists(fs::path(o.output) / "model"));  // nothing final from a broken run
}

}  // namespace
}  // namespace anomalysd

// Fine-tuning (paper §4.1): training masks and the IoU filter, foreground masks, augmentations,
// Adam against LibTorch's, gradient checkpointing, pipeline folders, and `finetune` itself — the
// loss decreases, a resumed run equals an uninterrupted one bit for bit, a killed run never leaves
// a checkpoint that loads half, and the result runs in `infer`.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <limits>
#include <fstream>
#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "anomalysd/anomaly/inpaint.h"
#include "anomalysd/app/finetune.h"
#include "anomalysd/app/infer.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/core/app_config.h"
#include "anomalysd/io/safetensors.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/models/alexnet_lpips.h"
#include "anomalysd/models/sd_pipeline.h"
#include "anomalysd/train/checkpoint.h"
#include "anomalysd/train/losses.h"
#include "anomalysd/train/optim.h"
#include "anomalysd/train/training_data.h"
#include "app/app_fixtures.h"
#include "models/parity.h"
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

// --- the losses against the reference libraries (tests/train/data/make_loss_reference.py) -----

// The reference's fixed inputs and values: diffusers 0.27.2 + torch 1.13 on the tiny pipeline.
std::map<std::string, torch::Tensor> loss_reference() {
  return load_all(std::string(ANOMALYSD_SOURCE_DIR) + "/tests/train/data/loss_reference.safetensors");
}

// The tiny pipeline with another prediction type in its scheduler config.
fs::path pipeline_with_prediction(const fs::path& fixtures, const fs::path& dir, const std::string& prediction) {
  fs::copy(fixtures / "pipeline_sd2_inpaint_tiny", dir, fs::copy_options::recursive);
  const fs::path cfg = dir / "scheduler/scheduler_config.json";
  fs::permissions(cfg, fs::perms::owner_write, fs::perm_options::add);
  nlohmann::json j = read_json_file(cfg.string());
  j["prediction_type"] = prediction;
  test::write_bytes(cfg.string(), j.dump());
  return dir;
}

TEST(Losses, UnetLossEq8MatchesDiffusersForEpsilonAndVPrediction) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  const auto ref = loss_reference();
  test::TempDir tmp;
  for (const std::string prediction : {"epsilon", "v_prediction"}) {
    SdPipeline pipe = load_sd_pipeline(pipeline_with_prediction(fixtures, tmp.path() / prediction, prediction).string());
    torch::NoGradGuard no_grad;
    const torch::Tensor loss = unet_loss(pipe, ref.at("images"), ref.at("masks"), ref.at("context"), ref.at("timesteps"), ref.at("noise"));
    EXPECT_TRUE(test::close_to_reference(loss.reshape({1}), ref.at("unet_loss." + prediction), "unet_loss." + prediction, 1e-5))
        << loss.item<double>() << " vs " << ref.at("unet_loss." + prediction).item<double>();
  }
}

TEST(Losses, DecoderLossEq9To10IsMseOnMinusOneToOnePlusBetaLpips) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  const auto ref = loss_reference();
  SdPipeline pipe = load_sd_pipeline((fixtures / "pipeline_sd2_inpaint_tiny").string());
  test::TempDir tmp;
  const std::string trunk = tmp.file("alexnet.safetensors");
  save_safetensors(trunk, test::rebuild_state(fixtures / "alexnet_lpips/features_bias.safetensors", fixtures / "alexnet_lpips/hashed_weights.json"));
  Lpips lpips = load_lpips(trunk, (fixtures / "alexnet_lpips/lpips_lin_v0.1.safetensors").string());
  torch::NoGradGuard no_grad;
  // β = 0.1 is the paper's (§5.1) and the config's default.
  EXPECT_DOUBLE_EQ(TrainConfig().decoder_lpips_weight, 0.1);
  const DecoderLoss d = decoder_loss(pipe, lpips, ref.at("images"), 0.1);
  // MSE on [−1, 1], the VAE's own range: on [0, 1] it would be 4× smaller.
  EXPECT_TRUE(test::close_to_reference(d.mse.reshape({1}), ref.at("decoder.mse"), "decoder.mse", 1e-5)) << d.mse.item<double>();
  EXPECT_TRUE(test::close_to_reference(d.lpips.reshape({1}), ref.at("decoder.lpips"), "decoder.lpips", 1e-5)) << d.lpips.item<double>();
  EXPECT_TRUE(test::close_to_reference(d.total.reshape({1}), ref.at("decoder.total_beta0.1"), "decoder.total", 1e-5)) << d.total.item<double>();
}

TEST(Optim, AdamMatchesLibTorchsAdam) {
  torch::manual_seed(3);
  const torch::Tensor target = torch::randn({5, 4});
  torch::Tensor w1 = torch::randn({5, 4}).requires_grad_(), w2 = w1.detach().clone().requires_grad_();
  Adam mine({{"w", w1}}, 1e-2);
  torch::optim::Adam theirs({w2}, torch::optim::AdamOptions(1e-2));
  for (int i = 0; i < 20; ++i) {
    if (i == 10) {  // a schedule's change of rate (the bootstrap's cosine decay) takes effect at the next step
      mine.set_lr(3e-3);
      static_cast<torch::optim::AdamOptions&>(theirs.param_groups()[0].options()).lr(3e-3);
    }
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

TEST(Finetune, ResumeWithALargerLengthContinuesAFinishedRunToTheLongerRunsModel) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  FinetuneFixture f(fixtures);
  // The longer run, uninterrupted: 20 UNet steps, then 6 decoder steps.
  FinetuneOptions longer = f.with_output("longer");
  longer.overrides.push_back("train.unet_steps=20");
  longer.overrides.push_back("train.decoder_steps=6");
  ASSERT_TRUE(run_finetune(longer).finished);
  // The fixture's 12 + 4 steps, finished; then --resume with the longer length: the UNet part
  // continues from its kept optimizer and EMA state (saved with the decoder's checkpoints), then
  // the decoder's. Each part's samples are a function of its step index: the same model, bit for bit.
  ASSERT_TRUE(run_finetune(f.with_output("grown")).finished);
  FinetuneOptions grown = f.with_output("grown");
  grown.resume = true;
  grown.overrides.push_back("train.unet_steps=20");
  grown.overrides.push_back("train.decoder_steps=6");
  const FinetuneSummary s = run_finetune(grown);
  EXPECT_TRUE(s.finished);
  EXPECT_EQ(s.start_step, 16);
  EXPECT_EQ(s.steps_run, 10);
  for (const char* file : {"model/unet/diffusion_pytorch_model.safetensors", "model/vae/diffusion_pytorch_model.safetensors"})
    EXPECT_TRUE(same_file(f.tmp.path() / "longer" / file, f.tmp.path() / "grown" / file)) << file;
  // What would change what was trained is refused, naming the rule; so is a shorter length.
  FinetuneOptions other_lr = grown;
  other_lr.overrides.push_back("train.lr=2e-4");
  try {
    run_finetune(other_lr);
    FAIL() << "expected a refusal";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("only the training length may change"), std::string::npos) << e.what();
  }
  FinetuneOptions shorter = f.with_output("grown");
  shorter.resume = true;
  shorter.overrides.push_back("train.unet_steps=10");
  EXPECT_THROW(run_finetune(shorter), InputError);
}

TEST(Finetune, EpochsAreThePapersUnitAndGiveTheStepCount) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  FinetuneFixture f(fixtures);
  // 2 classes × 2 shots = 4 images, batch 2: 3 epochs = 6 UNet steps, 1 epoch = 2 decoder steps.
  FinetuneOptions o = f.with_output("epochs");
  for (const char* k : {"train.unet_steps=0", "train.decoder_steps=0", "train.unet_epochs=3", "train.decoder_epochs=1", "train.save_every=0"})
    o.overrides.push_back(k);
  const FinetuneSummary s = run_finetune(o);
  EXPECT_EQ(s.unet_steps, 6);
  EXPECT_EQ(s.decoder_steps, 2);
  // Steps, when set, win over epochs.
  FinetuneOptions steps = f.with_output("steps");
  for (const char* k : {"train.unet_steps=3", "train.decoder_steps=0", "train.unet_epochs=3", "train.decoder_epochs=0", "train.save_every=0"})
    steps.overrides.push_back(k);
  EXPECT_EQ(run_finetune(steps).unet_steps, 3);
}

TEST(Finetune, KilledAtRandomMomentsNeverLeavesAHalfCheckpointAndResumesToTheSameModel) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  FinetuneFixture f(fixtures);
  const FinetuneSummary whole = run_finetune(f.with_output("whole"));
  std::string args = "--log-level warn finetune --model " + f.base.model + " --dataset folder --root " + f.base.root +
                     " --shots 2 --output " + (f.tmp.path() / "killed").string() + " --resume";
  for (const auto& o : f.base.overrides) args += " --set " + o;
  // Each kill lands after the N-th training step of the run has been logged (N one to four past
  // the steps already done), so that it falls mid-run: checkpoints written, the run unfinished.
  const fs::path log = f.tmp.path() / "killed/train_log.csv";
  auto steps_logged = [&] {
    std::ifstream in(log);
    std::string line;
    int n = -1;  // the header
    while (std::getline(in, line)) ++n;
    return std::max(n, 0);
  };
  auto checkpoints = [&] {
    int n = 0;
    if (fs::is_directory(f.tmp.path() / "killed/checkpoints"))
      for (const auto& e : fs::directory_iterator(f.tmp.path() / "killed/checkpoints")) n += e.path().filename().string()[0] != '.';
    return n;
  };
  std::mt19937_64 rng(7);
  int mid_run_kills = 0;
  for (int attempt = 0; attempt < 4; ++attempt) {
    // The resumed run restarts at its newest checkpoint and rewrites the log from there (a new
    // file): wait for the new file, then for the target step past the checkpoint.
    const std::string newest = newest_checkpoint((f.tmp.path() / "killed").string());
    const int resume_step = newest.empty() ? 0 : std::stoi(fs::path(newest).filename().string().substr(5));
    const int target = resume_step + (attempt == 0 ? 5 : 1 + static_cast<int>(rng() % 5));
    struct stat before{};
    const ino_t old_inode = ::stat(log.c_str(), &before) == 0 ? before.st_ino : 0;
    auto log_rewritten = [&] {
      struct stat now{};
      return ::stat(log.c_str(), &now) == 0 && now.st_ino != old_inode;
    };
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", (std::string("exec ") + ANOMALYSD_CLI + " " + args + " > /dev/null 2>&1").c_str(), nullptr);
      _exit(127);
    }
    int status = 0;
    bool exited = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!(log_rewritten() && steps_logged() >= target) && std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 30));  // inside the step or its checkpoint save
    if (!exited) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    const bool killed = !exited && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    if (killed && steps_logged() >= 1 && !fs::exists(f.tmp.path() / "killed/model")) ++mid_run_kills;
    // Every checkpoint that exists loads completely.
    const fs::path dir = f.tmp.path() / "killed/checkpoints";
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().filename().string()[0] == '.') continue;  // an interrupted save: never read
      EXPECT_NO_THROW(load_sd_pipeline(e.path().string())) << e.path();
      EXPECT_NO_THROW(read_json_file((e.path() / "training_state.json").string())) << e.path();
    }
  }
  // The kills landed mid-run (steps logged, no final model), and some after a checkpoint.
  EXPECT_GE(mid_run_kills, 3);
  EXPECT_GE(checkpoints(), 1);
  EXPECT_FALSE(fs::exists(f.tmp.path() / "killed/model"));
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

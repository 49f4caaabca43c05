// Fine-tuning's parts (paper §4.1, train/): training masks and the IoU filter, foreground masks,
// augmentations, the losses against diffusers, Adam against LibTorch's, gradient checkpointing, the
// trainer's sample stream and its data-parallel step, and pipeline folders. The command itself:
// tests/app/test_finetune.cpp.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
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
#include "anomalysd/train/trainer.h"
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
  EXPECT_DOUBLE_EQ(TrainSettings().decoder_lpips_weight, 0.1);
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

// --- train/trainer.h: the loop on its own, without the command --------------------------------

std::vector<TrainingShot> random_training_shots(int64_t count, int64_t side) {
  torch::manual_seed(11);
  std::vector<TrainingShot> shots;
  for (int64_t i = 0; i < count; ++i) {
    TrainingShot s;
    s.cls = i % 2 ? "alpha" : "beta";
    s.path = "shot" + std::to_string(i) + ".png";
    s.image = torch::rand({1, 3, side, side});
    s.foreground = torch::ones({1, 1, side, side});
    s.prompts = {"A perfect " + s.cls + ".", "A " + s.cls + " without defects."};
    shots.push_back(std::move(s));
  }
  return shots;
}

TrainSettings small_batches() {
  TrainSettings t;
  t.batch_size = 2;
  t.grad_accumulation = 2;  // a global batch of 4: 2 + 2 over two ranks
  return t;
}

TEST(Trainer, SampleStreamIsAPureFunctionOfTheIndex) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  SdPipeline pipe = load_sd_pipeline((fixtures / "pipeline_sd2_inpaint_tiny").string());
  GradientReducer one_process;
  Trainer trainer(pipe, nullptr, random_training_shots(3, 32), small_batches(), 32, 7, torch::kCPU, one_process);
  // Samples 2..4 drawn alone are those of a batch 0..4 (a resumed run or another rank's share
  // sees the very samples of an uninterrupted single process), across an epoch boundary (3 shots).
  const TrainingBatch all = trainer.make_batch(kUnet, 0, 5), part = trainer.make_batch(kUnet, 2, 3);
  EXPECT_TRUE(torch::equal(all.images.narrow(0, 2, 3), part.images));
  EXPECT_TRUE(torch::equal(all.masks.narrow(0, 2, 3), part.masks));
  EXPECT_TRUE(torch::equal(all.noise.narrow(0, 2, 3), part.noise));
  EXPECT_TRUE(torch::equal(all.timesteps.narrow(0, 2, 3), part.timesteps));
  EXPECT_EQ(std::vector<std::string>(all.prompts.begin() + 2, all.prompts.end()), part.prompts);
  // Another seed is another stream; the decoder's stream has images only.
  Trainer other(pipe, nullptr, random_training_shots(3, 32), small_batches(), 32, 8, torch::kCPU, one_process);
  EXPECT_FALSE(torch::equal(other.make_batch(kUnet, 0, 5).noise, all.noise));
  EXPECT_FALSE(trainer.make_batch(kDecoder, 0, 2).masks.defined());
}

// Two ranks in two threads whose gradients meet in memory: the all-reduce of ProcessGroup, without
// the processes.
class ThreadRanks {
 public:
  class Rank : public GradientReducer {
   public:
    Rank(ThreadRanks& all, int rank) : all_(all), rank_(rank) {}
    int rank() const override { return rank_; }
    int world_size() const override { return 2; }
    void all_reduce_sum(std::vector<torch::Tensor>& tensors, const std::string&) override { all_.sum(rank_, tensors); }

   private:
    ThreadRanks& all_;
    int rank_;
  };

  void sum(int rank, std::vector<torch::Tensor>& tensors) {
    std::unique_lock<std::mutex> lock(mutex_);
    const int64_t round = round_;
    posted_[rank] = &tensors;
    if (posted_[1 - rank] == nullptr) {
      changed_.wait(lock, [&] { return round_ != round; });
      return;
    }
    std::vector<torch::Tensor>& mine = *posted_[rank];
    std::vector<torch::Tensor>& theirs = *posted_[1 - rank];
    for (std::size_t i = 0; i < mine.size(); ++i) {
      const torch::Tensor total = mine[i] + theirs[i];
      mine[i].copy_(total);
      theirs[i].copy_(total);
    }
    posted_[0] = posted_[1] = nullptr;
    ++round_;
    changed_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<torch::Tensor>* posted_[2] = {nullptr, nullptr};
  int64_t round_ = 0;
};

TEST(Trainer, TwoRanksThroughTheReducerTakeTheOneProcessSteps) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  const std::string folder = (fixtures / "pipeline_sd2_inpaint_tiny").string();
  SdPipeline single = load_sd_pipeline(folder), rank0 = load_sd_pipeline(folder), rank1 = load_sd_pipeline(folder);
  GradientReducer one_process;
  Trainer alone(single, nullptr, random_training_shots(3, 32), small_batches(), 32, 7, torch::kCPU, one_process);
  alone.enter_part(kUnet, 0);
  std::vector<double> losses;
  for (int64_t step = 0; step < 2; ++step) losses.push_back(alone.step(step, step).loss);

  ThreadRanks ranks;
  ThreadRanks::Rank reducer0(ranks, 0), reducer1(ranks, 1);
  Trainer t0(rank0, nullptr, random_training_shots(3, 32), small_batches(), 32, 7, torch::kCPU, reducer0);
  Trainer t1(rank1, nullptr, random_training_shots(3, 32), small_batches(), 32, 7, torch::kCPU, reducer1);
  std::vector<double> losses0, losses1;
  auto run = [](Trainer& t, std::vector<double>& out) {
    t.enter_part(kUnet, 0);
    for (int64_t step = 0; step < 2; ++step) out.push_back(t.step(step, step).loss);
  };
  std::thread second([&] { run(t1, losses1); });
  run(t0, losses0);
  second.join();
  // Each rank ran half the global batch; the summed gradients and losses are the single process's
  // up to the order of summation, and both ranks hold the same weights.
  ASSERT_EQ(losses0.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_NEAR(losses0[i], losses[i], 1e-6 * std::abs(losses[i])) << "step " << i;
    EXPECT_EQ(losses0[i], losses1[i]) << "step " << i;
  }
  const SdPipeline untouched = load_sd_pipeline(folder);
  const auto a = single.unet->parameters(), b = rank0.unet->parameters(), c = rank1.unet->parameters(), base = untouched.unet->parameters();
  double worst = 0, moved = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
    moved = std::max(moved, (a[i] - base[i]).abs().max().item<double>());
    EXPECT_TRUE(torch::equal(b[i], c[i])) << "parameter " << i;
  }
  std::printf("two ranks vs one process: max |Δw| %.3g; the steps moved the weights by %.3g\n", worst, moved);
  EXPECT_GT(moved, 1e-4);  // two Adam steps of lr 1e-4: the comparison is not of untouched copies
  EXPECT_LT(worst, 0.05 * moved);
}

// train.mixed_precision: bf16 on the CPU: autocast runs the UNet's and the text encoder's matmuls
// and convolutions in bfloat16 while the weights, Adam and the loss stay float32. LibTorch 1.13's
// CPU LayerNorm refuses bfloat16 input with float32 weights (our LayerNorm computes it in float32).
TEST(Trainer, Bfloat16AutocastOnTheCpuTakesFloat32Steps) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  const std::string folder = (fixtures / "pipeline_sd2_inpaint_tiny").string();
  SdPipeline plain = load_sd_pipeline(folder), mixed = load_sd_pipeline(folder);
  GradientReducer one_process;
  TrainSettings half = small_batches();
  half.mixed_precision = "bf16";
  Trainer a(plain, nullptr, random_training_shots(3, 32), small_batches(), 32, 7, torch::kCPU, one_process);
  Trainer b(mixed, nullptr, random_training_shots(3, 32), half, 32, 7, torch::kCPU, one_process);
  a.enter_part(kUnet, 0);
  b.enter_part(kUnet, 0);
  for (int64_t step = 0; step < 2; ++step) {
    const double la = a.step(step, step).loss, lb = b.step(step, step).loss;
    std::printf("step %ld: float32 loss %.6f, bf16 autocast %.6f\n", static_cast<long>(step), la, lb);
    EXPECT_NE(la, lb) << "bf16 autocast ran in float32";
    EXPECT_NEAR(lb, la, 0.02 * la) << "step " << step;
  }
  for (const auto& p : mixed.unet->parameters()) {
    ASSERT_EQ(p.scalar_type(), torch::kFloat);
    ASSERT_TRUE(torch::isfinite(p).all().item<bool>());
  }
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

}  // namespace
}  // namespace anomalysd

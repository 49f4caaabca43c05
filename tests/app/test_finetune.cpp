// `anomalysd finetune`, the command around train/'s loop: the loss decreases, a resumed run equals
// an uninterrupted one bit for bit, a longer length continues a finished run, a killed run never
// leaves a checkpoint that loads half, and a NaN loss stops with the last good checkpoint named.
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

// `anomalysd bootstrap` on a user's own folder: it writes a pipeline that eval loads with the
// config it writes, a run stopped in the VAE stage and again in the UNet stage resumes to the
// weights of an uninterrupted run, and an empty or all-corrupt folder is an error (exit 2).
#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "anomalysd/app/bootstrap.h"
#include "anomalysd/app/eval.h"
#include "anomalysd/data/photo_benchmark.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/json_file.h"
#include "anomalysd/io/tensor_io.h"
#include "test_support.h"

namespace anomalysd {
namespace {

namespace fs = std::filesystem;

// Two classes of the held-out photo benchmark at 64 px, and a plan of a few steps.
struct TinyBootstrap {
  test::TempDir tmp;
  std::string data = (tmp.path() / "data").string();
  TinyBootstrap() {
    PhotoBenchmarkOptions p;
    p.output = data;
    p.size = 64;
    p.train = 3;
    p.test_good = 2;
    p.test_bad = 2;
    p.classes = {"burlap", "paper"};
    make_photo_benchmark(p);
  }
  BootstrapOptions options(const std::string& name) const {
    BootstrapOptions o;
    o.root = data;
    o.output = (tmp.path() / name).string();
    o.overrides = {"threads=1"};
    o.plan = {"size=64", "vae_channels=8,16", "unet_channels=16,32", "vae_steps=5", "vae_batch=2", "unet_steps=4", "unet_batch=2",
              "bootstrap_images=4", "photo_images=3"};
    return o;
  }
};

void expect_same_tensors(const std::string& a, const std::string& b) {
  const auto ta = load_all(a), tb = load_all(b);
  ASSERT_EQ(ta.size(), tb.size()) << a;
  for (const auto& [name, t] : ta) {
    ASSERT_TRUE(tb.count(name)) << name;
    EXPECT_TRUE(torch::equal(t, tb.at(name))) << a << ": " << name << " differs by " << (t - tb.at(name)).abs().max().item<double>();
  }
}

TEST(Bootstrap, StoppedTwiceAndRerunItEqualsAnUninterruptedRunAndEvalLoadsIt) {
  TinyBootstrap f;
  const BootstrapSummary whole = run_bootstrap(f.options("whole"));
  ASSERT_TRUE(whole.finished);
  EXPECT_EQ(whole.images, 2 * 4 + 3);  // two classes repeated to 4 images each, 3 photo crops
  EXPECT_EQ(whole.photo_images, 3);
  EXPECT_FALSE(fs::exists(fs::path(f.tmp.path()) / "whole/work")) << "the work folder is removed when done";
  const nlohmann::json record = read_json_file((f.tmp.path() / "whole/bootstrap.json").string());
  EXPECT_EQ(record.at("classes"), nlohmann::json({"burlap", "paper", "photo"}));
  EXPECT_NE(record.at("note").get<std::string>().find("not the paper's setting"), std::string::npos);

  // Stopped in the VAE stage (3 of 5 steps), then in the UNet stage (2 VAE + 1 UNet step), then run to the end.
  BootstrapOptions parts = f.options("parts");
  parts.stop_after = 3;
  const BootstrapSummary first = run_bootstrap(parts);
  EXPECT_FALSE(first.finished);
  EXPECT_TRUE(fs::is_regular_file(fs::path(parts.output) / "work/vae-state/latest.json"));
  parts.stop_after = 3;
  const BootstrapSummary second = run_bootstrap(parts);
  EXPECT_FALSE(second.finished);
  EXPECT_EQ(second.start_step, 3);
  EXPECT_TRUE(fs::is_regular_file(fs::path(parts.output) / "work/vae.done.json"));
  parts.stop_after = 0;
  const BootstrapSummary third = run_bootstrap(parts);
  ASSERT_TRUE(third.finished);
  EXPECT_EQ(third.start_step, 5);
  for (const char* file : {"model/vae/diffusion_pytorch_model.safetensors", "model/unet/diffusion_pytorch_model.safetensors",
                           "model/text_encoder/model.safetensors", "features/alexnet.safetensors"})
    expect_same_tensors((fs::path(whole.model).parent_path() / file).string(), (fs::path(third.model).parent_path() / file).string());
  EXPECT_EQ(test::read_bytes((fs::path(whole.model) / "vae/config.json").string()), test::read_bytes((fs::path(third.model) / "vae/config.json").string()))
      << "the VAE's scaling factor";

  // Run again: already done; with other settings: refused unless --overwrite.
  EXPECT_TRUE(run_bootstrap(parts).already_done);
  BootstrapOptions other = f.options("parts");
  other.plan.push_back("unet_steps=5");
  EXPECT_THROW(run_bootstrap(other), InputError);

  // eval loads what it wrote, with the config it wrote (features, resolution), 0-shot.
  EvalOptions e;
  e.config = whole.config_file;
  e.overrides = {"threads=1", "inference.steps=5"};
  e.dataset = "folder";
  e.root = f.data;
  e.model = whole.model;
  e.shots = 0;
  e.output = (f.tmp.path() / "eval").string();
  const ClassResult m = run_eval(e).results.mean();
  EXPECT_TRUE(std::isfinite(m.image_auroc) && std::isfinite(m.pixel_auroc));
}

TEST(BootstrapBudget, StepsScaleDownToFitNeverUpAndATooSmallBudgetSaysWhatItNeeds) {
  BootstrapPlan plan;  // 800 VAE and 700 UNet steps
  const double tv = 0.1, tu = 0.12;  // 80 s + 84 s of steps
  BudgetSteps roomy = steps_for_budget(plan, 600, 10, tv, tu);
  EXPECT_EQ(roomy.vae_steps, 800) << "a budget never trains longer than the plan";
  EXPECT_EQ(roomy.unet_steps, 700);
  EXPECT_DOUBLE_EQ(roomy.scale, 1.0);
  const BudgetSteps tight = steps_for_budget(plan, 100, 10, tv, tu);  // 90 s of 164: 0.549 of each stage
  EXPECT_NEAR(tight.scale, 90.0 / 164.0, 1e-12);
  EXPECT_EQ(tight.vae_steps, 439);
  EXPECT_EQ(tight.unet_steps, 384);
  EXPECT_LE(tight.vae_steps * tv + tight.unet_steps * tu, 90.0);
  try {
    steps_for_budget(plan, 20, 10, tv, tu);  // 10 s: 48 and 42 steps, under 100
    FAIL() << "a budget below the smallest useful run was accepted";
  } catch (const InputError& e) {
    // the smallest run: 100 / 700 of the plan's 164 s plus the 10 s, with 5 % to spare: 0.6 minutes
    EXPECT_NE(std::string(e.what()).find("needs about 0.6 minutes"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("48 VAE and 42 UNet steps"), std::string::npos) << e.what();
  }
}

TEST(BootstrapBudget, ARerunTrainsTheStepsTheFirstRunChoseAndADifferentBudgetIsAnotherRun) {
  TinyBootstrap f;
  // A budget that fits the tiny plan: the probe measures both stages and keeps the plan's steps.
  BootstrapOptions roomy = f.options("roomy");
  roomy.minutes = 10;
  const BootstrapSummary whole = run_bootstrap(roomy);
  ASSERT_TRUE(whole.finished);
  EXPECT_EQ(whole.vae_steps, 5);
  EXPECT_EQ(whole.unet_steps, 4);
  const nlohmann::json budget = read_json_file((fs::path(roomy.output) / "bootstrap.json").string()).at("budget");
  EXPECT_EQ(budget.at("minutes").get<double>(), 10.0);
  EXPECT_GT(budget.at("vae_step_seconds").get<double>(), 0.0);
  EXPECT_GT(budget.at("unet_step_seconds").get<double>(), 0.0);
  EXPECT_EQ(budget.at("vae_steps").get<int>(), 5);

  // A run whose first part chose 3 and 2 steps (its record, as a slower machine would have left it):
  // the rerun trains those, not what a new measurement here would choose.
  BootstrapOptions resumed = f.options("resumed");
  resumed.minutes = 1;
  fs::create_directories(fs::path(resumed.output) / "work");
  test::write_bytes((fs::path(resumed.output) / "work/budget.json").string(),
                    nlohmann::json({{"budget", {{"minutes", 1.0}, {"plan_vae_steps", 5}, {"plan_unet_steps", 4}, {"vae_step_seconds", 0.5},
                                                {"unet_step_seconds", 0.5}, {"vae_steps", 3}, {"unet_steps", 2}, {"scale", 0.6}}}})
                        .dump());
  const BootstrapSummary chosen = run_bootstrap(resumed);
  ASSERT_TRUE(chosen.finished);
  EXPECT_EQ(chosen.vae_steps, 3);
  EXPECT_EQ(chosen.unet_steps, 2);
  EXPECT_DOUBLE_EQ(chosen.budget_scale, 0.6);
  EXPECT_EQ(read_json_file((fs::path(resumed.output) / "bootstrap.json").string()).at("plan").at("vae_steps"), 3);
  EXPECT_TRUE(run_bootstrap(resumed).already_done) << "the finished run's budget record is read back, not measured again";
  resumed.minutes = 2;  // another budget: measured again (5 and 4 steps here), another run
  EXPECT_THROW(run_bootstrap(resumed), InputError);

  // A budget too small for the smallest run: a clear error before any training.
  BootstrapOptions tiny = f.options("tiny");
  tiny.minutes = 1e-4;
  try {
    run_bootstrap(tiny);
    FAIL() << "a 6-millisecond budget was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--minutes"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(fs::path(tiny.output) / "features")) << "no stage ran before the budget was known to fit";
}

int cli(const std::string& args) {
  const int status = std::system((std::string(ANOMALYSD_CLI) + " " + args + " > /dev/null 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(Bootstrap, AnEmptyOrAllCorruptFolderIsAClearErrorWithExitCode2) {
  test::TempDir tmp;
  fs::create_directories(tmp.path() / "empty");
  EXPECT_EQ(cli("bootstrap --root " + (tmp.path() / "empty").string() + " --output " + tmp.file("out1")), 2);
  // one class whose every training image is corrupt
  fs::create_directories(tmp.path() / "corrupt/part/train/good");
  fs::create_directories(tmp.path() / "corrupt/part/test/good");
  for (const char* name : {"a.png", "b.png"}) test::write_bytes((tmp.path() / "corrupt/part/train/good" / name).string(), "not a png");
  test::write_bytes((tmp.path() / "corrupt/part/test/good/c.png").string(), "not a png");
  EXPECT_EQ(cli("bootstrap --root " + (tmp.path() / "corrupt").string() + " --output " + tmp.file("out2")), 2);
  BootstrapOptions o;
  o.root = (tmp.path() / "corrupt").string();
  o.output = tmp.file("out3");
  try {
    run_bootstrap(o);
    FAIL() << "an all-corrupt class was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("class 'part' has no readable normal training image"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cli("bootstrap --root " + tmp.file("nowhere") + " --output " + tmp.file("out4")), 2);
  EXPECT_EQ(cli("bootstrap --root " + (tmp.path() / "corrupt").string() + " --output " + tmp.file("out5") + " --plan vae_step=3"), 2);
  EXPECT_EQ(cli("bootstrap --root " + (tmp.path() / "corrupt").string() + " --output " + tmp.file("out6") + " --plan size=48"), 2);
  EXPECT_EQ(cli("bootstrap --root " + (tmp.path() / "corrupt").string() + " --output " + tmp.file("out7") + " --minutes -1"), 2)
      << "a negative budget";
}

}  // namespace
}  // namespace anomalysd

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
}

}  // namespace
}  // namespace anomalysd

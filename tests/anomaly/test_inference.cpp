// AnomalySD at inference (paper §4.2–4.3): the inpainting run against diffusers (fixtures), the
// masks, the score functions on hand-made maps, the detector with an oracle inpainter, and
// determinism (seeds, mask batching).
#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "anomalysd/anomaly/detector.h"
#include "anomalysd/anomaly/inpaint.h"
#include "anomalysd/anomaly/masks.h"
#include "anomalysd/anomaly/prototype.h"
#include "anomalysd/anomaly/scores.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/metrics/metrics.h"
#include "anomalysd/models/alexnet_lpips.h"
#include "anomalysd/models/efficientnet.h"
#include "anomalysd/tools/components.h"
#include "models/parity.h"
#include "test_support.h"

namespace anomalysd {
namespace {

namespace fs = std::filesystem;
using test::close_to_reference;

// --- 1. the inpainting run against diffusers' StableDiffusionInpaintPipeline -----------------

void check_inpaint_case(const fs::path& fixtures, const std::string& name) {
  torch::NoGradGuard no_grad;
  SdPipeline pipe = load_sd_pipeline((fixtures / "pipeline_sd2_inpaint_tiny").string());
  std::ifstream in(fixtures / "inpaint_cases" / name / "case.json");
  const nlohmann::json c = nlohmann::json::parse(in);
  const auto io = load_all((fixtures / "inpaint_cases" / name / "case.safetensors").string());
  const DenoisingSchedule s = denoising_schedule(pipe, c["steps"].get<int64_t>(), c["strength"].get<double>(), c["guidance"].get<double>());
  PromptConditioning cond;
  cond.cond = encode_prompts(pipe, {c["prompt"].get<std::string>()});
  if (s.guidance_scale > 1) cond.uncond = encode_prompts(pipe, {c["negative"].get<std::string>()});
  // The timesteps diffusers ran.
  EXPECT_EQ(s.timesteps, c["timesteps_run"].get<std::vector<int64_t>>());
  const torch::Tensor& image = io.at("image");
  for (int64_t b = 0; b < image.size(0); ++b) {
    const torch::Tensor x = image.narrow(0, b, 1);
    const InpaintResult r = inpaint(pipe, x, encode_latents(pipe, x), io.at("mask").narrow(0, b, 1), io.at("noise").narrow(0, b, 1), cond, s);
    const int64_t steps_run = static_cast<int64_t>(c["timesteps_run"].size());
    EXPECT_EQ(r.unet_calls, steps_run * (s.guidance_scale > 1 ? 2 : 1));
    EXPECT_TRUE(close_to_reference(r.latents, io.at("latents").narrow(0, b, 1), name + " latents"));
    EXPECT_TRUE(close_to_reference(r.images, io.at("inpainted").narrow(0, b, 1), name + " inpainted"));
  }
}

TEST(InpaintParity, Strength04NoGuidance) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  check_inpaint_case(fixtures, "case_strength04_g1");
}

TEST(InpaintParity, Strength1ClassifierFreeGuidance) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  check_inpaint_case(fixtures, "case_strength1_g75");
}

TEST(InpaintParity, ForwardToolMatchesReference) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  ForwardRequest r;
  r.component = "inpaint";
  r.model_dir = (fixtures / "pipeline_sd2_inpaint_tiny").string();
  r.texts = {"A perfect bottle."};
  r.strength = 0.4;
  r.steps = 50;
  const auto io = load_all((fixtures / "inpaint_cases/case_strength04_g1/case.safetensors").string());
  const auto out = run_forward(r, io);
  EXPECT_TRUE(close_to_reference(out.at("latents"), io.at("latents"), "latents"));
  EXPECT_TRUE(close_to_reference(out.at("inpainted"), io.at("inpainted"), "inpainted"));
}

// A pipeline folder with the SD1-style UNet (3 levels, conv projections) in place of the SD2 one.
fs::path sd1_pipeline(const fs::path& fixtures, const fs::path& dir) {
  fs::copy(fixtures / "pipeline_sd2_inpaint_tiny", dir, fs::copy_options::recursive);
  for (const char* f : {"config.json", "diffusion_pytorch_model.safetensors"}) {
    fs::permissions(dir / "unet" / f, fs::perms::owner_write, fs::perm_options::add);
    fs::copy_file(fixtures / "unet_sd1_inpaint_tiny" / f, dir / "unet" / f, fs::copy_options::overwrite_existing);
  }
  return dir;
}

TEST(Inpaint, SD1PipelineAndNonSquareSizes) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  test::TempDir tmp;
  torch::NoGradGuard no_grad;
  SdPipeline pipe = load_sd_pipeline(sd1_pipeline(fixtures, tmp.path() / "sd1").string());
  EXPECT_EQ(vae_scale_factor(pipe), 2);
  EXPECT_EQ(inpaint_size_multiple(pipe), 8);  // VAE 2 × 2^(3 − 1)
  torch::manual_seed(3);
  const torch::Tensor image = torch::rand({1, 3, 24, 40});
  torch::Tensor masks = torch::zeros({2, 1, 24, 40});
  masks[0].narrow(1, 8, 8).narrow(2, 8, 16).fill_(1);
  masks[1].fill_(1);
  PromptConditioning cond{encode_prompts(pipe, {"A perfect screw."}), {}};
  const DenoisingSchedule s = denoising_schedule(pipe, 10, 0.4);
  const InpaintResult r = inpaint(pipe, image, encode_latents(pipe, image), masks, start_noise(1, 4, 12, 20), cond, s);
  EXPECT_EQ(r.images.sizes(), (std::vector<int64_t>{2, 3, 24, 40}));
  EXPECT_TRUE(torch::isfinite(r.images).all().item<bool>());
  EXPECT_EQ(r.unet_calls, 4);  // ⌊10 · 0.4⌋ steps
  // 36 is not a multiple of 8: a clear error, before any work.
  try {
    inpaint(pipe, torch::rand({1, 3, 36, 40}), torch::Tensor(), torch::ones({1, 1, 36, 40}), torch::Tensor(), cond, s);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("multiples of 8"), std::string::npos) << e.what();
  }
}

TEST(Inpaint, StrengthThatRunsNoStepIsAnError) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  torch::NoGradGuard no_grad;
  SdPipeline pipe = load_sd_pipeline((fixtures / "pipeline_sd2_inpaint_tiny").string());
  // ⌊4 · 0.2⌋ = 0 steps: an error when the schedule is made, before any image.
  EXPECT_THROW(denoising_schedule(pipe, 4, 0.2), InputError);
  SdInpainter inpainter(pipe, 4, 1.0);
  EXPECT_THROW(inpainter.set_class({encode_prompts(pipe, {"x"}), {}}, 0.2), InputError);
}

TEST(Inpaint, AveragePromptEmbeddingIsTheMeanOfEachPrompts) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  SdPipeline pipe = load_sd_pipeline((fixtures / "pipeline_sd2_inpaint_tiny").string());
  const std::vector<std::string> prompts = {"A perfect bottle.", "A bottle with a smooth rim."};
  const torch::Tensor each = encode_prompts(pipe, prompts);
  const torch::Tensor avg = average_prompt_embedding(pipe, prompts);
  EXPECT_EQ(avg.sizes(), (std::vector<int64_t>{1, 77, 32}));
  EXPECT_TRUE(torch::allclose(avg[0], (each[0] + each[1]) / 2, 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(each[0], each[1]));
}

TEST(Inpaint, StartNoiseIsAFunctionOfTheSeedOnly) {
  EXPECT_TRUE(torch::equal(start_noise(42, 4, 8, 8), start_noise(42, 4, 8, 8)));
  EXPECT_FALSE(torch::equal(start_noise(42, 4, 8, 8), start_noise(43, 4, 8, 8)));
  EXPECT_NE(noise_seed(0, 1), noise_seed(0, 2));
  EXPECT_NE(noise_seed(0, 1), noise_seed(1, 1));
  EXPECT_EQ(noise_seed(5, 7), noise_seed(5, 7));
}

// --- 2. masks ------------------------------------------------------------------------------

TEST(Masks, EveryPixelMaskedExactlyOncePerScaleAndAlignedToTheLatentGrid) {
  const MaskSet set = multiscale_masks(64, 64, {1, 2, 4, 8}, 8);
  ASSERT_EQ(set.masks.size(0), 85);
  EXPECT_EQ(masks_per_image({1, 2, 4, 8}, MaskPacking::kNone, true), 86);
  for (int64_t s = 0; s < 4; ++s) {
    torch::Tensor cover = torch::zeros({64, 64});
    for (int64_t i = 0; i < 85; ++i)
      if (set.scale_index[i] == s) cover += set.masks[i][0];
    EXPECT_TRUE(torch::equal(cover, torch::ones({64, 64}))) << "scale " << s;
  }
  // k = 8 on 64 px with 8-px latent cells: one latent cell per grid cell.
  const torch::Tensor k8 = grid_masks(64, 64, 8, 8);
  EXPECT_EQ(k8[9][0].sum().item<double>(), 64.0);
  EXPECT_EQ(k8[9][0][8][8].item<float>(), 1.0f);
  EXPECT_EQ(k8[9][0][7][8].item<float>(), 0.0f);
  // Uneven: 40 px = 5 latent cells of 8 into 2 cells: edges on the latent grid.
  EXPECT_EQ(grid_edges(40, 2, 8), (std::vector<int64_t>{0, 16, 40}));
  EXPECT_THROW(grid_masks(32, 32, 8, 8), InputError);  // 4 latent cells cannot hold 8 cells
}

TEST(Masks, Grid2x2PackingKeepsNeighboursVisibleAndCoverage) {
  const MaskSet set = multiscale_masks(64, 64, {1, 2, 4, 8}, 8, MaskPacking::kGrid2x2);
  EXPECT_EQ(set.masks.size(0), 13);
  EXPECT_EQ(masks_per_image({1, 2, 4, 8}, MaskPacking::kGrid2x2, false), 13);
  for (int64_t s = 0; s < 4; ++s) {
    torch::Tensor cover = torch::zeros({64, 64});
    for (int64_t i = 0; i < 13; ++i)
      if (set.scale_index[i] == s) cover += set.masks[i][0];
    EXPECT_TRUE(torch::equal(cover, torch::ones({64, 64})));
  }
  // k = 4 (16-px cells), run (0, 0): cells (0,0), (0,2), (2,0), (2,2); their neighbours unmasked.
  const torch::Tensor m = packed_grid_masks(64, 64, 4, 8)[0][0];
  EXPECT_EQ(m[0][0].item<float>(), 1.0f);
  EXPECT_EQ(m[0][40].item<float>(), 1.0f);
  EXPECT_EQ(m[40][40].item<float>(), 1.0f);
  EXPECT_EQ(m[0][20].item<float>(), 0.0f);
  EXPECT_EQ(m[20][20].item<float>(), 0.0f);
  EXPECT_EQ(m.sum().item<double>(), 4 * 256.0);
}

// --- 3. scores on hand-made maps -----------------------------------------------------------

TEST(Scores, MaskedSumHarmonicMeanFusionBlurMax) {
  // eq. (18): two masks covering halves, distances 2 and 3.
  torch::Tensor masks = torch::zeros({2, 1, 2, 2});
  masks[0][0][0].fill_(1);
  masks[1][0][1].fill_(1);
  const torch::Tensor d = torch::stack({torch::full({1, 2, 2}, 2.0f), torch::full({1, 2, 2}, 3.0f)});
  EXPECT_TRUE(torch::equal(masked_score_map(masks, d), torch::tensor({{2.0f, 2.0f}, {3.0f, 3.0f}})));
  // eq. (19): harmonic mean of 1 and 3 = 2 / (1 + 1/3) = 1.5; a zero anywhere gives ~0, never NaN.
  const torch::Tensor h = harmonic_mean({torch::tensor({1.0f, 2.0f}), torch::tensor({3.0f, 0.0f})});
  EXPECT_NEAR(h[0].item<float>(), 1.5f, 1e-6);
  EXPECT_TRUE(std::isfinite(h[1].item<float>()));
  EXPECT_LT(h[1].item<float>(), 1e-9);
  // eq. (21)
  EXPECT_NEAR(fuse_scores(torch::tensor({10.0f}), torch::tensor({20.0f}), 0.1)[0].item<float>(), 11.0f, 1e-5);
  // Blur: preserves a constant map and the total of a centred impulse; spreads it with σ.
  EXPECT_TRUE(torch::allclose(gaussian_blur(torch::full({20, 20}, 3.0f), 4.0), torch::full({20, 20}, 3.0f), 1e-5, 1e-5));
  torch::Tensor impulse = torch::zeros({41, 41});
  impulse[20][20] = 1.0f;
  const torch::Tensor b = gaussian_blur(impulse, 2.0);
  EXPECT_NEAR(b.sum().item<double>(), 1.0, 1e-5);
  EXPECT_NEAR(b[20][20].item<double>(), 1.0 / (2 * M_PI * 4.0), 2e-3);  // the 2-D Gaussian's peak
  EXPECT_NEAR(b[20][22].item<double>() / b[20][20].item<double>(), std::exp(-4.0 / 8.0), 1e-4);
  EXPECT_TRUE(torch::equal(gaussian_blur(impulse, 0.0), impulse));
  EXPECT_EQ(image_score(torch::tensor({{0.5f, 2.5f}, {1.0f, -1.0f}})), 2.5);
}

// --- 4. the detector with an oracle inpainter ----------------------------------------------

// Returns the defect-free image wherever it is asked to inpaint: the ideal inpainter.
class OracleInpainter : public Inpainter {
 public:
  explicit OracleInpainter(torch::Tensor clean) : clean_(std::move(clean)) {}
  void begin_image(const torch::Tensor& image, uint64_t) override { image_ = image; }
  torch::Tensor inpaint(const torch::Tensor& masks) override {
    const torch::Tensor m = (masks >= 0.5).to(torch::kFloat);
    return m * clean_ + (1 - m) * image_;  // [M, 3, H, W]
  }
  int64_t alignment() const override { return 4; }
  torch::Tensor clean_, image_;
};

torch::Tensor pixel_distance(const torch::Tensor& x, const torch::Tensor& x_hat) {
  return (x - x_hat).pow(2).sum(1, true);
}

// A smooth textured "normal" image and the same with a planted square defect.
torch::Tensor textured(int64_t seed) {
  torch::manual_seed(seed);
  const torch::Tensor low = torch::rand({1, 3, 8, 8});
  return torch::nn::functional::interpolate(low, torch::nn::functional::InterpolateFuncOptions()
                                                      .size(std::vector<int64_t>{64, 64})
                                                      .mode(torch::kBilinear)
                                                      .align_corners(false));
}

TEST(Detector, OracleMapPeaksInsideThePlantedDefectAndSeparatesImages) {
  std::vector<float> scores;
  std::vector<uint8_t> labels;
  for (int64_t i = 0; i < 8; ++i) {
    const torch::Tensor clean = textured(100 + i);
    torch::Tensor x = clean.clone();
    const bool defective = i % 2 == 1;
    const int64_t r = 8 + 5 * i, c = 40 - 3 * i;  // the defect moves around
    if (defective) x.narrow(2, r, 8).narrow(3, c, 8).fill_(i % 4 == 1 ? 1.0f : 0.0f);
    OracleInpainter oracle(clean);
    InferenceSettings s;
    s.scales = {1, 2, 4, 8};
    s.prototype_mask = false;
    AnomalyDetector detector(oracle, pixel_distance, s);
    const Detection d = detector.detect(x, 0);
    EXPECT_EQ(d.masks, 85);
    if (defective) {
      const int64_t argmax = d.map.argmax().item<int64_t>();
      const int64_t pr = argmax / 64, pc = argmax % 64;
      EXPECT_TRUE(pr >= r && pr < r + 8 && pc >= c && pc < c + 8) << "peak at " << pr << "," << pc;
    } else {
      EXPECT_LT(d.score, 1e-9);  // nothing to restore: D = 0 (the harmonic mean's guard gives 1e-12)
    }
    scores.push_back(static_cast<float>(d.score));
    labels.push_back(defective);
  }
  EXPECT_EQ(auroc(torch::tensor(scores), torch::tensor(std::vector<int64_t>(labels.begin(), labels.end()))), 1.0);
}

// An imperfect inpainter with a known error per mask, so that each term of eq. (18)–(21) has a
// value that can be worked out by hand: channel 0 of x̂ is x + δ inside the mask and x + 0.5
// outside it, so D = δ² inside and 0.25 outside (pixel_distance). δ: 2 for the k = 1 mask,
// 1 + 0.5·j for cell j (row-major) of the k = 2 grid, 3 for any other mask (the prototype mask).
class KnownErrorInpainter : public Inpainter {
 public:
  void begin_image(const torch::Tensor& image, uint64_t) override { image_ = image; }
  torch::Tensor inpaint(const torch::Tensor& masks) override {
    batches.push_back(masks.size(0));
    const int64_t h = image_.size(2), w = image_.size(3);
    std::vector<torch::Tensor> out;
    for (int64_t i = 0; i < masks.size(0); ++i) {
      const torch::Tensor m = (masks[i][0] >= 0.5).to(torch::kFloat);
      const double area = m.sum().item<double>();
      double delta = 3.0;
      if (area == static_cast<double>(h * w)) {
        delta = 2.0;
      } else if (area == static_cast<double>(h * w / 4)) {
        const torch::Tensor first = torch::nonzero(m)[0];
        const int64_t cell = (first[0].item<int64_t>() / (h / 2)) * 2 + first[1].item<int64_t>() / (w / 2);
        delta = 1.0 + 0.5 * static_cast<double>(cell);
        if (!torch::equal(m.narrow(0, first[0].item<int64_t>(), h / 2).narrow(1, first[1].item<int64_t>(), w / 2), torch::ones({h / 2, w / 2})))
          delta = 3.0;  // a quarter of the image that is not a grid cell
      }
      torch::Tensor x_hat = image_[0].clone();
      x_hat[0].add_(m * delta + (1 - m) * 0.5);
      out.push_back(x_hat);
    }
    return torch::stack(out);
  }
  int64_t alignment() const override { return 4; }
  torch::Tensor image_;
  std::vector<int64_t> batches;  // masks per inpaint() call
};

TEST(Detector, ScoresOfAnImperfectInpainterMatchEquations18To21ByHand) {
  const torch::Tensor x = textured(21).narrow(2, 0, 16).narrow(3, 0, 16).contiguous();
  // Eq. (14)'s error map on a 4×4 grid: one cell far above the rest, so eq. (15) masks exactly
  // that cell: pixels rows 0–3, columns 0–3 of the 16×16 image.
  torch::Tensor error = torch::full({4, 4}, 0.1f);
  error[0][0] = 5.0f;
  KnownErrorInpainter inpainter;
  InferenceSettings s;
  s.scales = {1, 2};
  s.blur_sigma = 0;   // the map is S itself
  s.mask_batch = 2;   // batches that mix scales and the prototype mask: 1 + 4 + 1 masks in 3 calls
  s.alpha = 0.1;
  const Detection d = AnomalyDetector(inpainter, pixel_distance, s).detect(x, 0, error);
  ASSERT_EQ(d.masks, 6);
  EXPECT_EQ(inpainter.batches, (std::vector<int64_t>{2, 2, 2}));  // the detector alone splits the masks
  ASSERT_EQ(d.scale_maps.size(), 2u);
  torch::Tensor expected_prototype = torch::zeros({16, 16});
  expected_prototype.narrow(0, 0, 4).narrow(1, 0, 4).fill_(1);
  ASSERT_TRUE(torch::equal(d.prototype_mask, expected_prototype));

  struct Pixel {
    int64_t r, c;
    double s1, s2, s_ms, s_pg, s;
  };
  // By hand: S(1) = 2² = 4 everywhere (one mask, covering everything). S(2) = δ_j² of the pixel's
  // cell j: 1, 2.25, 4, 6.25 (the other three cells' masks contribute 0 there: M ⊙ D).
  // S_ms = 2 / (1/S(1) + 1/S(2)) (eq. 19). S_pg = 3² = 9 inside the prototype mask, 0 outside
  // (eq. 20). S = 0.9 S_ms + 0.1 S_pg (eq. 21).
  const std::vector<Pixel> pixels = {
      {1, 1, 4, 1.00, 1.6, 9, 0.9 * 1.6 + 0.9},                // cell 0, in the prototype mask: 2.34
      {6, 6, 4, 1.00, 1.6, 0, 0.9 * 1.6},                      // cell 0, outside it: 1.44
      {2, 12, 4, 2.25, 2.0 / (0.25 + 1 / 2.25), 0, 0.9 * 2.88}, // cell 1: S_ms = 2.88
      {12, 2, 4, 4.00, 4.0, 0, 0.9 * 4.0},                     // cell 2
      {12, 12, 4, 6.25, 2.0 / (0.25 + 0.16), 0, 0.9 * 2.0 / 0.41},  // cell 3: S_ms = 4.878…
  };
  for (const Pixel& p : pixels) {
    SCOPED_TRACE("pixel " + std::to_string(p.r) + "," + std::to_string(p.c));
    EXPECT_NEAR(d.scale_maps[0][p.r][p.c].item<double>(), p.s1, 1e-5);
    EXPECT_NEAR(d.scale_maps[1][p.r][p.c].item<double>(), p.s2, 1e-5);
    EXPECT_NEAR(d.s_ms[p.r][p.c].item<double>(), p.s_ms, 1e-5);
    EXPECT_NEAR(d.s_pg[p.r][p.c].item<double>(), p.s_pg, 1e-5);
    EXPECT_NEAR(d.map[p.r][p.c].item<double>(), p.s, 1e-5);
  }
  // S_I = max of the map: cell 3's 0.9 · 4.878.
  EXPECT_NEAR(d.score, 0.9 * 2.0 / 0.41, 1e-5);
}

TEST(Detector, PrototypeMaskAloneAndFusion) {
  const torch::Tensor clean = textured(7);
  torch::Tensor x = clean.clone();
  x.narrow(2, 16, 12).narrow(3, 16, 12).fill_(1.0f);
  OracleInpainter oracle(clean);
  // A hand-made error map (eq. 14) that flags the defect's region on a 8×8 feature grid.
  torch::Tensor error = torch::rand({8, 8}) * 0.1;
  error.narrow(0, 2, 2).narrow(1, 2, 2).add_(5.0);
  InferenceSettings only_pg;
  only_pg.multiscale = false;
  const Detection pg = AnomalyDetector(oracle, pixel_distance, only_pg).detect(x, 0, error);
  EXPECT_EQ(pg.masks, 1);
  ASSERT_TRUE(pg.prototype_mask.defined());
  EXPECT_EQ(pg.prototype_mask.sum().item<double>(), 16.0 * 16.0);  // 2×2 feature cells × 8² px
  EXPECT_GT(pg.score, 0.0);
  InferenceSettings both;
  both.scales = {1, 2};
  both.blur_sigma = 0;
  const Detection f = AnomalyDetector(oracle, pixel_distance, both).detect(x, 0, error);
  EXPECT_EQ(f.masks, 6);  // the fused values are worked out by hand in ScoresOfAnImperfectInpainter…
  // Without an error map (0 shots) the map is S_ms alone.
  const Detection ms = AnomalyDetector(oracle, pixel_distance, both).detect(x, 0);
  EXPECT_EQ(ms.masks, 5);
  EXPECT_TRUE(torch::equal(ms.map, ms.s_ms));
}

// Random-weight EfficientNet-B0 (real architecture, calibrated BatchNorm), seeded.
EfficientNet random_efficientnet_b0() {
  torch::manual_seed(0);
  EfficientNet net(EfficientNetConfig::b(0));
  init_random_efficientnet(*net);
  net->eval();
  return net;
}

// A smooth texture at 128 × 128, and the same with a white blob at rows 48..71, cols 64..87.
torch::Tensor textured_shot_128() {
  namespace F = torch::nn::functional;
  return F::interpolate(textured(11), F::InterpolateFuncOptions().size(std::vector<int64_t>{128, 128}).mode(torch::kBilinear).align_corners(false));
}
torch::Tensor with_blob(const torch::Tensor& shot) {
  torch::Tensor x = shot.clone();
  x.narrow(2, 48, 24).narrow(3, 64, 24).fill_(1.0f);
  return x;
}

TEST(Detector, PrototypeMaskOnAPlantedBlob) {
  // Random-weight EfficientNet-B0 features (real architecture, calibrated BatchNorm) of a smooth
  // texture: a planted blob is far from every bank vector of the clean shot, so the error map
  // peaks on it and the variance split (eq. 15) masks it, not the whole image.
  EfficientNet net = random_efficientnet_b0();
  const torch::Tensor shot = textured_shot_128();
  PrototypeOptions o;
  const torch::Tensor bank = build_prototype_bank(net, shot, o);
  const torch::Tensor x = with_blob(shot);
  const torch::Tensor error = prototype_error(net, x, bank, o);
  ASSERT_EQ(error.sizes(), (std::vector<int64_t>{16, 16}));
  const int64_t peak = error.argmax().item<int64_t>(), pr = peak / 16, pc = peak % 16;
  EXPECT_TRUE(pr >= 5 && pr <= 9 && pc >= 7 && pc <= 11) << "error peak at cell " << pr << "," << pc;
  const torch::Tensor mask = prototype_mask(error, 128, 128);
  EXPECT_EQ(mask[59][75].item<float>(), 1.0f);  // the blob's centre
  EXPECT_LT(mask.mean().item<double>(), 0.4);   // and not the whole image
  EXPECT_EQ(mask[2][2].item<float>(), 0.0f);
  // A shot is its own prototype: ~0 (rounding of ‖a‖² + ‖b‖² − 2ab) against the blob's distances.
  EXPECT_LT(prototype_error(net, shot, bank, o).max().item<double>(), 1e-4 * error.max().item<double>());
}

TEST(Detector, TheClassBankGivesTheMapOfItsErrorMap) {
  // set_class() with a prototype bank: detect() computes eq. (14)'s error map itself, and the map
  // equals the one given that error map by hand.
  EfficientNet net = random_efficientnet_b0();
  const torch::Tensor shot = textured_shot_128();
  const torch::Tensor x = with_blob(shot);
  OracleInpainter oracle(shot);
  InferenceSettings s;
  s.scales = {1, 2};
  PrototypeFeatures features{net, PrototypeOptions{}};
  AnomalyDetector detector(oracle, pixel_distance, s, features);
  const torch::Tensor bank = detector.prototype_bank(shot);
  EXPECT_TRUE(torch::equal(bank, build_prototype_bank(net, shot, features.options)));
  detector.set_class({{}, bank, 0.4});
  EXPECT_EQ(detector.bank_size(), bank.size(0));
  const Detection own = detector.detect(x, 0);
  const Detection given = detector.detect(x, 0, prototype_error(net, x, bank, features.options));
  EXPECT_EQ(own.masks, 6);  // 1 + 4 grid masks and the prototype-guided one
  EXPECT_TRUE(torch::equal(own.map, given.map));
  detector.set_class({{}, {}, 0.4});  // 0 shots: S_ms alone
  EXPECT_EQ(detector.detect(x, 0).masks, 5);
}

// --- 4b. half precision never gives NaN: the score maths run in float32 ---------------------

TEST(HalfPrecision, LpipsNormalisationOfAnAllZeroPositionIsZeroNotNaN) {
  // A ReLU tap with one position where every channel is 0, in float16 and bfloat16.
  for (const auto dtype : {torch::kHalf, torch::kBFloat16}) {
    torch::Tensor tap = torch::rand({1, 64, 2, 2}).to(dtype);
    tap.select(2, 0).select(2, 1).zero_();
    const torch::Tensor f = unit_normalize(tap);
    EXPECT_EQ(f.scalar_type(), torch::kFloat);
    EXPECT_TRUE(torch::isfinite(f).all().item<bool>()) << c10::toString(dtype);
    EXPECT_EQ(f[0].select(1, 0).select(1, 1).abs().sum().item<double>(), 0.0);
    EXPECT_NEAR(f[0].select(1, 1).select(1, 1).pow(2).sum().item<double>(), 1.0, 1e-5);  // unit length elsewhere
  }
}

TEST(HalfPrecision, NearestNeighbourDistanceKeepsItsDigitsForBfloat16Features) {
  // Feature vectors of norm ~100, as EfficientNet's are: in bfloat16, ‖a‖² + ‖b‖² − 2ab of a vector
  // and itself cancels ~10⁴ with 8 mantissa bits (errors ~40); in float32 it is ~0.
  torch::manual_seed(4);
  const torch::Tensor features = (torch::randn({1, 256, 4, 4}) * 6.0).to(torch::kBFloat16);
  const torch::Tensor bank = features[0].reshape({256, 16}).t().contiguous();  // the shot's own vectors
  const torch::Tensor error = prototype_error_map(features, bank);
  EXPECT_EQ(error.scalar_type(), torch::kFloat);
  const double norm_sq = features.to(torch::kFloat).pow(2).sum(1).mean().item<double>();
  EXPECT_GT(norm_sq, 5000.0);
  EXPECT_LT(error.max().item<double>(), 1e-4 * norm_sq) << "distance of a vector to itself";
}

// Under `dtype: bfloat16` the networks run in bfloat16 and everything between them in float32, as
// diffusers keeps it: the start noise, E(x) and z°, z_t and the DDIM step (ᾱ products and
// x̂₀ = (z − √(1−ᾱ)ε)/√ᾱ), and the decoded x̂. Checked at the boundaries (the dtypes each function
// returns) and by the result: the inpainting stays within a measured distance of diffusers' float32.
TEST(HalfPrecision, UnderBfloat16TheNetworksRunInItAndTheLatentsAndTheSchedulerInFloat32) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  torch::NoGradGuard no_grad;
  const fs::path case_dir = fixtures / "inpaint_cases" / "case_strength04_g1";
  const auto io = load_all((case_dir / "case.safetensors").string());
  const nlohmann::json c = nlohmann::json::parse(std::ifstream(case_dir / "case.json"));
  SdPipeline pipe = load_sd_pipeline((fixtures / "pipeline_sd2_inpaint_tiny").string());
  pipe.to(torch::kCPU, torch::kBFloat16);  // the rule behind `dtype: bfloat16`
  const PipelinePrecision p = pipe.precision();
  EXPECT_EQ(p.unet, torch::kBFloat16);
  EXPECT_EQ(p.text_encoder, torch::kBFloat16);
  EXPECT_EQ(p.latents, torch::kFloat) << p.describe();
  EXPECT_EQ(pipe.vae->encoder->conv_in->weight.scalar_type(), p.vae_encoder);
  EXPECT_EQ(pipe.vae->decoder->conv_in->weight.scalar_type(), p.vae_decoder);
  const DenoisingSchedule s = denoising_schedule(pipe, c["steps"].get<int64_t>(), c["strength"].get<double>(), 1.0);
  PromptConditioning cond;
  cond.cond = encode_prompts(pipe, {c["prompt"].get<std::string>()});
  const torch::Tensor x = io.at("image").narrow(0, 0, 1), mask = io.at("mask").narrow(0, 0, 1);
  const torch::Tensor image_latent = encode_latents(pipe, x);
  EXPECT_EQ(image_latent.scalar_type(), torch::kFloat) << "E(x)";
  EXPECT_EQ(inpaint_condition(pipe, x, mask).scalar_type(), torch::kFloat) << "[m↓; z°]";
  const InpaintResult r = inpaint(pipe, x, image_latent, mask, io.at("noise").narrow(0, 0, 1), cond, s);
  EXPECT_EQ(r.latents.scalar_type(), torch::kFloat) << "z after the DDIM steps";
  EXPECT_EQ(r.images.scalar_type(), torch::kFloat) << "x̂";
  const double latents_error = (r.latents - io.at("latents").narrow(0, 0, 1)).abs().max().item<double>();
  const double image_error = (r.images - io.at("inpainted").narrow(0, 0, 1)).abs().max().item<double>();
  std::printf("bfloat16 networks, float32 latents vs diffusers float32: latents %.4f, image %.4f (max |diff|)\n", latents_error,
              image_error);
  // Measured 0.034 and 0.017 (2-core AMD EPYC, LibTorch 1.13): bfloat16's rounding through the
  // UNet's and the VAE's layers. 3× that; the GroupNorm bug of LibTorch 1.13 alone gave 0.78.
  EXPECT_LT(latents_error, 0.1);
  EXPECT_LT(image_error, 0.05);
}

// --- 5. determinism with the real inpainter --------------------------------------------------

TEST(Detector, SameSeedSameMapAndMaskBatchingDoesNotMatter) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  SdPipeline pipe = load_sd_pipeline((fixtures / "pipeline_sd2_inpaint_tiny").string());
  pipe.scheduler.set_timesteps(7);  // the pipeline's own scheduler, which inpainting must leave alone
  torch::manual_seed(5);
  const torch::Tensor x = textured(3).narrow(2, 0, 32).narrow(3, 0, 32).contiguous();
  auto run = [&](int64_t batch, uint64_t seed) {
    SdInpainter inpainter(pipe, 10, 1.0);
    inpainter.set_class({average_prompt_embedding(pipe, {"A perfect tile."}), {}}, 0.4);
    InferenceSettings s;
    s.scales = {1, 2, 4};
    s.mask_batch = batch;
    AnomalyDetector detector(inpainter, pixel_distance, s);
    return detector.detect(x, seed);
  };
  const Detection a = run(8, 1), b = run(8, 1), c = run(1, 1), d = run(8, 2);
  EXPECT_TRUE(torch::equal(a.map, b.map));
  EXPECT_TRUE(torch::allclose(a.map, c.map, 1e-4, 1e-6)) << (a.map - c.map).abs().max().item<double>();
  EXPECT_FALSE(torch::allclose(a.map, d.map));
  // UNet calls = Σ over mask batches of the steps run: ⌈21/8⌉ · 4 and 21 · 4.
  EXPECT_EQ(a.unet_calls, 3 * 4);
  EXPECT_EQ(c.unet_calls, 21 * 4);
  // The schedule is the inpainter's copy: the pipeline's scheduler keeps its 7 steps.
  EXPECT_EQ(pipe.scheduler.num_inference_steps(), 7);
  EXPECT_EQ(pipe.scheduler.timesteps().size(), 7u);
}

}  // namespace
}  // namespace anomalysd

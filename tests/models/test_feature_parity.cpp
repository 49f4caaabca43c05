// EfficientNet-B6, AlexNet and LPIPS against torchvision 0.14 / lpips 0.1 on the fixtures' weights:
// large tensors are rebuilt here from the fixtures' documented integer hash.
#include <fstream>
#include <numeric>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "anomalysd/io/errors.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/models/alexnet_lpips.h"
#include "anomalysd/tools/components.h"
#include "anomalysd/models/efficientnet.h"
#include "models/parity.h"
#include "test_support.h"

namespace anomalysd {
namespace {

using test::close_to_reference;
using test::rebuild_state;
namespace fs = std::filesystem;

TEST(EfficientNetParity, B6FeaturesAndLogits) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  torch::NoGradGuard no_grad;
  const fs::path folder = fixtures / "efficientnet_b6";
  const auto state = rebuild_state(folder / "state_dict_explicit.safetensors", folder / "hashed_weights.json");
  std::ifstream keys_in(folder / "all_keys.json");
  const auto all_keys = nlohmann::json::parse(keys_in);
  EXPECT_EQ(state.size(), all_keys.size());
  test::TempDir dir;
  const std::string weights = dir.file("efficientnet_b6.safetensors");
  save_safetensors(weights, state);
  EfficientNet net = load_efficientnet(weights);
  EXPECT_EQ(net->features->size(), 9u);

  const auto io = load_all((folder / "inputs_outputs.safetensors").string());
  std::vector<int64_t> taps(9);
  std::iota(taps.begin(), taps.end(), 0);
  const auto feats = net->features_at(io.at("input"), taps);
  for (int i = 0; i < 9; ++i) {
    const std::string key = "features." + std::to_string(i);
    // The fixtures allow 1e-3 after many BN-renormalised layers.
    EXPECT_TRUE(close_to_reference(feats.at(i), io.at(key), key, i >= 5 ? 1e-3 : 1e-4));
  }
  EXPECT_TRUE(close_to_reference(net->forward(io.at("input")), io.at("logits"), "logits", 1e-3));

  // The forward tool gives the same, and a file without the classifier still loads for features.
  ForwardRequest request;
  request.component = "efficientnet";
  request.weights = weights;
  const auto out = run_forward(request, io);
  EXPECT_TRUE(close_to_reference(out.at("features.3"), io.at("features.3"), "forward tool features.3"));
  auto no_head = state;
  no_head.erase("classifier.1.weight");
  no_head.erase("classifier.1.bias");
  save_safetensors(weights, no_head);
  EfficientNet trunk = load_efficientnet(weights);
  EXPECT_TRUE(close_to_reference(trunk->features_at(io.at("input"), {3}).at(3), io.at("features.3"), "features.3 (no classifier)"));
  EXPECT_THROW(trunk->forward(io.at("input")), InputError);
}

TEST(AlexNetLpipsParity, TapsAndBothLinSets) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  torch::NoGradGuard no_grad;
  const fs::path folder = fixtures / "alexnet_lpips";
  test::TempDir dir;
  const std::string trunk = dir.file("alexnet.safetensors");
  save_safetensors(trunk, rebuild_state(folder / "features_bias.safetensors", folder / "hashed_weights.json"));
  const auto io = load_all((folder / "inputs_outputs.safetensors").string());

  AlexNetFeatures alexnet = load_alexnet(trunk);
  const auto taps = alexnet->forward(io.at("input"));
  const char* names[] = {"1", "4", "7", "9", "11"};
  for (int l = 0; l < 5; ++l)
    EXPECT_TRUE(close_to_reference(taps[l], io.at(std::string("relu_after_features.") + names[l]), names[l]));

  const torch::Tensor& x0 = io.at("lpips_in0");
  const torch::Tensor& x1 = io.at("lpips_in1");
  for (const std::string tag : {"v0.1", "random"}) {
    SCOPED_TRACE(tag);
    Lpips lpips = load_lpips(trunk, (folder / ("lpips_lin_" + tag + ".safetensors")).string());
    const std::string p = "lpips." + tag + ".";
    const LpipsOutput out = lpips->forward(x0, x1);
    EXPECT_TRUE(close_to_reference(out.value, io.at(p + "value"), p + "value"));
    for (int l = 0; l < 5; ++l)
      EXPECT_TRUE(close_to_reference(out.layer_maps[l].mean({2, 3}, true), io.at(p + "layer" + std::to_string(l)),
                                     p + "layer" + std::to_string(l)));
    EXPECT_TRUE(close_to_reference(lpips->distance_map(x0, x1), io.at(p + "spatial_map"), p + "spatial_map"));
    EXPECT_TRUE(close_to_reference(lpips->forward((x0 + 1) / 2, (x1 + 1) / 2, /*normalize=*/true).value,
                                   io.at(p + "value_normalize_true_on_01_inputs"), p + "value_normalize_true_on_01_inputs"));
    EXPECT_TRUE(close_to_reference(lpips->loss(x0, x1), io.at(p + "value").flatten(), p + "loss"));
  }
}

TEST(Lpips, IsDifferentiableAndZeroOnIdenticalImages) {
  torch::manual_seed(1);
  Lpips lpips;
  const torch::Tensor x = torch::rand({2, 3, 48, 48}) * 2 - 1;
  const torch::Tensor y = (x + 0.1 * torch::randn_like(x)).clamp(-1, 1).requires_grad_(true);
  const torch::Tensor loss = lpips->loss(x, y).sum();
  loss.backward();
  ASSERT_TRUE(y.grad().defined());
  EXPECT_GT(y.grad().abs().sum().item<double>(), 0.0);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(lpips->distance_map(x, x), torch::zeros({2, 1, 48, 48})));
}

TEST(Lpips, ChunkedInferenceMatchesOneBatch) {
  torch::manual_seed(2);
  Lpips lpips;
  const torch::Tensor a = torch::rand({11, 3, 40, 40}) * 2 - 1, b = torch::rand({11, 3, 40, 40}) * 2 - 1;
  const torch::Tensor whole = lpips->distance_map(a, b).detach();  // grad mode: one batch
  torch::NoGradGuard no_grad;                                      // inference: chunks of 8
  EXPECT_TRUE(torch::allclose(lpips->distance_map(a, b), whole, 1e-5, 1e-6));
}

TEST(EfficientNet, TorchvisionChannelRounding) {
  // torchvision's _make_divisible at width 1.8 (B6): 32→56, 16→32, 24→40, 40→72, 80→144, 112→200, 192→344, 320→576.
  const std::vector<std::pair<int, int64_t>> expected = {{32, 56}, {16, 32}, {24, 40}, {40, 72}, {80, 144}, {112, 200}, {192, 344}, {320, 576}};
  for (const auto& [c, out] : expected) EXPECT_EQ(make_divisible(c * 1.8), out) << c;
  EfficientNet b6(EfficientNetConfig::b(6));
  int64_t params = 0;
  for (const auto& p : b6->parameters()) params += p.numel();
  EXPECT_EQ(params, 43040704);  // torchvision efficientnet_b6: 43.0 M parameters
}

}  // namespace
}  // namespace anomalysd

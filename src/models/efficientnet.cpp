// Port of torchvision 0.14 models/efficientnet.py (EfficientNet v1: MBConv, SqueezeExcitation).
#include "anomalysd/models/efficientnet.h"

#include <cmath>

#include "anomalysd/io/errors.h"
#include "anomalysd/io/safetensors.h"
#include "anomalysd/models/weights.h"

namespace anomalysd {

namespace nn = torch::nn;

namespace {

// torchvision's base MBConv settings (expand_ratio, kernel, stride, in, out, layers) before scaling.
struct StageSetting {
  int64_t expand_ratio, kernel, stride, in_channels, out_channels, layers;
};
constexpr StageSetting kStages[] = {
    {1, 3, 1, 32, 16, 1}, {6, 3, 2, 16, 24, 2}, {6, 5, 2, 24, 40, 2}, {6, 3, 2, 40, 80, 3},
    {6, 5, 1, 80, 112, 3}, {6, 5, 2, 112, 192, 4}, {6, 3, 1, 192, 320, 1},
};

// torchvision's Conv2dNormActivation: conv (no bias) → BatchNorm → SiLU (or no activation). A
// Sequential subclass with a typed forward, so that it can sit inside another Sequential.
struct ConvNormActivationImpl : nn::SequentialImpl {
  ConvNormActivationImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups, double eps, bool act) {
    push_back(nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding((kernel - 1) / 2).groups(groups).bias(false)));
    push_back(nn::BatchNorm2d(nn::BatchNormOptions(out).eps(eps)));
    if (act) push_back(nn::SiLU());
  }
  torch::Tensor forward(torch::Tensor x) { return nn::SequentialImpl::forward(x); }
};
TORCH_MODULE(ConvNormActivation);

ConvNormActivation conv_norm_act(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups, double eps, bool act) {
  return ConvNormActivation(in, out, kernel, stride, groups, eps, act);
}

}  // namespace

EfficientNetConfig EfficientNetConfig::b(int variant) {
  static const double kWidth[] = {1.0, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0};
  static const double kDepth[] = {1.0, 1.1, 1.2, 1.4, 1.8, 2.2, 2.6, 3.1};
  if (variant < 0 || variant > 7) throw InputError("EfficientNet variant must be 0..7");
  EfficientNetConfig c;
  c.name = "efficientnet_b" + std::to_string(variant);
  c.width_mult = kWidth[variant];
  c.depth_mult = kDepth[variant];
  c.bn_eps = variant >= 5 ? 1e-3 : 1e-5;
  return c;
}

int64_t make_divisible(double value, int64_t divisor) {
  int64_t v = std::max<int64_t>(divisor, static_cast<int64_t>(value + divisor / 2.0) / divisor * divisor);
  if (v < 0.9 * value) v += divisor;  // never round down by more than 10%
  return v;
}

SqueezeExcitationImpl::SqueezeExcitationImpl(int64_t channels, int64_t squeeze) {
  fc1 = register_module("fc1", nn::Conv2d(nn::Conv2dOptions(channels, squeeze, 1)));
  fc2 = register_module("fc2", nn::Conv2d(nn::Conv2dOptions(squeeze, channels, 1)));
}

torch::Tensor SqueezeExcitationImpl::forward(const torch::Tensor& x) {
  const torch::Tensor s = x.mean({2, 3}, /*keepdim=*/true);
  return x * torch::sigmoid(fc2(torch::silu(fc1(s))));
}

MBConvImpl::MBConvImpl(int64_t expand_ratio, int64_t kernel, int64_t stride, int64_t in, int64_t out, double eps)
    : use_residual(stride == 1 && in == out) {
  const int64_t expanded = make_divisible(static_cast<double>(in * expand_ratio));
  block = register_module("block", nn::Sequential());
  if (expanded != in) block->push_back(conv_norm_act(in, expanded, 1, 1, 1, eps, true));             // expand
  block->push_back(conv_norm_act(expanded, expanded, kernel, stride, expanded, eps, true));           // depthwise
  block->push_back(SqueezeExcitation(expanded, std::max<int64_t>(1, in / 4)));                       // squeeze-excite
  block->push_back(conv_norm_act(expanded, out, 1, 1, 1, eps, false));                                // project
}

torch::Tensor MBConvImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = block->forward(x);
  return use_residual ? y + x : y;
}

EfficientNetImpl::EfficientNetImpl(EfficientNetConfig c) : config(std::move(c)) {
  auto width = [&](int64_t ch) { return make_divisible(ch * config.width_mult); };
  features = register_module("features", nn::ModuleList());
  features->push_back(conv_norm_act(3, width(32), 3, 2, 1, config.bn_eps, true));  // stem
  for (const StageSetting& s : kStages) {
    nn::Sequential stage;
    const int64_t layers = static_cast<int64_t>(std::ceil(s.layers * config.depth_mult));
    for (int64_t i = 0; i < layers; ++i)
      stage->push_back(MBConv(s.expand_ratio, s.kernel, i == 0 ? s.stride : 1, i == 0 ? width(s.in_channels) : width(s.out_channels),
                              width(s.out_channels), config.bn_eps));
    features->push_back(stage);
  }
  const int64_t last_in = width(320);
  features->push_back(conv_norm_act(last_in, 4 * last_in, 1, 1, 1, config.bn_eps, true));  // head
  classifier = register_module("classifier", nn::Sequential(nn::Dropout(0.5), nn::Linear(4 * last_in, config.num_classes)));
}

std::map<int64_t, torch::Tensor> EfficientNetImpl::features_at(const torch::Tensor& x, const std::vector<int64_t>& taps) {
  std::map<int64_t, torch::Tensor> out;
  if (taps.empty()) return out;
  const int64_t last = *std::max_element(taps.begin(), taps.end());
  if (last >= static_cast<int64_t>(features->size()) || *std::min_element(taps.begin(), taps.end()) < 0)
    throw InputError("EfficientNet feature taps must be in 0.." + std::to_string(features->size() - 1));
  torch::Tensor h = x;
  for (int64_t i = 0; i <= last; ++i) {
    h = features[i]->as<nn::SequentialImpl>()->forward(h);
    if (std::find(taps.begin(), taps.end(), i) != taps.end()) out[i] = h;
  }
  return out;
}

torch::Tensor EfficientNetImpl::forward(const torch::Tensor& x) {
  if (!classifier) throw InputError(config.name + ": loaded without classifier weights; only features are available");
  torch::Tensor h = features_at(x, {static_cast<int64_t>(features->size()) - 1}).begin()->second;
  return classifier->forward(h.mean({2, 3}));
}

torch::Tensor imagenet_normalize(const torch::Tensor& images) {
  const auto opts = images.options();
  const torch::Tensor mean = torch::tensor({0.485, 0.456, 0.406}, opts).view({1, 3, 1, 1});
  const torch::Tensor std = torch::tensor({0.229, 0.224, 0.225}, opts).view({1, 3, 1, 1});
  return (images - mean) / std;
}

void init_random_efficientnet(EfficientNetImpl& net) {
  for (auto& m : net.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<nn::Conv2dImpl>()) nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut);
    if (auto* bn = m->as<nn::BatchNorm2dImpl>()) bn->options.momentum(1.0);  // take the next batch's statistics
  }
  {
    torch::NoGradGuard no_grad;
    const bool was_training = net.is_training();
    net.train();
    const torch::Tensor noise = torch::nn::functional::interpolate(
        torch::rand({8, 3, 16, 16}),
        torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{128, 128}).mode(torch::kBilinear).align_corners(false));
    net.forward(imagenet_normalize(noise));
    net.train(was_training);
  }
  for (auto& m : net.modules(false))
    if (auto* bn = m->as<nn::BatchNorm2dImpl>()) bn->options.momentum(0.1);
}

EfficientNet load_efficientnet(const std::string& weights, int variant) {
  EfficientNet net(EfficientNetConfig::b(variant));
  // Feature extraction needs no classifier: files without it load too.
  if (!SafetensorsFile::open(weights).contains("classifier.1.weight")) {
    net->unregister_module("classifier");
    net->classifier = nullptr;
  }
  load_weights(*net, {weights});
  net->eval();
  return net;
}

}  // namespace anomalysd

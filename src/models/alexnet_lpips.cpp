// Port of torchvision 0.14 alexnet().features and lpips 0.1 (LPIPS(net='alex', version='0.1')).
#include "anomalysd/models/alexnet_lpips.h"

#include <set>

#include "anomalysd/io/errors.h"
#include "anomalysd/io/safetensors.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/models/weights.h"

namespace anomalysd {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

namespace {
constexpr int64_t kTapIndices[5] = {1, 4, 7, 9, 11};  // ReLUs after conv 0, 3, 6, 8, 10
}  // namespace

AlexNetFeaturesImpl::AlexNetFeaturesImpl() {
  auto conv = [](int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad) {
    return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad));
  };
  auto pool = [] { return nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2)); };
  features = register_module("features", nn::Sequential(conv(3, 64, 11, 4, 2), nn::ReLU(), pool(),       // 0-2
                                                        conv(64, 192, 5, 1, 2), nn::ReLU(), pool(),      // 3-5
                                                        conv(192, 384, 3, 1, 1), nn::ReLU(),             // 6-7
                                                        conv(384, 256, 3, 1, 1), nn::ReLU(),             // 8-9
                                                        conv(256, 256, 3, 1, 1), nn::ReLU(), pool()));   // 10-12
}

std::vector<torch::Tensor> AlexNetFeaturesImpl::forward(const torch::Tensor& x) {
  std::vector<torch::Tensor> taps;
  // At inference on the CPU, channels-last: oneDNN's convolutions and LibTorch's max-pool run faster
  // in it (measured: bench lpips).
  torch::Tensor h = !torch::GradMode::is_enabled() && x.device().is_cpu() ? x.contiguous(torch::MemoryFormat::ChannelsLast) : x;
  int64_t index = 0;
  for (auto& layer : *features) {  // up to the last tap; the final max-pool is not needed
    h = layer.forward(h);
    if (std::find(std::begin(kTapIndices), std::end(kTapIndices), index) != std::end(kTapIndices)) taps.push_back(h);
    if (++index > kTapIndices[4]) break;
  }
  return taps;
}

LpipsLinImpl::LpipsLinImpl(int64_t channels) {
  model = register_module("model", nn::Sequential(nn::Dropout(0.5), nn::Conv2d(nn::Conv2dOptions(channels, 1, 1).bias(false))));
}

torch::Tensor LpipsLinImpl::forward(const torch::Tensor& x) { return model[1]->as<nn::Conv2dImpl>()->forward(x); }

LpipsImpl::LpipsImpl() {
  net = register_module("net", AlexNetFeatures());
  lin0 = register_module("lin0", LpipsLin(64));
  lin1 = register_module("lin1", LpipsLin(192));
  lin2 = register_module("lin2", LpipsLin(384));
  lin3 = register_module("lin3", LpipsLin(256));
  lin4 = register_module("lin4", LpipsLin(256));
}

torch::Tensor lpips_scale_input(const torch::Tensor& x, bool normalize) {
  const auto opts = x.options();
  const torch::Tensor shift = torch::tensor({-0.030, -0.088, -0.188}, opts).view({1, 3, 1, 1});
  const torch::Tensor scale = torch::tensor({0.458, 0.448, 0.450}, opts).view({1, 3, 1, 1});
  return ((normalize ? 2 * x - 1 : x) - shift) / scale;
}

namespace {

// Eq. (17)'s Σ over layers of the per-layer maps, each bilinearly upsampled to the input size.
torch::Tensor upsampled_sum(const std::array<torch::Tensor, 5>& layer_maps, int64_t height, int64_t width) {
  torch::Tensor map;
  for (const auto& m : layer_maps) {
    const torch::Tensor up =
        F::interpolate(m, F::InterpolateFuncOptions().size(std::vector<int64_t>{height, width}).mode(torch::kBilinear).align_corners(false));
    map = map.defined() ? map + up : up;
  }
  return map;
}

}  // namespace

torch::Tensor unit_normalize(const torch::Tensor& tap) {
  // In float32 whatever the trunk's dtype: in float16 the 1e-10 guard rounds to 0 and an all-zero
  // ReLU position gives 0/0 = NaN.
  const torch::Tensor f = tap.to(torch::kFloat);
  return f / (f.pow(2).sum(1, true).sqrt() + 1e-10);
}

LpipsOutput LpipsImpl::forward(const torch::Tensor& x0, const torch::Tensor& x1, bool normalize) {
  if (x0.sizes() != x1.sizes() || x0.dim() != 4 || x0.size(1) != 3) throw ShapeError("lpips: inputs must both be [B, 3, H, W]");
  // Both images through the trunk in one batch.
  const auto taps = net->forward(torch::cat({lpips_scale_input(x0, normalize), lpips_scale_input(x1, normalize)}, 0));
  const int64_t b = x0.size(0);
  LpipsOutput out;
  for (int l = 0; l < 5; ++l) {
    const torch::Tensor f = unit_normalize(taps[l]);
    out.layer_maps[l] = weighted_difference(l, f.narrow(0, 0, b), f.narrow(0, b, b));
    const torch::Tensor mean = out.layer_maps[l].mean({2, 3}, true);
    out.value = l == 0 ? mean : out.value + mean;
  }
  return out;
}

torch::Tensor LpipsImpl::weighted_difference(int layer, const torch::Tensor& f0, const torch::Tensor& f1) {
  LpipsLinImpl* lins[5] = {lin0.get(), lin1.get(), lin2.get(), lin3.get(), lin4.get()};
  LpipsLinImpl* lin = lins[layer];
  const torch::Tensor& w = lin->model[1]->as<torch::nn::Conv2dImpl>()->weight;
  // w · (φ̂(x) − φ̂(x̂))², summed over channels: ‖w ⊙ Δ‖² of eq. (17) read as Σ_c w_c Δ_c², as LPIPS does.
  return lin->forward((f0 - f1).pow(2).to(w.scalar_type())).to(torch::kFloat);  // [B, 1, h, w]
}

LpipsFeatures LpipsImpl::features(const torch::Tensor& x, bool normalize) {
  if (x.dim() != 4 || x.size(1) != 3) throw ShapeError("lpips: input must be [B, 3, H, W]");
  const torch::Tensor& w = net->features[0]->as<torch::nn::Conv2dImpl>()->weight;
  const auto taps = net->forward(lpips_scale_input(x.to(w.device(), w.scalar_type()), normalize));
  LpipsFeatures f;
  f.height = x.size(2);
  f.width = x.size(3);
  for (int l = 0; l < 5; ++l) f.taps[l] = unit_normalize(taps[l]);
  return f;
}

torch::Tensor LpipsImpl::distance_map_from(const LpipsFeatures& reference, const torch::Tensor& x1, bool normalize) {
  if (x1.dim() != 4 || x1.size(2) != reference.height || x1.size(3) != reference.width)
    throw ShapeError("lpips: the images must have the reference's size");
  constexpr int64_t kChunk = 8;  // as distance_map(): bounded memory at 512²
  if (!torch::GradMode::is_enabled() && x1.size(0) > kChunk) {
    std::vector<torch::Tensor> parts;
    for (int64_t start = 0; start < x1.size(0); start += kChunk)
      parts.push_back(distance_map_from(reference, x1.narrow(0, start, std::min(kChunk, x1.size(0) - start)), normalize));
    return torch::cat(parts, 0);
  }
  const LpipsFeatures f1 = features(x1, normalize);
  std::array<torch::Tensor, 5> layer_maps;
  for (int l = 0; l < 5; ++l) layer_maps[l] = weighted_difference(l, reference.taps[l].expand_as(f1.taps[l]), f1.taps[l]);
  return upsampled_sum(layer_maps, x1.size(2), x1.size(3));
}

torch::Tensor LpipsImpl::distance_map(const torch::Tensor& x0, const torch::Tensor& x1, bool normalize) {
  // At inference, pairs go through in chunks: AlexNet's first activations of 85 pairs at 512² alone
  // take ~0.7 GiB, and the normalised features and differences several times that.
  constexpr int64_t kChunk = 8;
  if (!torch::GradMode::is_enabled() && x0.size(0) > kChunk) {
    std::vector<torch::Tensor> parts;
    for (int64_t start = 0; start < x0.size(0); start += kChunk) {
      const int64_t n = std::min(kChunk, x0.size(0) - start);
      parts.push_back(distance_map(x0.narrow(0, start, n), x1.narrow(0, start, n), normalize));
    }
    return torch::cat(parts, 0);
  }
  return upsampled_sum(forward(x0, x1, normalize).layer_maps, x0.size(2), x0.size(3));
}

torch::Tensor LpipsImpl::loss(const torch::Tensor& x0, const torch::Tensor& x1, bool normalize) {
  return forward(x0, x1, normalize).value.flatten();
}

AlexNetFeatures load_alexnet(const std::string& alexnet_weights) {
  AlexNetFeatures net;
  WeightLoadOptions options;
  const SafetensorsFile file = SafetensorsFile::open(alexnet_weights);
  for (const auto& t : file.tensors())
    if (t.name.rfind("classifier.", 0) == 0) options.ignored_keys.push_back(t.name);  // ImageNet head, unused
  load_weights(*net, {alexnet_weights}, options);
  net->eval();
  return net;
}

Lpips load_lpips(const std::string& alexnet_weights, const std::string& lin_weights) {
  Lpips lpips;
  lpips->net = lpips->replace_module("net", load_alexnet(alexnet_weights));
  // Only the lins come from the LPIPS file; the trunk is already loaded. lpips' state dict names
  // each lin twice: lin{N} and, through its ModuleList, lins.{N}. PyTorch's load_state_dict copies
  // both into the same tensor, lins.{N} last, so where a file holds both, lins.{N} is what the
  // reference computes with (the real v0.1 file has only lin{N}).
  const SafetensorsFile file = SafetensorsFile::open(lin_weights);
  torch::NoGradGuard no_grad;
  LpipsLinImpl* lins[5] = {lpips->lin0.get(), lpips->lin1.get(), lpips->lin2.get(), lpips->lin3.get(), lpips->lin4.get()};
  std::set<std::string> allowed;
  for (int l = 0; l < 5; ++l) {
    allowed.insert("lin" + std::to_string(l) + ".model.1.weight");
    allowed.insert("lins." + std::to_string(l) + ".model.1.weight");
  }
  for (const auto& t : file.tensors())
    if (!allowed.count(t.name)) throw FormatError(lin_weights, "unexpected tensor '" + t.name + "' (expected lin{0..4}.model.1.weight)");
  for (int l = 0; l < 5; ++l) {
    const std::string plain = "lin" + std::to_string(l) + ".model.1.weight";
    const std::string listed = "lins." + std::to_string(l) + ".model.1.weight";
    const std::string& key = file.contains(listed) ? listed : plain;
    if (!file.contains(key)) throw FormatError(lin_weights, "missing tensors: '" + plain + "'");
    torch::Tensor& w = lins[l]->model[1]->as<nn::Conv2dImpl>()->weight;
    const torch::Tensor value = load_tensor(file, key, w.device(), w.scalar_type());
    if (value.sizes() != w.sizes()) throw FormatError(lin_weights, "'" + key + "': expected [1, " + std::to_string(w.size(1)) + ", 1, 1]");
    w.copy_(value);
  }
  lpips->eval();
  return lpips;
}

}  // namespace anomalysd

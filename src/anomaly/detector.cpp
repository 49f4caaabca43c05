#include "anomalysd/anomaly/detector.h"

#include "anomalysd/anomaly/prototype.h"
#include "anomalysd/anomaly/scores.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/util/hash.h"

namespace anomalysd {

uint64_t noise_seed(uint64_t run_seed, uint64_t image_identity) { return splitmix64(run_seed ^ splitmix64(image_identity)); }

AnomalyDetector::AnomalyDetector(Inpainter& inpainter, std::shared_ptr<ImageDistance> distance, InferenceSettings settings,
                                 PrototypeFeatures prototype)
    : inpainter_(inpainter), distance_(std::move(distance)), settings_(std::move(settings)), prototype_(std::move(prototype)) {
  if (!settings_.multiscale && !settings_.prototype_mask)
    throw InputError("detector: multi-scale and prototype masks are both off: nothing to inpaint");
  if (settings_.multiscale && settings_.scales.empty()) throw InputError("detector: multi-scale masks need at least one scale");
  packing_ = parse_mask_packing(settings_.mask_packing);
}

AnomalyDetector::AnomalyDetector(Inpainter& inpainter, DistanceFn distance, InferenceSettings settings, PrototypeFeatures prototype)
    : AnomalyDetector(inpainter, std::make_shared<PairDistance>(std::move(distance)), std::move(settings), std::move(prototype)) {}

torch::Tensor AnomalyDetector::prototype_bank(const torch::Tensor& shots) const {
  torch::NoGradGuard no_grad;
  if (!prototype_.network) throw std::logic_error("detector: no prototype feature network");
  EfficientNet network = prototype_.network;
  const torch::Device device = network->parameters().front().device();
  return build_prototype_bank(network, shots.to(device, torch::kFloat), prototype_.options);
}

void AnomalyDetector::set_class(ClassContext context) {
  inpainter_.set_class(context.conditioning, context.strength);
  bank_ = context.prototype_bank;
}

Detection AnomalyDetector::detect(const torch::Tensor& image, uint64_t seed) {
  torch::NoGradGuard no_grad;
  torch::Tensor error;
  if (bank_.defined() && settings_.prototype_mask) {
    if (!prototype_.network) throw std::logic_error("detector: a prototype bank without its feature network");
    EfficientNet network = prototype_.network;
    error = prototype_error(network, image, bank_, prototype_.options);  // eq. (14)
  }
  return detect(image, seed, error);
}

const MaskSet& AnomalyDetector::grid_masks_for(int64_t height, int64_t width) {
  auto it = mask_cache_.find({height, width});
  if (it == mask_cache_.end()) {
    MaskSet set = multiscale_masks(height, width, settings_.scales, inpainter_.alignment(), packing_);
    set.masks = set.masks.to(inpainter_.device());  // uploaded once per size, not per image
    it = mask_cache_.emplace(std::make_pair(height, width), std::move(set)).first;
  }
  return it->second;
}

Detection AnomalyDetector::detect(const torch::Tensor& image, uint64_t seed, const torch::Tensor& prototype_error) {
  torch::NoGradGuard no_grad;
  if (image.dim() != 4 || image.size(0) != 1 || image.size(1) != 3) throw ShapeError("detector: image must be [1, 3, H, W]");
  const int64_t height = image.size(2), width = image.size(3);
  const torch::Device device = inpainter_.device();
  // The score maths run in float32 on the inpainter's device whatever the models' dtype: x̂ never
  // travels to the host and back between the inpainter and the distance.
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(device);
  const torch::Tensor x = (device.is_cuda() && image.device().is_cpu() ? image.pin_memory() : image).to(device, torch::kFloat, device.is_cuda());
  Detection out;

  // 1. masks: multi-scale grids (§4.2, cached per image size) and the prototype-guided mask (eq. 15)
  std::vector<torch::Tensor> masks;
  std::vector<int64_t> owner;  // per mask: index into scales, or -1 for the prototype mask
  if (settings_.multiscale) {
    const MaskSet& set = grid_masks_for(height, width);
    masks.push_back(set.masks);
    owner = set.scale_index;
  }
  const bool with_prototype = settings_.prototype_mask && prototype_error.defined();
  if (with_prototype) {
    out.prototype_mask = prototype_mask(prototype_error.to(torch::kCPU, torch::kFloat), height, width);
    // An empty mask (an error map without a split) inpaints nothing: S_pg = 0 there (eq. 20).
    if (out.prototype_mask.sum().item<double>() > 0) {
      masks.push_back(out.prototype_mask.view({1, 1, height, width}).to(device));
      owner.push_back(-1);
    }
  }
  if (!settings_.multiscale && !with_prototype)
    throw InputError("detector: the prototype-guided mask alone needs the class's prototype bank (at least one shot)");
  const torch::Tensor all_masks = masks.empty() ? torch::zeros({0, 1, height, width}, f32) : masks.size() == 1 ? masks[0] : torch::cat(masks, 0);
  out.masks = all_masks.size(0);

  // 2. inpaint in batches; D(x, x̂) (eq. 16–17); accumulate Σ M ⊙ D per scale (eq. 18) and for
  //    the prototype mask (eq. 20) as the batches come, so that no more than one batch of
  //    inpainted images is ever held
  const int64_t scales = static_cast<int64_t>(settings_.scales.size());
  std::vector<torch::Tensor> scale_maps(settings_.multiscale ? scales : 0);
  for (auto& s : scale_maps) s = torch::zeros({height, width}, f32);
  std::vector<torch::Tensor> composites(settings_.save_inpainted ? scale_maps.size() : 0);
  for (auto& c : composites) c = torch::zeros({3, height, width}, f32);
  torch::Tensor s_pg = torch::zeros({height, width}, f32), prototype_inpainted;
  const int64_t calls_before = inpainter_.unet_calls();
  inpainter_.begin_image(image, seed);
  distance_->begin_image(x);  // φ(x) once per image
  const int64_t batch = std::max<int64_t>(1, settings_.mask_batch);
  for (int64_t start = 0; start < out.masks; start += batch) {
    const int64_t n = std::min(batch, out.masks - start);
    const torch::Tensor m = all_masks.narrow(0, start, n);
    const torch::Tensor x_hat = inpainter_.inpaint(m).to(device, torch::kFloat);
    if (x_hat.dim() != 4 || x_hat.size(0) != n || x_hat.size(1) != 3 || x_hat.size(2) != height || x_hat.size(3) != width)
      throw ShapeError("detector: the inpainter returned a wrong shape");
    const torch::Tensor d = distance_->distance(x_hat).to(device, torch::kFloat);  // [n, 1, H, W]
    if (d.dim() != 4 || d.size(0) != n || d.size(1) != 1 || d.size(2) != height || d.size(3) != width)
      throw ShapeError("detector: the distance returned a wrong shape");
    for (int64_t i = 0; i < n; ++i) {
      const int64_t o = owner[static_cast<std::size_t>(start + i)];
      const torch::Tensor mi = m[i];  // [1, H, W]
      if (o >= 0) {
        scale_maps[o].add_(mi[0] * d[i][0]);  // eq. (18)
        if (settings_.save_inpainted) composites[o].add_(mi * x_hat[i]);
      } else {
        s_pg = mi[0] * d[i][0];  // eq. (20)
        prototype_inpainted = x_hat[i];
      }
    }
  }
  out.unet_calls = inpainter_.unet_calls() - calls_before;

  // 3. eq. (19) harmonic mean over scales, eq. (21) fusion, smoothing, S_I = max
  torch::Tensor fused;
  if (settings_.multiscale) out.s_ms = harmonic_mean(scale_maps);
  if (with_prototype) out.s_pg = s_pg;
  if (settings_.multiscale && with_prototype)
    fused = fuse_scores(out.s_ms, out.s_pg, settings_.alpha);
  else
    fused = settings_.multiscale ? out.s_ms : out.s_pg;
  // The blur (§4.3, σ in pixels) runs at the model resolution, before map_to_size() resizes the map
  // to the image's own size. The results come back to the host once, at the end.
  auto to_host = [](const torch::Tensor& t) { return t.defined() ? t.to(torch::kCPU) : t; };
  out.map = to_host(gaussian_blur(fused, settings_.blur_sigma)).contiguous();
  out.s_ms = to_host(out.s_ms);
  out.s_pg = to_host(out.s_pg);
  for (const auto& s : scale_maps) out.scale_maps.push_back(to_host(s));
  if (!torch::isfinite(out.map).all().item<bool>()) throw InputError("detector: the anomaly map holds NaN or Inf (check the model's weights)");
  out.score = image_score(out.map);
  if (settings_.save_inpainted) {
    for (const auto& c : composites) out.inpainted.push_back(to_host(c));
    if (prototype_inpainted.defined()) out.inpainted.push_back(to_host(prototype_inpainted));
  }
  return out;
}

}  // namespace anomalysd

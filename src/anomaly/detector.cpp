#include "anomalysd/anomaly/detector.h"

#include "anomalysd/anomaly/prototype.h"
#include "anomalysd/anomaly/scores.h"
#include "anomalysd/io/errors.h"

namespace anomalysd {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t noise_seed(uint64_t run_seed, uint64_t image_identity) { return splitmix64(run_seed ^ splitmix64(image_identity)); }

AnomalyDetector::AnomalyDetector(Inpainter& inpainter, DistanceFn distance, DetectorSettings settings)
    : inpainter_(inpainter), distance_(std::move(distance)), settings_(std::move(settings)) {
  if (!settings_.multiscale && !settings_.prototype_mask)
    throw InputError("detector: multi-scale and prototype masks are both off: nothing to inpaint");
  if (settings_.multiscale && settings_.scales.empty()) throw InputError("detector: multi-scale masks need at least one scale");
}

Detection AnomalyDetector::detect(const torch::Tensor& image, uint64_t seed, const torch::Tensor& prototype_error) {
  torch::NoGradGuard no_grad;
  if (image.dim() != 4 || image.size(0) != 1 || image.size(1) != 3) throw ShapeError("detector: image must be [1, 3, H, W]");
  const int64_t height = image.size(2), width = image.size(3);
  const torch::Tensor x = image.to(torch::kCPU, torch::kFloat);
  Detection out;

  // 1. masks: multi-scale grids (§4.2) and the prototype-guided mask (eq. 15)
  std::vector<torch::Tensor> masks;
  std::vector<int64_t> owner;  // per mask: index into scales, or -1 for the prototype mask
  if (settings_.multiscale) {
    const MaskSet set = multiscale_masks(height, width, settings_.scales, inpainter_.alignment(), settings_.packing);
    masks.push_back(set.masks);
    owner = set.scale_index;
  }
  const bool with_prototype = settings_.prototype_mask && prototype_error.defined();
  if (with_prototype) {
    out.prototype_mask = prototype_mask(prototype_error.to(torch::kCPU, torch::kFloat), height, width);
    // An empty mask (an error map without a split) inpaints nothing: S_pg = 0 there (eq. 20).
    if (out.prototype_mask.sum().item<double>() > 0) {
      masks.push_back(out.prototype_mask.view({1, 1, height, width}));
      owner.push_back(-1);
    }
  }
  if (!settings_.multiscale && !with_prototype)
    throw InputError("detector: the prototype-guided mask alone needs the class's prototype bank (at least one shot)");
  const torch::Tensor all_masks = masks.empty() ? torch::zeros({0, 1, height, width}) : torch::cat(masks, 0);
  out.masks = all_masks.size(0);

  // 2. inpaint in batches; D(x, x̂) (eq. 16–17); accumulate Σ M ⊙ D per scale (eq. 18) and for
  //    the prototype mask (eq. 20) as the batches come, so that no more than one batch of
  //    inpainted images is ever held
  const int64_t scales = static_cast<int64_t>(settings_.scales.size());
  std::vector<torch::Tensor> scale_maps(settings_.multiscale ? scales : 0);
  for (auto& s : scale_maps) s = torch::zeros({height, width});
  std::vector<torch::Tensor> composites(settings_.keep_inpainted ? scale_maps.size() : 0);
  for (auto& c : composites) c = torch::zeros({3, height, width});
  torch::Tensor s_pg = torch::zeros({height, width}), prototype_inpainted;
  const int64_t calls_before = inpainter_.unet_calls();
  inpainter_.begin_image(x, seed);
  const int64_t batch = std::max<int64_t>(1, settings_.mask_batch);
  for (int64_t start = 0; start < out.masks; start += batch) {
    const int64_t n = std::min(batch, out.masks - start);
    const torch::Tensor m = all_masks.narrow(0, start, n);
    const torch::Tensor x_hat = inpainter_.inpaint(m).to(torch::kCPU, torch::kFloat);
    if (x_hat.dim() != 4 || x_hat.size(0) != n || x_hat.size(1) != 3 || x_hat.size(2) != height || x_hat.size(3) != width)
      throw ShapeError("detector: the inpainter returned a wrong shape");
    const torch::Tensor d = distance_(x.expand({n, 3, height, width}), x_hat).to(torch::kCPU, torch::kFloat);  // [n, 1, H, W]
    for (int64_t i = 0; i < n; ++i) {
      const int64_t o = owner[static_cast<std::size_t>(start + i)];
      const torch::Tensor mi = m[i];  // [1, H, W]
      if (o >= 0) {
        scale_maps[o].add_(mi[0] * d[i][0]);  // eq. (18)
        if (settings_.keep_inpainted) composites[o].add_(mi * x_hat[i]);
      } else {
        s_pg = mi[0] * d[i][0];  // eq. (20)
        prototype_inpainted = x_hat[i];
      }
    }
  }
  out.unet_calls = inpainter_.unet_calls() - calls_before;

  // 3. eq. (19) harmonic mean over scales, eq. (21) fusion, smoothing, S_I = max
  torch::Tensor fused;
  if (settings_.multiscale) {
    out.s_ms = harmonic_mean(scale_maps);
    out.scale_maps = scale_maps;
  }
  if (with_prototype) out.s_pg = s_pg;
  if (settings_.multiscale && with_prototype)
    fused = fuse_scores(out.s_ms, out.s_pg, settings_.alpha);
  else
    fused = settings_.multiscale ? out.s_ms : out.s_pg;
  out.map = gaussian_blur(fused, settings_.blur_sigma).contiguous();
  if (!torch::isfinite(out.map).all().item<bool>()) throw InputError("detector: the anomaly map holds NaN or Inf (check the model's weights)");
  out.score = image_score(out.map);
  if (settings_.keep_inpainted) {
    out.inpainted = composites;
    if (prototype_inpainted.defined()) out.inpainted.push_back(prototype_inpainted);
  }
  return out;
}

}  // namespace anomalysd

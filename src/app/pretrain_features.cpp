// The feature networks' pre-training (`anomalysd pretrain-features`, the demo's
// `--plan pretrained_features=1`): the real AlexNet with LPIPS's lins (the distance D, eq. 16–17) and
// EfficientNet-B6 (the prototype bank, eq. 12–14), trained from scratch on normal images and
// photographs — never a benchmark's — in place of their ImageNet pre-training.
//
// Two tasks on one trunk:
//   - where an altered copy of an image differs from it (self-supervised): a foreign region — a
//     smooth random blob or stroke of another image's texture or a flat colour, as DRAEM's synthetic
//     anomalies (Zavrtanik et al. 2021) — against normal re-renderings (blur, noise, a VAE-like
//     down/up-sampling, a blob shifted a few pixels, for textures a blob of another image of the
//     class), learnt as a per-pixel logistic regression on exactly the distance map the method uses;
//   - which class (a linear head on the globally pooled taps, weight 0.2).
// Measured first and dropped: classification alone, and with rotation prediction (the bootstrap's
// classes are orientation-free, so rotation stays at chance), made the demo's maps worse than random
// features — the method compares features locally. What the result is worth: README, "What the demo
// shows" (for D a random AlexNet still wins).
#include "app/demo_internal.h"

#include <chrono>
#include <filesystem>
#include <functional>
#include <set>

#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "anomalysd/app/demo.h"
#include "anomalysd/app/method.h"
#include "anomalysd/data/dataset.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/io/safetensors.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/models/weights.h"
#include "anomalysd/metrics/metrics.h"
#include "anomalysd/models/alexnet_lpips.h"
#include "anomalysd/models/efficientnet.h"
#include "anomalysd/train/optim.h"
#include "anomalysd/util/progress.h"

namespace anomalysd::demo_detail {

namespace fs = std::filesystem;
namespace nn = torch::nn;

namespace {

// Trunk: images [B, 3, H, W] in [0, 1] -> the taps the distance compares (all pooled for the class head).
using Trunk = std::function<std::vector<torch::Tensor>(const torch::Tensor&)>;

torch::Tensor pooled(const std::vector<torch::Tensor>& taps) {
  std::vector<torch::Tensor> parts;
  for (const auto& t : taps) parts.push_back(t.mean({2, 3}));
  return torch::cat(parts, 1);
}

// A foreign-region mask [H, W] in {0, 1}: a thresholded smooth random field (a blob of 1–12 % of
// the image) or a random stroke, as DRAEM's Perlin masks.
cv::Mat foreign_mask(cv::RNG& rng, int size) {
  cv::Mat mask = cv::Mat::zeros(size, size, CV_32F);
  if (rng.uniform(0, 3) == 0) {
    std::vector<cv::Point> pts;
    cv::Point p(rng.uniform(0, size), rng.uniform(0, size));
    double angle = rng.uniform(0.0, 2 * M_PI);
    for (int i = 0, n = rng.uniform(2, 6); i < n; ++i) {
      pts.push_back(p);
      angle += rng.uniform(-0.8, 0.8);
      const double len = rng.uniform(0.05, 0.2) * size;
      p += cv::Point(static_cast<int>(len * std::cos(angle)), static_cast<int>(len * std::sin(angle)));
    }
    cv::polylines(mask, pts, false, 1.0, rng.uniform(1, std::max(2, size / 24)), cv::LINE_AA);
    cv::threshold(mask, mask, 0.5, 1.0, cv::THRESH_BINARY);
    return mask;
  }
  const int cells = rng.uniform(4, 9);
  cv::Mat coarse(cells, cells, CV_32F), field;
  rng.fill(coarse, cv::RNG::UNIFORM, 0.0, 1.0);
  cv::resize(coarse, field, cv::Size(size, size), 0, 0, cv::INTER_CUBIC);
  // The threshold that keeps the chosen fraction of the image: the field's quantile.
  cv::Mat sorted = field.reshape(1, 1).clone();
  cv::sort(sorted, sorted, cv::SORT_EVERY_ROW | cv::SORT_DESCENDING);
  const int keep = std::max(1, static_cast<int>(rng.uniform(0.01, 0.12) * size * size));
  cv::threshold(field, mask, sorted.at<float>(0, keep - 1) - 1e-6f, 1.0, cv::THRESH_BINARY);
  return mask;
}

// A batch of both tasks. `images`: random images, flipped and turned at random (the classes are
// orientation-free), brightness and contrast jittered. `altered`: each one re-rendered — a little
// noise, blur and a brightness change, and in half of them a blob shifted by a few pixels (a normal
// re-rendering, as an inpainting of a normal region is) — and in the other half a foreign region:
// another image's texture (at 50–100 % opacity) or a flat colour. `masks`: the foreign regions.
struct TaskBatch {
  torch::Tensor images, altered, classes, masks;  // masks [B, 1, H, W]
};

torch::Tensor blob_tensor(cv::RNG& rng, int64_t size) {
  const cv::Mat m = foreign_mask(rng, static_cast<int>(size));
  return torch::from_blob(const_cast<float*>(m.ptr<float>()), {1, 1, size, size}, torch::kFloat).clone();
}

TaskBatch sample_batch(const torch::Tensor& images, const torch::Tensor& labels, const std::set<int64_t>& textures,
                       const std::map<int64_t, std::vector<int64_t>>& by_class, int64_t batch, at::Generator& gen, cv::RNG& rng) {
  const int64_t n = images.size(0), size = images.size(2);
  const torch::Tensor idx = torch::randint(n, {batch}, gen, torch::kLong);
  torch::Tensor x = images.index_select(0, idx);
  const torch::Tensor flip = torch::rand({batch, 1, 1, 1}, gen) < 0.5;
  x = torch::where(flip, x.flip({3}), x);
  std::vector<torch::Tensor> turned;
  for (int64_t i = 0; i < batch; ++i) turned.push_back(torch::rot90(x.narrow(0, i, 1), rng.uniform(0, 4), {2, 3}));
  x = torch::cat(turned, 0);
  const torch::Tensor contrast = 1.0 + 0.2 * (torch::rand({batch, 1, 1, 1}, gen) - 0.5);
  const torch::Tensor brightness = 0.1 * (torch::rand({batch, 1, 1, 1}, gen) - 0.5);
  const torch::Tensor mean = x.mean({1, 2, 3}, true);
  x = ((x - mean) * contrast + mean + brightness).clamp(0.0, 1.0).contiguous();
  // The re-rendering: blur (a mix with a 3×3 box filter), noise, brightness.
  const torch::Tensor blur = 0.5 * torch::rand({batch, 1, 1, 1}, gen);
  const torch::Tensor box = torch::avg_pool2d(torch::replication_pad2d(x, {1, 1, 1, 1}), 3, 1);
  torch::Tensor y = x * (1 - blur) + box * blur + 0.03 * torch::rand({batch, 1, 1, 1}, gen) * torch::randn(x.sizes(), gen) +
                    0.04 * (torch::rand({batch, 1, 1, 1}, gen) - 0.5);
  // Half of them also lose detail as a VAE round trip does (down- and up-sampling by 2).
  const torch::Tensor soft = torch::upsample_bilinear2d(torch::avg_pool2d(y, 2), {size, size}, false);
  y = torch::where(torch::rand({batch, 1, 1, 1}, gen) < 0.5, soft, y);
  torch::Tensor masks = torch::zeros({batch, 1, size, size});
  const auto* label = labels.data_ptr<int64_t>();
  const auto* picked = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < batch; ++i) {
    torch::Tensor yi = y.narrow(0, i, 1);
    const torch::Tensor m = blob_tensor(rng, size);
    torch::Tensor fill;
    if (rng.uniform(0, 2) == 0) {
      // A normal re-rendering: for a texture another image of its class (an inpainting of a
      // texture draws a new realisation of it), for an object its own content a few pixels off.
      const int64_t cls = label[picked[i]];
      const bool texture = textures.count(cls) > 0;
      if (texture) {
        const auto& same = by_class.at(cls);
        fill = torch::rot90(images.narrow(0, same[rng.uniform(0, static_cast<int>(same.size()))], 1), rng.uniform(0, 4), {2, 3});
      } else {
        fill = torch::roll(yi, {rng.uniform(-3, 4), rng.uniform(-3, 4)}, {2, 3});
      }
    } else {
      masks.narrow(0, i, 1).copy_(m);
      if (rng.uniform(0, 3) == 0)
        fill = torch::rand({1, 3, 1, 1}, gen).expand({1, 3, size, size});
      else
        fill = torch::rot90(images.narrow(0, rng.uniform(0, static_cast<int>(n)), 1), rng.uniform(0, 4), {2, 3});
      fill = yi + (fill - yi) * rng.uniform(0.5, 1.0);
    }
    yi.copy_(yi * (1 - m) + fill * m);
  }
  return {x, y.clamp(0.0, 1.0).contiguous(), labels.index_select(0, idx), masks};
}

// Layer l's distance of two unit-normalised taps, [B, 1, h, w]: for AlexNet LPIPS's own
// weighted_difference (its lins), for EfficientNet the channel mean.
using LayerDistance = std::function<torch::Tensor(int, const torch::Tensor&, const torch::Tensor&)>;

// The distance map of the pair task (eq. 17's form): per tap the layer distance of the
// unit-normalised features, bilinearly upsampled to H × W and summed over taps.
torch::Tensor pair_distance(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b, const LayerDistance& layer_distance,
                            int64_t height, int64_t width) {
  namespace F = torch::nn::functional;
  torch::Tensor map;
  for (std::size_t l = 0; l < a.size(); ++l) {
    const torch::Tensor d = layer_distance(static_cast<int>(l), unit_normalize(a[l]), unit_normalize(b[l]));
    const torch::Tensor up = F::interpolate(d, F::InterpolateFuncOptions().size(std::vector<int64_t>{height, width}).mode(torch::kBilinear).align_corners(false));
    map = map.defined() ? map + up : up;
  }
  return map;
}

std::map<int64_t, std::vector<int64_t>> indices_by_class(const torch::Tensor& labels) {
  std::map<int64_t, std::vector<int64_t>> out;
  for (int64_t i = 0; i < labels.size(0); ++i) out[labels[i].item<int64_t>()].push_back(i);
  return out;
}

// Held out: the class accuracy on unaltered images, and how well the pair distance ranks the
// foreign pixels of altered ones (pixel AUROC).
std::pair<double, double> heldout_scores(const Trunk& trunk, nn::Linear& cls, const LayerDistance& layer_distance, const torch::Tensor& images,
                                         const torch::Tensor& labels, const std::set<int64_t>& textures, uint64_t seed) {
  torch::NoGradGuard no_grad;
  const auto by_class = indices_by_class(labels);
  int64_t right = 0;
  std::vector<torch::Tensor> pixel_scores, pixel_labels;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  cv::RNG rng(seed);
  for (int64_t start = 0; start < images.size(0); start += 32) {
    const int64_t n = std::min<int64_t>(32, images.size(0) - start);
    right += cls->forward(pooled(trunk(images.narrow(0, start, n)))).argmax(1).eq(labels.narrow(0, start, n)).sum().item<int64_t>();
    const TaskBatch b = sample_batch(images, labels, textures, by_class, n, gen, rng);
    pixel_scores.push_back(pair_distance(trunk(b.images), trunk(b.altered), layer_distance, images.size(2), images.size(3)).flatten());
    pixel_labels.push_back((b.masks > 0.5).flatten());
  }
  const double accuracy = static_cast<double>(right) / std::max<int64_t>(1, images.size(0));
  return {accuracy, auroc(torch::cat(pixel_scores), torch::cat(pixel_labels))};
}

// Trains `net` (with the parameters of `layer_distance`, if any, among net's: LPIPS's lins, kept ≥ 0
// as LPIPS does) on both tasks:
// the pair task as a per-pixel logistic regression of the foreign mask on the distance map, and
// the class task (weight 0.2) on the pooled taps of the unaltered images.
FeatureNetReport train_two_tasks(const std::string& arch, nn::Module& net, const Trunk& trunk, const LayerDistance& layer_distance,
                                 const std::vector<torch::Tensor>& nonnegative,
                                 const LabelledImages& data, const FeatureTrainPlan& plan, uint64_t seed) {
  const auto start = std::chrono::steady_clock::now();
  torch::manual_seed(seed);
  // Every tenth image of each class is held out to measure what the network learnt.
  std::vector<int64_t> train_idx, held_idx;
  std::map<int64_t, int64_t> seen;
  const auto* label = data.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < data.labels.size(0); ++i) (seen[label[i]]++ % 10 == 9 ? held_idx : train_idx).push_back(i);
  const torch::Tensor train_images = data.images.index_select(0, torch::tensor(train_idx, torch::kLong));
  const torch::Tensor train_labels = data.labels.index_select(0, torch::tensor(train_idx, torch::kLong));
  const torch::Tensor held_images = data.images.index_select(0, torch::tensor(held_idx, torch::kLong));
  const torch::Tensor held_labels = data.labels.index_select(0, torch::tensor(held_idx, torch::kLong));
  const int64_t height = data.images.size(2), width = data.images.size(3);
  const std::set<int64_t>& textures = data.texture_classes;
  const auto train_by_class = indices_by_class(train_labels);

  int64_t pooled_channels = 0;
  {
    torch::NoGradGuard no_grad;
    net.eval();
    for (const auto& t : trunk(train_images.narrow(0, 0, 2))) pooled_channels += t.size(1);
  }
  nn::Linear cls(pooled_channels, static_cast<int64_t>(data.classes.size()));
  torch::Tensor logit_scale = torch::full({1}, 5.0).set_requires_grad(true), logit_bias = torch::full({1}, -3.0).set_requires_grad(true);
  std::vector<NamedParameter> params;
  for (const auto& p : net.named_parameters(true)) {
    p.value().set_requires_grad(true);
    params.push_back({p.key(), p.value()});
  }
  for (const auto& p : cls->named_parameters(true)) params.push_back({"cls." + p.key(), p.value()});
  params.push_back({"logit_scale", logit_scale});
  params.push_back({"logit_bias", logit_bias});
  Adam adam(params, plan.lr);
  FeatureNetReport r;
  r.initial_foreign_auroc = heldout_scores(trunk, cls, layer_distance, held_images, held_labels, textures, seed + 17).second;
  net.train();
  cv::RNG rng(seed);
  ProgressBar bar("bootstrap " + arch, plan.steps, "step");
  double loss_sum = 0;
  for (int64_t step = 0; step < plan.steps; ++step) {
    at::Generator gen = at::detail::createCPUGenerator(seed * 1000003 + static_cast<uint64_t>(step));
    const TaskBatch b = sample_batch(train_images, train_labels, textures, train_by_class, plan.batch, gen, rng);
    adam.zero_grad();
    const auto taps = trunk(torch::cat({b.images, b.altered}, 0));
    std::vector<torch::Tensor> clean, altered;
    for (const auto& t : taps) {
      clean.push_back(t.narrow(0, 0, plan.batch));
      altered.push_back(t.narrow(0, plan.batch, plan.batch));
    }
    const torch::Tensor d = pair_distance(clean, altered, layer_distance, height, width);
    const torch::Tensor loss = torch::binary_cross_entropy_with_logits(d * logit_scale + logit_bias, b.masks) +
                               0.2 * torch::cross_entropy_loss(cls->forward(pooled(clean)), b.classes);
    loss.backward();
    clip_gradients(params, 5.0);
    adam.step();
    {
      torch::NoGradGuard no_grad;
      for (const auto& w : nonnegative) w.clamp_min_(0.0);
    }
    loss_sum += loss.item<double>();
    bar.advance();
  }
  bar.finish();
  net.eval();
  for (auto& p : net.parameters()) p.set_requires_grad(false);
  r.arch = arch;
  r.steps = plan.steps;
  std::tie(r.class_accuracy, r.foreign_auroc) = heldout_scores(trunk, cls, layer_distance, held_images, held_labels, textures, seed + 17);
  r.heldout_images = held_images.size(0);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::debug("bootstrap {}: {} steps in {:.0f} s, mean loss {:.3f}; held out: class accuracy {:.3f}, foreign-region AUROC {:.3f} (at init {:.3f})",
                arch, plan.steps, r.seconds, loss_sum / std::max<int64_t>(1, plan.steps), r.class_accuracy, r.foreign_auroc, r.initial_foreign_auroc);
  return r;
}

std::map<std::string, std::string> provenance(const std::string& arch, const std::string& how, const LabelledImages& data,
                                              const FeatureNetReport* report) {
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"anomalysd_init", "bootstrap"}, {"arch", arch}, {"how", how}};
  meta["trained_on"] = std::to_string(data.images.size(0)) + " images of " + std::to_string(data.classes.size()) + " classes: " + data.source;
  if (report) {
    meta["steps"] = std::to_string(report->steps);
    char acc[96];
    std::snprintf(acc, sizeof acc, "class accuracy %.3f, foreign-region AUROC %.3f (%.3f at init) on %lld held-out images",
                  report->class_accuracy, report->foreign_auroc, report->initial_foreign_auroc,
                  static_cast<long long>(report->heldout_images));
    meta["heldout_accuracy"] = acc;
  }
  return meta;
}

}  // namespace

// A folder of photographs (`pretrain-features --photos DIR`): every PNG/JPEG in `dir`, sorted by name.
std::vector<fs::path> list_photos(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string ext = e.path().extension().string();
    if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// `count` random square crops of a photograph (each 20–60 % of its shorter side, anywhere in it),
// area-resized to size × size: the scales at which the demo's 64-pixel images see texture.
std::vector<cv::Mat> photo_crops(const fs::path& photo, int count, int size, uint64_t seed) {
  const cv::Mat image = read_rgb_float(photo.string());
  cv::RNG rng(seed);
  std::vector<cv::Mat> out;
  const int shorter = std::min(image.rows, image.cols);
  for (int i = 0; i < count; ++i) {
    const int side = std::max(size, static_cast<int>(shorter * rng.uniform(0.2, 0.6)));
    const int x = rng.uniform(0, image.cols - std::min(side, image.cols) + 1), y = rng.uniform(0, image.rows - std::min(side, image.rows) + 1);
    cv::Mat crop;
    cv::resize(image(cv::Rect(x, y, std::min(side, image.cols), std::min(side, image.rows))), crop, cv::Size(size, size), 0, 0, cv::INTER_AREA);
    out.push_back(crop);
  }
  return out;
}

std::vector<FeatureNetReport> pretrain_feature_networks(const LabelledImages& data, const FeatureTrainPlan& alexnet_plan,
                                                        const FeatureTrainPlan& efficientnet_plan, uint64_t seed, const FeaturePaths& out) {
  std::vector<FeatureNetReport> reports;
  const std::string tasks = "from scratch on " + std::to_string(data.classes.size()) +
                            " classes: where an altered copy differs by a foreign region (per-pixel, on the distance map) + which class";
  {
    torch::manual_seed(seed);
    // LPIPS itself: its AlexNet is the trunk, its lins (from all ones, kept ≥ 0) weight the layers.
    Lpips lpips;
    std::vector<torch::Tensor> lins;
    for (LpipsLinImpl* lin : {lpips->lin0.get(), lpips->lin1.get(), lpips->lin2.get(), lpips->lin3.get(), lpips->lin4.get()}) {
      lins.push_back(lin->model[1]->as<nn::Conv2dImpl>()->weight);
      torch::NoGradGuard no_grad;
      lins.back().fill_(1.0);
    }
    const Trunk trunk = [&](const torch::Tensor& x) { return lpips->net->forward(lpips_scale_input(x, /*normalize=*/true)); };
    const LayerDistance distance = [&](int l, const torch::Tensor& f0, const torch::Tensor& f1) { return lpips->weighted_difference(l, f0, f1); };
    reports.push_back(train_two_tasks("alexnet", *lpips, trunk, distance, lins, data, alexnet_plan, seed + 1));
    save_safetensors(out.alexnet, module_tensors(*lpips->net), provenance("alexnet", tasks, data, &reports.back()));
    NamedTensors lin_tensors;
    for (const auto& [name, t] : module_tensors(*lpips))
      if (name.rfind("lin", 0) == 0) lin_tensors.emplace_back(name, t);
    save_safetensors(out.lpips, lin_tensors,
                     provenance("lpips", "LPIPS's channel weights learnt with the AlexNet trunk on the same tasks (where an altered copy differs by a foreign region; from all ones, kept >= 0)", data,
                                &reports.back()));
  }
  {
    torch::manual_seed(seed + 2);
    EfficientNet efficientnet(EfficientNetConfig::b(6));
    init_random_efficientnet(*efficientnet);
    // The taps the method reads (stride 8 and 16). The method never runs the stages after them
    // (features.6–8): they are trained (by the class head) only when plan.deep is set.
    const std::vector<int64_t> taps = efficientnet_plan.deep ? std::vector<int64_t>{3, 5, 8} : std::vector<int64_t>{3, 5};
    const Trunk trunk = [&](const torch::Tensor& x) {
      std::vector<torch::Tensor> t;
      for (auto& [i, f] : efficientnet->features_at(imagenet_normalize(x), taps)) t.push_back(f);
      return t;
    };
    const LayerDistance channel_mean = [](int, const torch::Tensor& f0, const torch::Tensor& f1) { return (f0 - f1).pow(2).mean(1, true); };
    reports.push_back(train_two_tasks("efficientnet_b6", *efficientnet, trunk, channel_mean, {}, data, efficientnet_plan, seed + 3));
    NamedTensors tensors;
    for (auto& [name, t] : module_tensors(*efficientnet))
      if (name.rfind("classifier.", 0) != 0) tensors.emplace_back(name, t);
    save_safetensors(out.efficientnet, tensors,
                     provenance("efficientnet_b6", tasks + (efficientnet_plan.deep ? "" : "; features.6-8, which the method never runs, are at their initialisation"),
                                data, &reports.back()));
  }
  return reports;
}

}  // namespace anomalysd::demo_detail

namespace anomalysd {

std::vector<PretrainedFeatureNet> run_pretrain_features(const PretrainFeaturesOptions& options) {
  using namespace demo_detail;
  if (options.output.empty()) throw InputError("pretrain-features: --output is required");
  // Every class's normal training images, and the photographs' crops, one class each.
  LabelledImages data;
  std::vector<torch::Tensor> images, labels;
  auto add = [&](const torch::Tensor& image) {
    images.push_back(image);
    labels.push_back(torch::full({1}, static_cast<int64_t>(data.classes.size()), torch::kLong));
  };
  if (!options.data.empty()) {
    const Dataset dataset = load_dataset("folder", options.data);
    for (const ClassData& c : dataset.classes) {
      for (const auto& p : c.train_good) add(read_model_image(p, options.size).tensor);
      if (std::find(options.texture_classes.begin(), options.texture_classes.end(), c.name) != options.texture_classes.end())
        data.texture_classes.insert(static_cast<int64_t>(data.classes.size()));
      data.classes.push_back(c.name);
    }
  }
  const auto photos = list_photos(options.photos);
  for (std::size_t p = 0; p < photos.size(); ++p) {
    for (const cv::Mat& crop : photo_crops(photos[p], options.crops, static_cast<int>(options.size), options.seed * 31 + p)) add(to_model_tensor(crop, options.size));
    data.texture_classes.insert(static_cast<int64_t>(data.classes.size()));
    data.classes.push_back("photo:" + photos[p].filename().string());
  }
  if (data.classes.size() < 2) throw InputError("pretrain-features: need at least two classes (--data folder classes and/or --photos)");
  data.images = torch::cat(images, 0);
  data.labels = torch::cat(labels, 0);
  data.source = "the normal images of " + (options.data.empty() ? std::string("no dataset") : options.data) + " and crops of " +
                std::to_string(photos.size()) + " photographs" + (options.photos.empty() ? std::string() : " in " + options.photos);
  fs::create_directories(options.output);
  const FeaturePaths out{(fs::path(options.output) / "alexnet.safetensors").string(), (fs::path(options.output) / "efficientnet_b6.safetensors").string(),
                         (fs::path(options.output) / "lpips.safetensors").string()};
  const std::vector<PretrainedFeatureNet> nets = pretrain_feature_networks(
      data, {options.alexnet_steps, options.batch, options.lr}, {options.efficientnet_steps, options.batch, options.lr, options.efficientnet_deep}, options.seed, out);
  for (const auto& r : nets)
    spdlog::info("{}: {} steps in {:.0f} s; held out: class accuracy {:.3f}, foreign-region AUROC {:.3f} ({:.3f} at init)", r.arch, r.steps,
                 r.seconds, r.class_accuracy, r.foreign_auroc, r.initial_foreign_auroc);
  spdlog::info("wrote {}, {}, {} ({} images of {} classes)", out.alexnet, out.efficientnet, out.lpips, data.images.size(0), data.classes.size());
  return nets;
}

}  // namespace anomalysd

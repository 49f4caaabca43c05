#include "anomalysd/data/photo_benchmark.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <opencv2/imgproc.hpp>

#include "anomalysd/data/image_io.h"
#include "anomalysd/io/atomic_write.h"
#include "anomalysd/io/errors.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace {

// The photograph tiled 3×3 (GIMP's patterns tile seamlessly), as float RGB in [0, 1].
cv::Mat tiled(const cv::Mat& rgb8, int size) {
  cv::Mat f;
  rgb8.convertTo(f, CV_32FC3, 1.0 / 255.0);
  const int reps = std::max(3, (2 * size) / std::max(1, std::min(f.rows, f.cols)) + 2);
  cv::Mat big;
  cv::repeat(f, reps, reps, big);
  return big;
}

// A crop at a random place, scale (±15 %) and rotation (±8°): the camera's variation between parts.
cv::Mat view(cv::RNG& rng, const cv::Mat& photo_rgb8, int size) {
  const cv::Mat big = tiled(photo_rgb8, size);
  const double scale = rng.uniform(0.85, 1.15), angle = rng.uniform(-8.0, 8.0);
  const int side = static_cast<int>(std::ceil(size * scale * 1.5));
  const int x = rng.uniform(0, big.cols - side), y = rng.uniform(0, big.rows - side);
  cv::Mat affine = cv::getRotationMatrix2D(cv::Point2f(side / 2.0f, side / 2.0f), angle, 1.0 / scale);
  affine.at<double>(0, 2) += size / 2.0 - side / 2.0;
  affine.at<double>(1, 2) += size / 2.0 - side / 2.0;
  cv::Mat out;
  cv::warpAffine(big(cv::Rect(x, y, side, side)), out, affine, cv::Size(size, size), cv::INTER_AREA, cv::BORDER_REFLECT);
  return out;
}

// Lighting (gain, offset, a gentle gradient) and sensor noise: every image has them, defects too.
void light_and_noise(cv::RNG& rng, cv::Mat& img) {
  const int n = img.rows;
  const float gain = static_cast<float>(rng.uniform(0.92, 1.08)), offset = static_cast<float>(rng.uniform(-0.03, 0.03));
  const double a = rng.uniform(0.0, 2 * M_PI), strength = rng.uniform(0.0, 0.05);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const float g = static_cast<float>(strength * ((x - n / 2.0) * std::cos(a) + (y - n / 2.0) * std::sin(a)) / n);
      auto& p = img.at<cv::Vec3f>(y, x);
      for (int c = 0; c < 3; ++c) p[c] = p[c] * gain + offset + g;
    }
  cv::Mat noise(img.size(), CV_32FC3);
  rng.fill(noise, cv::RNG::NORMAL, 0.0, 0.01);  // from the image's own stream (cv::randn would draw from a global one)
  img += noise;
  cv::min(cv::max(img, 0.0), 1.0, img);
}

cv::Mat to_rgb8(const cv::Mat& f) {
  cv::Mat out;
  f.convertTo(out, CV_8UC3, 255.0);
  return out;
}

// An irregular blob: a polygon of 10 vertices at jittered radii.
cv::Mat blob(cv::RNG& rng, int n, double radius) {
  cv::Mat shape = cv::Mat::zeros(n, n, CV_8U);
  const int margin = static_cast<int>(radius) + 2;
  const cv::Point c(rng.uniform(margin, n - margin), rng.uniform(margin, n - margin));
  std::vector<cv::Point> pts;
  const double a0 = rng.uniform(0.0, 2 * M_PI), stretch = rng.uniform(0.6, 1.0);
  for (int i = 0; i < 10; ++i) {
    const double a = a0 + 2 * M_PI * i / 10, r = radius * rng.uniform(0.6, 1.15);
    pts.emplace_back(c.x + static_cast<int>(std::lround(r * std::cos(a))), c.y + static_cast<int>(std::lround(r * stretch * std::sin(a))));
  }
  cv::fillPoly(shape, std::vector<std::vector<cv::Point>>{pts}, 255, cv::LINE_8);
  return shape;
}

cv::Mat scratch(cv::RNG& rng, int n, double length) {
  cv::Mat shape = cv::Mat::zeros(n, n, CV_8U);
  cv::Point2d p(rng.uniform(n * 0.2, n * 0.8), rng.uniform(n * 0.2, n * 0.8));
  double a = rng.uniform(0.0, M_PI);
  const int segments = 3, thickness = rng.uniform(0, 3) == 0 ? 2 : 1;
  for (int i = 0; i < segments; ++i) {
    const cv::Point2d q = p + cv::Point2d(std::cos(a), std::sin(a)) * (length / segments);
    cv::line(shape, cv::Point(static_cast<int>(p.x), static_cast<int>(p.y)), cv::Point(static_cast<int>(q.x), static_cast<int>(q.y)), 255,
             thickness, cv::LINE_8);
    p = q;
    a += rng.uniform(-0.35, 0.35);
  }
  return shape;
}

uint64_t mix(uint64_t seed, uint64_t salt) {
  uint64_t h = seed * 0x9E3779B97F4A7C15ull + salt;
  h ^= h >> 31;
  return h * 0xBF58476D1CE4E5B9ull;
}

}  // namespace

const std::vector<std::string>& photo_benchmark_defects() {
  static const std::vector<std::string> d = {"foreign", "scratch", "smudge", "stain"};
  return d;
}

// Three streams per image — the view, the defect, the lighting and noise — so that a defective
// image is its normal twin (the same stream) changed inside the mask only.
cv::Mat photo_normal(const cv::Mat& photo_rgb8, uint64_t stream, int size) {
  cv::RNG rng(stream), light(mix(stream, 2));
  cv::Mat img = view(rng, photo_rgb8, size);
  light_and_noise(light, img);
  return to_rgb8(img);
}

cv::Mat photo_defective(const cv::Mat& photo_rgb8, const std::vector<cv::Mat>& foreign_rgb8, const std::string& defect, uint64_t stream,
                        int size, cv::Mat& mask) {
  cv::RNG view_rng(stream), rng(mix(stream, 1)), light(mix(stream, 2));
  cv::Mat img = view(view_rng, photo_rgb8, size);
  const double k = size / 64.0;
  const bool large = rng.uniform(0, 2) == 1;  // small and large defects alike
  cv::Mat shape;
  if (defect == "foreign") {
    if (foreign_rgb8.empty()) throw InputError("photo benchmark: no foreign-material photographs (role heldout, no class) in the photo list");
    shape = blob(rng, size, (large ? 9 : 5) * k);
    const cv::Mat other = view(rng, foreign_rgb8[static_cast<std::size_t>(rng.uniform(0, static_cast<int>(foreign_rgb8.size())))], size);
    other.copyTo(img, shape);
  } else if (defect == "scratch") {
    shape = scratch(rng, size, (large ? 36 : 16) * k);
    // lighter or darker than the texture around it by a third of the range
    const cv::Scalar local = cv::mean(img, shape);
    const double sign = rng.uniform(0, 2) ? 1.0 : -1.0, amount = rng.uniform(0.25, 0.4);
    cv::Mat line(img.size(), CV_32FC3, local + cv::Scalar::all(sign * amount));
    cv::min(cv::max(line, 0.0), 1.0, line);
    line.copyTo(img, shape);
  } else if (defect == "smudge") {
    shape = blob(rng, size, (large ? 10 : 6) * k);
    cv::Mat smeared, grey;
    cv::GaussianBlur(img, smeared, cv::Size(0, 0), 3.0 * k);
    cv::cvtColor(smeared, grey, cv::COLOR_RGB2GRAY);
    cv::cvtColor(grey, grey, cv::COLOR_GRAY2RGB);
    smeared = 0.5 * smeared + 0.5 * grey;
    smeared.copyTo(img, shape);
  } else if (defect == "stain") {
    shape = blob(rng, size, (large ? 10 : 5) * k);
    const cv::Scalar tint(rng.uniform(0.45, 0.6), rng.uniform(0.3, 0.45), rng.uniform(0.15, 0.3));
    const double alpha = rng.uniform(0.45, 0.65);
    cv::Mat tinted = img * (1.0 - alpha) + cv::Mat(img.size(), CV_32FC3, tint) * alpha;
    tinted.copyTo(img, shape);
  } else {
    throw InputError("photo benchmark: unknown defect type '" + defect + "' (foreign, scratch, smudge, stain)");
  }
  light_and_noise(light, img);
  mask = shape;
  return to_rgb8(img);
}

PhotoBenchmarkSummary make_photo_benchmark(const PhotoBenchmarkOptions& options, const std::vector<PhotoSource>& list) {
  if (options.output.empty()) throw InputError("make-photo-benchmark: --output is required");
  if (options.size < 32) throw InputError("make-photo-benchmark: --size must be at least 32");
  const std::vector<PhotoSource> heldout = photos_for_role(list, "heldout", options.photo_root);
  std::vector<cv::Mat> foreign;
  std::vector<std::pair<std::string, cv::Mat>> classes;
  for (const auto& p : heldout) {
    const cv::Mat rgb = read_photo_rgb8(photo_path(p, options.photo_root));
    if (p.cls.empty())
      foreign.push_back(rgb);
    else if (options.classes.empty() || std::find(options.classes.begin(), options.classes.end(), p.cls) != options.classes.end())
      classes.emplace_back(p.cls, rgb);
  }
  for (const auto& c : options.classes)
    if (std::none_of(classes.begin(), classes.end(), [&](const auto& x) { return x.first == c; }))
      throw InputError("make-photo-benchmark: no class '" + c + "' among the held-out photographs (configs/photos.yaml)");
  PhotoBenchmarkSummary summary;
  const auto& defects = photo_benchmark_defects();
  char name[32];
  for (std::size_t ci = 0; ci < classes.size(); ++ci) {
    const auto& [cls, photo] = classes[ci];
    const fs::path dir = fs::path(options.output) / cls;
    fs::create_directories(dir / "train" / "good");
    fs::create_directories(dir / "test" / "good");
    const uint64_t base = mix(options.seed, 1000 + ci);
    // Disjoint parts of the stream for training, normal test and defective test images.
    for (int i = 0; i < options.train; ++i) {
      std::snprintf(name, sizeof name, "%03d.png", i);
      write_png((dir / "train" / "good" / name).string(), photo_normal(photo, mix(base, i), options.size));
    }
    for (int i = 0; i < options.test_good; ++i) {
      std::snprintf(name, sizeof name, "%03d.png", i);
      write_png((dir / "test" / "good" / name).string(), photo_normal(photo, mix(base, 100000 + i), options.size));
    }
    for (int i = 0; i < options.test_bad; ++i) {
      const std::string& defect = defects[static_cast<std::size_t>(i) % defects.size()];
      fs::create_directories(dir / "test" / defect);
      fs::create_directories(dir / "ground_truth" / defect);
      cv::Mat mask;
      const cv::Mat img = photo_defective(photo, foreign, defect, mix(base, 200000 + i), options.size, mask);
      std::snprintf(name, sizeof name, "%03d", i);
      write_png((dir / "test" / defect / (std::string(name) + ".png")).string(), img);
      write_png((dir / "ground_truth" / defect / (std::string(name) + "_mask.png")).string(), mask, false);
    }
    summary.images += options.train + options.test_good + options.test_bad;
    summary.classes.push_back(cls);
  }
  std::string sources = "Held-out real photographs (configs/photos.yaml, role heldout): never in a training set of anomalysd.\n";
  for (const auto& p : heldout)
    sources += photo_path(p, options.photo_root) + "  package " + p.package + "  licence " + p.licence + (p.cls.empty() ? "  (foreign material)" : "  class " + p.cls) + "\n";
  fs::create_directories(options.output);
  write_file_atomically((fs::path(options.output) / "SOURCES.txt").string(), sources);
  return summary;
}

}  // namespace anomalysd

#include "anomalysd/data/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <opencv2/imgproc.hpp>

#include "anomalysd/data/image_io.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/util/hash.h"

namespace anomalysd {

namespace fs = std::filesystem;

namespace {


uint64_t stream_seed(const std::string& cls, uint64_t seed, int64_t index, uint64_t salt) {
  return splitmix64(splitmix64(splitmix64(fnv1a(cls) ^ seed) ^ static_cast<uint64_t>(index)) ^ salt);
}

using Colour = cv::Vec3f;

Colour jitter(cv::RNG& rng, Colour c, float amount) {
  for (int i = 0; i < 3; ++i) c[i] = std::clamp(c[i] + static_cast<float>(rng.uniform(-amount, amount)), 0.0f, 1.0f);
  return c;
}

// Smooth random field in [0, 1]: random values on a coarse grid, bicubic-resized.
cv::Mat smooth_field(cv::RNG& rng, int size, int cells) {
  cv::Mat coarse(cells, cells, CV_32F);
  rng.fill(coarse, cv::RNG::UNIFORM, 0.0, 1.0);
  cv::Mat field;
  cv::resize(coarse, field, cv::Size(size, size), 0, 0, cv::INTER_CUBIC);
  cv::normalize(field, field, 0.0, 1.0, cv::NORM_MINMAX);
  return field;
}

// Global lighting (a linear gradient in a random direction) and sensor noise: the variation
// every normal image has.
void light_and_noise(cv::RNG& rng, cv::Mat& img) {
  const int n = img.rows;
  const double a = rng.uniform(0.0, 2 * M_PI), amp = rng.uniform(0.0, 0.12), level = rng.uniform(0.93, 1.07);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const double t = ((x - n / 2.0) * std::cos(a) + (y - n / 2.0) * std::sin(a)) / n;
      img.at<Colour>(y, x) *= static_cast<float>(level * (1.0 + amp * t));
    }
  cv::Mat noise(img.size(), CV_32FC3);
  rng.fill(noise, cv::RNG::NORMAL, 0.0, 0.015);
  img += noise;
}

// Pixel-exact defects: the painted shape is the mask.
void paint(cv::Mat& img, const cv::Mat& shape, Colour c, float alpha = 1.0f) {
  for (int y = 0; y < img.rows; ++y)
    for (int x = 0; x < img.cols; ++x)
      if (shape.at<uint8_t>(y, x)) img.at<Colour>(y, x) = img.at<Colour>(y, x) * (1.0f - alpha) + c * alpha;
}

cv::Point random_point(cv::RNG& rng, int lo, int hi) { return cv::Point(rng.uniform(lo, hi), rng.uniform(lo, hi)); }

// A random line of `length` through `centre`.
void line_shape(cv::RNG& rng, cv::Mat& shape, cv::Point centre, double length, int thickness) {
  const double a = rng.uniform(0.0, M_PI);
  const cv::Point d(static_cast<int>(std::cos(a) * length / 2), static_cast<int>(std::sin(a) * length / 2));
  cv::line(shape, centre - d, centre + d, 255, thickness, cv::LINE_8);
}

// A jagged polyline (a crack).
void crack_shape(cv::RNG& rng, cv::Mat& shape, cv::Point start, double length) {
  double a = rng.uniform(0.0, 2 * M_PI);
  cv::Point2d p(start);
  const int segments = 5;
  for (int i = 0; i < segments; ++i) {
    a += rng.uniform(-0.7, 0.7);
    const cv::Point2d q = p + cv::Point2d(std::cos(a), std::sin(a)) * (length / segments);
    cv::line(shape, cv::Point(p), cv::Point(q), 255, 1, cv::LINE_8);
    p = q;
  }
}

void blob_shape(cv::RNG& rng, cv::Mat& shape, cv::Point centre, double radius) {
  const cv::Size axes(std::max(1, static_cast<int>(radius * rng.uniform(0.6, 1.0))), std::max(1, static_cast<int>(radius * rng.uniform(0.6, 1.0))));
  cv::ellipse(shape, centre, axes, rng.uniform(0.0, 180.0), 0, 360, 255, -1, cv::LINE_8);
}

// ---------------------------------------------------------------------------------------------
struct Scene {
  cv::Mat img;       // RGB float
  cv::Mat object;    // CV_8U 255 where the object is (objects), all 255 for textures
  cv::Point centre;  // of the object
  double radius = 0; // of the object, roughly
  Colour light, dark, mid, background;
};

Scene weave(cv::RNG& rng, int n) {
  Scene s;
  s.dark = jitter(rng, Colour(0.25f, 0.18f, 0.12f), 0.03f);
  s.light = jitter(rng, Colour(0.78f, 0.64f, 0.46f), 0.03f);
  s.mid = (s.dark + s.light) * 0.5f;
  const double theta = rng.uniform(-5.0, 5.0) * M_PI / 180.0, period = rng.uniform(7.0, 9.0);
  const double p1 = rng.uniform(0.0, 2 * M_PI), p2 = rng.uniform(0.0, 2 * M_PI);
  s.img = cv::Mat(n, n, CV_32FC3);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const double u = x * std::cos(theta) + y * std::sin(theta), v = -x * std::sin(theta) + y * std::cos(theta);
      const double warp = 0.5 + 0.5 * std::sin(2 * M_PI * u / period + p1), weft = 0.5 + 0.5 * std::sin(2 * M_PI * v / period + p2);
      const float t = static_cast<float>(0.6 * warp + 0.4 * weft);
      s.img.at<Colour>(y, x) = s.dark + (s.light - s.dark) * t;
    }
  s.object = cv::Mat(n, n, CV_8U, cv::Scalar(255));
  s.centre = cv::Point(n / 2, n / 2);
  s.radius = n / 2.0;
  return s;
}

Scene marble(cv::RNG& rng, int n) {
  Scene s;
  s.light = jitter(rng, Colour(0.78f, 0.80f, 0.74f), 0.03f);
  s.mid = jitter(rng, Colour(0.52f, 0.55f, 0.52f), 0.03f);
  s.dark = jitter(rng, Colour(0.30f, 0.32f, 0.32f), 0.03f);
  const cv::Mat f = 0.6 * smooth_field(rng, n, 3) + 0.4 * smooth_field(rng, n, 6);
  s.img = cv::Mat(n, n, CV_32FC3);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const float v = f.at<float>(y, x);
      // clouds, and soft veins along one level line
      const float vein = std::exp(-std::pow((v - 0.5f) / 0.05f, 2.0f));
      s.img.at<Colour>(y, x) = (s.mid + (s.light - s.mid) * v) * (1.0f - 0.5f * vein) + s.dark * (0.5f * vein);
    }
  cv::GaussianBlur(s.img, s.img, cv::Size(5, 5), 1.0);
  s.object = cv::Mat(n, n, CV_8U, cv::Scalar(255));
  s.centre = cv::Point(n / 2, n / 2);
  s.radius = n / 2.0;
  return s;
}

Scene washer(cv::RNG& rng, int n) {
  Scene s;
  const double k = n / 64.0;
  s.background = jitter(rng, Colour(0.13f, 0.13f, 0.14f), 0.02f);
  s.light = jitter(rng, Colour(0.68f, 0.68f, 0.70f), 0.03f);
  s.dark = s.background * 1.6f;
  s.mid = s.light * 0.7f;
  s.centre = cv::Point(n / 2 + static_cast<int>(rng.uniform(-8, 9) * k), n / 2 + static_cast<int>(rng.uniform(-8, 9) * k));
  const double outer = (18 + rng.uniform(-1.0, 1.0)) * k, inner = (8 + rng.uniform(-0.5, 0.5)) * k, light_angle = rng.uniform(0.0, 2 * M_PI);
  s.radius = outer;
  s.img = cv::Mat(n, n, CV_32FC3, cv::Scalar(s.background[0], s.background[1], s.background[2]));
  s.object = cv::Mat::zeros(n, n, CV_8U);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const double dx = x - s.centre.x, dy = y - s.centre.y, r = std::hypot(dx, dy);
      if (r <= outer && r >= inner) {
        const double shade = 0.82 + 0.18 * std::cos(std::atan2(dy, dx) - light_angle) * (r - inner) / (outer - inner);
        s.img.at<Colour>(y, x) = s.light * static_cast<float>(shade);
        s.object.at<uint8_t>(y, x) = 255;
      }
    }
  return s;
}

Scene pill(cv::RNG& rng, int n) {
  Scene s;
  const double k = n / 64.0;
  s.background = jitter(rng, Colour(0.80f, 0.80f, 0.76f), 0.02f);
  s.light = jitter(rng, Colour(0.97f, 0.95f, 0.90f), 0.02f);
  s.dark = jitter(rng, Colour(0.90f, 0.45f, 0.16f), 0.03f);
  s.mid = (s.light + s.dark) * 0.5f;
  s.centre = cv::Point(n / 2 + static_cast<int>(rng.uniform(-7, 8) * k), n / 2 + static_cast<int>(rng.uniform(-7, 8) * k));
  const double half_len = (18 + rng.uniform(-1.0, 1.0)) * k, half_w = (8 + rng.uniform(-0.5, 0.5)) * k;
  const double a = rng.uniform(-60.0, 60.0) * M_PI / 180.0;
  s.radius = half_len;
  s.img = cv::Mat(n, n, CV_32FC3, cv::Scalar(s.background[0], s.background[1], s.background[2]));
  s.object = cv::Mat::zeros(n, n, CV_8U);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const double dx = x - s.centre.x, dy = y - s.centre.y;
      const double u = dx * std::cos(a) + dy * std::sin(a), v = -dx * std::sin(a) + dy * std::cos(a);
      // A capsule: a rectangle with round ends.
      const double cu = std::max(std::abs(u) - (half_len - half_w), 0.0);
      if (cu * cu + v * v <= half_w * half_w) {
        const float shade = static_cast<float>(1.0 - 0.25 * (v / half_w) * (v / half_w));
        s.img.at<Colour>(y, x) = (u < 0 ? s.dark : s.light) * shade;
        s.object.at<uint8_t>(y, x) = 255;
      }
    }
  return s;
}

Scene tiles(cv::RNG& rng, int n) {
  Scene s;
  s.dark = jitter(rng, Colour(0.35f, 0.30f, 0.28f), 0.03f);
  s.light = jitter(rng, Colour(0.70f, 0.40f, 0.30f), 0.04f);
  s.mid = (s.dark + s.light) * 0.5f;
  const int pitch = rng.uniform(11, 15), ox = rng.uniform(0, pitch), oy = rng.uniform(0, pitch);
  s.img = cv::Mat(n, n, CV_32FC3);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const bool grout = (x + ox) % pitch < 2 || (y + oy) % pitch < 2;
      s.img.at<Colour>(y, x) = grout ? s.dark : s.light * static_cast<float>(0.9 + 0.1 * (((x + ox) / pitch + (y + oy) / pitch) % 2));
    }
  s.object = cv::Mat(n, n, CV_8U, cv::Scalar(255));
  s.centre = cv::Point(n / 2, n / 2);
  s.radius = n / 2.0;
  return s;
}

Scene nut(cv::RNG& rng, int n) {
  Scene s;
  const double k = n / 64.0;
  s.background = jitter(rng, Colour(0.20f, 0.24f, 0.30f), 0.02f);
  s.light = jitter(rng, Colour(0.75f, 0.70f, 0.55f), 0.03f);
  s.dark = s.background;
  s.mid = s.light * 0.7f;
  s.centre = cv::Point(n / 2 + rng.uniform(-4, 5), n / 2 + rng.uniform(-4, 5));
  s.radius = 20 * k;
  const double a0 = rng.uniform(0.0, M_PI / 3);
  std::vector<cv::Point> hex;
  for (int i = 0; i < 6; ++i)
    hex.emplace_back(static_cast<int>(s.centre.x + s.radius * std::cos(a0 + i * M_PI / 3)), static_cast<int>(s.centre.y + s.radius * std::sin(a0 + i * M_PI / 3)));
  s.img = cv::Mat(n, n, CV_32FC3, cv::Scalar(s.background[0], s.background[1], s.background[2]));
  s.object = cv::Mat::zeros(n, n, CV_8U);
  cv::fillConvexPoly(s.object, hex, 255);
  cv::circle(s.object, s.centre, static_cast<int>(8 * k), 0, -1);
  paint(s.img, s.object, s.light);
  return s;
}

Scene make_scene(const std::string& cls, cv::RNG& rng, int n) {
  if (cls == "weave") return weave(rng, n);
  if (cls == "marble") return marble(rng, n);
  if (cls == "washer") return washer(rng, n);
  if (cls == "pill") return pill(rng, n);
  if (cls == "tiles") return tiles(rng, n);
  if (cls == "nut") return nut(rng, n);
  throw InputError("unknown synthetic class '" + cls + "' (weave, marble, washer, pill, tiles, nut)");
}

cv::Mat to_rgb8(const cv::Mat& f) {
  cv::Mat out;
  f.convertTo(out, CV_8UC3, 255.0);
  return out;
}

// A point on the object (objects) or anywhere away from the border (textures).
cv::Point point_on_object(cv::RNG& rng, const Scene& s, int margin) {
  const int n = s.img.rows;
  for (int i = 0; i < 200; ++i) {
    const cv::Point p = random_point(rng, margin, n - margin);
    if (s.object.at<uint8_t>(p) != 0) return p;
  }
  return s.centre;
}

// A point on the object's outer edge.
cv::Point point_on_edge(cv::RNG& rng, const Scene& s) {
  cv::Mat edge;
  cv::morphologyEx(s.object, edge, cv::MORPH_GRADIENT, cv::getStructuringElement(cv::MORPH_RECT, cv::Size(3, 3)));
  std::vector<cv::Point> pts;
  cv::findNonZero(edge, pts);
  // the outer edge: the farthest points from the centre
  std::vector<cv::Point> outer;
  for (const auto& p : pts)
    if (cv::norm(p - s.centre) > 0.8 * s.radius) outer.push_back(p);
  if (outer.empty()) outer = pts;
  return outer[static_cast<std::size_t>(rng.uniform(0, static_cast<int>(outer.size())))];
}

}  // namespace

const std::vector<std::string>& synthetic_classes() {
  static const std::vector<std::string> c = {"weave", "marble", "washer", "pill"};
  return c;
}

const std::vector<std::string>& synthetic_extra_classes() {
  static const std::vector<std::string> c = {"tiles", "nut"};
  return c;
}

std::string synthetic_class_kind(const std::string& cls) {
  return cls == "weave" || cls == "marble" || cls == "tiles" ? "texture" : "object";
}

std::vector<std::string> synthetic_defects(const std::string& cls) {
  if (cls == "weave") return {"hole", "scratch", "stain", "thread"};
  if (cls == "marble") return {"crack", "cut", "hole", "stain"};
  if (cls == "washer") return {"extra", "missing", "scratch", "stain"};
  if (cls == "pill") return {"chip", "crack", "extra", "spot"};
  if (cls == "tiles") return {"crack", "hole"};
  if (cls == "nut") return {"missing", "scratch"};
  throw InputError("unknown synthetic class '" + cls + "'");
}

cv::Mat synthetic_normal(const std::string& cls, uint64_t seed, int64_t index, int size) {
  cv::RNG rng(stream_seed(cls, seed, index, 1));
  Scene s = make_scene(cls, rng, size);
  light_and_noise(rng, s.img);
  return to_rgb8(s.img);
}

namespace {

cv::Mat defective_once(const std::string& cls, const std::string& defect, uint64_t stream, int size, cv::Mat& mask) {
  cv::RNG rng(stream);
  Scene s = make_scene(cls, rng, size);
  const int n = size;
  const double k = n / 64.0;
  const bool large = rng.uniform(0, 2) == 1;  // small and large defects alike
  cv::Mat shape = cv::Mat::zeros(n, n, CV_8U);
  Colour colour = s.mid;
  float alpha = 1.0f;
  const int margin = static_cast<int>(8 * k);
  if (defect == "hole") {
    blob_shape(rng, shape, point_on_object(rng, s, margin), (large ? 9 : 4) * k);
    // as dark as the darkest normal pixels (weave's dark threads, marble's veins), not darker
    colour = cls == "marble" ? (s.mid + s.dark) * 0.5f : s.dark;
  } else if (defect == "scratch" || defect == "cut") {
    line_shape(rng, shape, point_on_object(rng, s, margin), (large ? 34 : 14) * k, large ? 2 : 1);
    colour = defect == "cut" ? s.light : s.dark * 1.3f;
    if (cls == "weave") colour = s.light;
  } else if (defect == "crack") {
    crack_shape(rng, shape, point_on_object(rng, s, margin), (large ? 30 : 14) * k);
    colour = cls == "pill" ? s.dark * 0.75f : s.dark;
  } else if (defect == "stain") {
    blob_shape(rng, shape, point_on_object(rng, s, margin), (large ? 11 : 5) * k);
    colour = cls == "washer" ? (s.light * 0.55f + s.dark * 0.45f) : s.mid;
    alpha = 0.85f;
  } else if (defect == "thread") {
    const cv::Point c = point_on_object(rng, s, margin);
    const double len = (large ? 36 : 16) * k, a = rng.uniform(0.0, M_PI);
    std::vector<cv::Point> pts;
    for (int i = 0; i <= 12; ++i) {
      const double t = (i / 12.0 - 0.5) * len, w = 3 * k * std::sin(i / 12.0 * 2 * M_PI);
      pts.emplace_back(static_cast<int>(c.x + t * std::cos(a) - w * std::sin(a)), static_cast<int>(c.y + t * std::sin(a) + w * std::cos(a)));
    }
    cv::polylines(shape, pts, false, 255, 1, cv::LINE_8);
    colour = s.light;
  } else if (defect == "missing" || defect == "chip") {
    blob_shape(rng, shape, point_on_edge(rng, s), (large ? 9 : 5) * k);
    colour = s.background;
  } else if (defect == "extra") {
    const cv::Point e = point_on_edge(rng, s);
    const cv::Point2d out = cv::Point2d(e - s.centre) * (1.0 / std::max(1.0, cv::norm(e - s.centre)));
    blob_shape(rng, shape, e + cv::Point(static_cast<int>(out.x * 3 * k), static_cast<int>(out.y * 3 * k)), (large ? 7 : 4) * k);
    colour = cls == "pill" ? s.dark : s.light * 0.9f;
  } else if (defect == "spot") {
    for (int i = 0, dots = large ? 5 : 2; i < dots; ++i) cv::circle(shape, point_on_object(rng, s, margin), std::max(1, static_cast<int>(1.5 * k)), 255, -1);
    colour = rng.uniform(0, 2) ? s.dark : s.light;
  } else {
    throw InputError("class '" + cls + "' has no defect type '" + defect + "'");
  }
  // Surface defects stay on the object; missing parts only take object pixels away; extra parts
  // only add outside it.
  if (synthetic_class_kind(cls) == "object") {
    if (defect == "extra")
      shape.setTo(0, s.object);
    else
      shape &= s.object;
  }
  paint(s.img, shape, colour, alpha);
  light_and_noise(rng, s.img);
  mask = shape;
  return to_rgb8(s.img);
}

}  // namespace

cv::Mat synthetic_defective(const std::string& cls, const std::string& defect, uint64_t seed, int64_t index, int size, cv::Mat& mask) {
  const auto defects = synthetic_defects(cls);
  if (std::find(defects.begin(), defects.end(), defect) == defects.end())
    throw InputError("synthetic class '" + cls + "' has no defect type '" + defect + "'");
  // A shape that misses the object entirely (rare) is drawn again.
  for (uint64_t attempt = 0;; ++attempt) {
    const cv::Mat img = defective_once(cls, defect, stream_seed(cls, seed, index, 2 + 1000 * attempt), size, mask);
    if (cv::countNonZero(mask) >= 3 || attempt >= 50) return img;
  }
}

SyntheticSummary make_synthetic(const SyntheticOptions& options) {
  if (options.output.empty()) throw InputError("make-synthetic: --output is required");
  if (options.size < 32) throw InputError("make-synthetic: --size must be at least 32");
  const std::vector<std::string> classes = options.classes.empty() ? synthetic_classes() : options.classes;
  SyntheticSummary summary;
  char name[32];
  for (const auto& cls : classes) {
    const fs::path dir = fs::path(options.output) / cls;
    const auto defects = synthetic_defects(cls);  // validates the name
    fs::create_directories(dir / "train" / "good");
    fs::create_directories(dir / "test" / "good");
    // Indices: training and test images come from disjoint parts of the stream.
    for (int i = 0; i < options.train; ++i) {
      std::snprintf(name, sizeof name, "%03d.png", i);
      write_png((dir / "train" / "good" / name).string(), synthetic_normal(cls, options.seed, i, options.size));
    }
    for (int i = 0; i < options.test_good; ++i) {
      std::snprintf(name, sizeof name, "%03d.png", i);
      write_png((dir / "test" / "good" / name).string(), synthetic_normal(cls, options.seed, 100000 + i, options.size));
    }
    for (int i = 0; i < options.test_bad; ++i) {
      const std::string& defect = defects[static_cast<std::size_t>(i) % defects.size()];
      fs::create_directories(dir / "test" / defect);
      fs::create_directories(dir / "ground_truth" / defect);
      cv::Mat mask;
      const cv::Mat img = synthetic_defective(cls, defect, options.seed, 200000 + i, options.size, mask);
      std::snprintf(name, sizeof name, "%03d", i);
      write_png((dir / "test" / defect / (std::string(name) + ".png")).string(), img);
      write_png((dir / "ground_truth" / defect / (std::string(name) + "_mask.png")).string(), mask, false);
    }
    summary.images += options.train + options.test_good + options.test_bad;
    ++summary.classes;
  }
  return summary;
}

}  // namespace anomalysd

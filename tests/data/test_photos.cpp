// The real photographs (configs/photos.yaml): every file is where its Debian package puts it, a
// missing one is an error naming the package, GIMP's pattern format is read right, and the held-out
// benchmark built from them is deterministic, in the MVTec layout, with exact masks.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include "anomalysd/data/dataset.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/data/photo_benchmark.h"
#include "anomalysd/data/photos.h"
#include "anomalysd/io/errors.h"
#include "test_support.h"

namespace anomalysd {
namespace {

namespace fs = std::filesystem;

std::string command_output(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return out;
  char buffer[512];
  while (fgets(buffer, sizeof buffer, pipe)) out += buffer;
  pclose(pipe);
  return out;
}

TEST(Photos, EveryListedFileIsInstalledByTheNamedPackageAndReadable) {
  const auto& list = embedded_photo_list();
  ASSERT_GE(list.size(), 30u);
  const std::string install_deps = test::read_bytes(std::string(ANOMALYSD_SOURCE_DIR) + "/scripts/install-deps.sh");
  std::set<std::string> classes;
  int bootstrap = 0;
  for (const PhotoSource& p : list) {
    // install-deps installs the package, and dpkg says the file is that package's
    EXPECT_NE(install_deps.find(" " + p.package), std::string::npos) << p.package << " is not in scripts/install-deps.sh";
    // (GIMP 2.10 and 3.0 put the patterns in different folders: the list names both, one is here.)
    const std::string file = photo_path(p);
    const std::string owner = command_output("dpkg-query -S '" + file + "' 2>/dev/null");
    EXPECT_EQ(owner.rfind(p.package + ":", 0), 0u) << file << " belongs to '" << owner << "', the list says " << p.package;
    EXPECT_FALSE(p.licence.empty()) << file;
    const cv::Mat rgb = read_photo_rgb8(file);
    EXPECT_EQ(rgb.type(), CV_8UC3) << p.file;
    EXPECT_GE(std::min(rgb.rows, rgb.cols), 40) << p.file;
    if (!p.cls.empty()) classes.insert(p.cls);
    bootstrap += p.role == "bootstrap";
    // GIMP's patterns are the held-out test's: never a training photograph
    if (p.package == "gimp-data") EXPECT_EQ(p.role, "heldout") << p.file;
  }
  EXPECT_EQ(classes, (std::set<std::string>{"burlap", "leather", "walnut", "stone", "paper"}));
  EXPECT_EQ(photos_for_role(list, "bootstrap").size(), static_cast<std::size_t>(bootstrap));
}

TEST(Photos, AMissingFileIsAnErrorNamingItsPackageAndTheListIsChecked) {
  test::TempDir tmp;
  const auto& list = embedded_photo_list();
  // A root holding every bootstrap photograph but one.
  const PhotoSource* dropped = nullptr;
  for (const PhotoSource& p : list) {
    if (p.role != "bootstrap") continue;
    if (!dropped && p.package == "mypaint-data-extras") {
      dropped = &p;
      continue;
    }
    fs::create_directories(fs::path(photo_path(p, tmp.path().string())).parent_path());
    fs::copy_file(photo_path(p), photo_path(p, tmp.path().string()));
  }
  ASSERT_NE(dropped, nullptr);
  try {
    photos_for_role(list, "bootstrap", tmp.path().string());
    FAIL() << "a missing photograph was skipped silently";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("'mypaint-data-extras'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(fs::path(dropped->file).filename().string()), std::string::npos) << e.what();
  }
  // The held-out role does not need the bootstrap's files (and vice versa).
  EXPECT_THROW(photos_for_role(list, "heldout", tmp.path().string()), InputError);
  // The list's own checks: unknown keys, missing keys, unknown roles, classes of training photographs.
  EXPECT_THROW(parse_photo_list("photos:\n  - {file: a.png, package: p, licence: CC0, role: bootstrap, colour: red}\n", "t"), InputError);
  EXPECT_THROW(parse_photo_list("photos:\n  - {file: a.png, licence: CC0, role: bootstrap}\n", "t"), InputError);
  EXPECT_THROW(parse_photo_list("photos:\n  - {file: a.png, package: p, licence: CC0, role: training}\n", "t"), InputError);
  EXPECT_THROW(parse_photo_list("photos:\n  - {file: a.png, package: p, licence: CC0, role: bootstrap, class: x}\n", "t"), InputError);
  EXPECT_EQ(parse_photo_list("photos:\n  - {file: a.png, package: p, licence: CC0, role: heldout, class: x}\n", "t").at(0).cls, "x");
  EXPECT_THROW(parse_photo_list("photos:\n  - {file: [], package: p, licence: CC0, role: bootstrap}\n", "t"), InputError);
  EXPECT_THROW(parse_photo_list("photos:\n  - {file: {a: b}, package: p, licence: CC0, role: bootstrap}\n", "t"), InputError);
  // A file that Debian releases put in different places (GIMP 2.10's gimp/2.0, 3.0's gimp/3.0):
  // the first place present is read; with none present the error names every place and the package.
  const std::vector<PhotoSource> moved =
      parse_photo_list("photos:\n  - {file: [/old/p.pat, /new/p.pat], package: gimp-data, licence: GPL-3+, role: heldout}\n", "t");
  ASSERT_EQ(moved.at(0).places.size(), 2u);
  const test::TempDir root;
  try {
    photos_for_role(moved, "heldout", root.path().string());
    FAIL() << "a photograph in none of its places was accepted";
  } catch (const InputError& e) {
    for (const char* part : {"/old/p.pat", "/new/p.pat", "'gimp-data'"}) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
  fs::create_directories(root.path() / "new");
  test::write_bytes((root.path() / "new/p.pat").string(), "x");
  EXPECT_EQ(photo_path(moved.at(0), root.path().string()), (root.path() / "new/p.pat").string());
  EXPECT_EQ(photos_for_role(moved, "heldout", root.path().string()).size(), 1u);
  fs::create_directories(root.path() / "old");
  test::write_bytes((root.path() / "old/p.pat").string(), "x");
  EXPECT_EQ(photo_path(moved.at(0), root.path().string()), (root.path() / "old/p.pat").string());
}

std::string gimp_pattern(uint32_t width, uint32_t height, uint32_t bytes, const std::string& pixels) {
  std::string name = "test\0";
  std::string out;
  auto be32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((v >> s) & 0xFF);
  };
  be32(static_cast<uint32_t>(24 + 5));
  be32(1);
  be32(width);
  be32(height);
  be32(bytes);
  out += "GPAT";
  out += std::string("test", 4) + '\0';
  return out + pixels;
}

TEST(Photos, GimpPatternsAreReadInTheirOwnFormat) {
  test::TempDir tmp;
  // 2 × 1 RGB: red, then (10, 20, 30); 1 × 2 grey: 7, 200
  test::write_bytes(tmp.file("rgb.pat"), gimp_pattern(2, 1, 3, std::string("\xff\x00\x00\x0a\x14\x1e", 6)));
  const cv::Mat rgb = read_gimp_pattern(tmp.file("rgb.pat"));
  ASSERT_EQ(rgb.size(), cv::Size(2, 1));
  EXPECT_EQ(rgb.at<cv::Vec3b>(0, 0), cv::Vec3b(255, 0, 0));
  EXPECT_EQ(rgb.at<cv::Vec3b>(0, 1), cv::Vec3b(10, 20, 30));
  test::write_bytes(tmp.file("grey.pat"), gimp_pattern(1, 2, 1, std::string("\x07\xc8", 2)));
  const cv::Mat grey = read_photo_rgb8(tmp.file("grey.pat"));
  ASSERT_EQ(grey.size(), cv::Size(1, 2));
  EXPECT_EQ(grey.at<cv::Vec3b>(1, 0), cv::Vec3b(200, 200, 200));
  // Truncated pixels, a wrong magic and an absurd size are errors naming the file.
  test::write_bytes(tmp.file("short.pat"), gimp_pattern(2, 2, 3, std::string(5, '\0')));
  EXPECT_THROW(read_gimp_pattern(tmp.file("short.pat")), FormatError);
  std::string bad = gimp_pattern(1, 1, 3, std::string(3, '\0'));
  bad[20] = 'X';
  test::write_bytes(tmp.file("magic.pat"), bad);
  EXPECT_THROW(read_gimp_pattern(tmp.file("magic.pat")), FormatError);
  test::write_bytes(tmp.file("huge.pat"), gimp_pattern(100000, 1, 3, ""));
  try {
    read_gimp_pattern(tmp.file("huge.pat"));
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_EQ(e.path(), tmp.file("huge.pat"));
  }
}

TEST(PhotoBenchmark, DeterministicInTheMvtecLayoutWithExactMasksOfEveryDefectType) {
  test::TempDir tmp;
  PhotoBenchmarkOptions o;
  o.output = (tmp.path() / "a").string();
  o.train = 2;
  o.test_good = 2;
  o.test_bad = 8;
  EXPECT_EQ(make_photo_benchmark(o).images, 5 * 12);
  o.output = (tmp.path() / "b").string();
  make_photo_benchmark(o);
  EXPECT_EQ(test::read_bytes((tmp.path() / "a/walnut/test/stain/002.png").string()), test::read_bytes((tmp.path() / "b/walnut/test/stain/002.png").string()));
  o.output = (tmp.path() / "c").string();
  o.seed = 1;
  make_photo_benchmark(o);
  EXPECT_NE(test::read_bytes((tmp.path() / "a/walnut/train/good/000.png").string()), test::read_bytes((tmp.path() / "c/walnut/train/good/000.png").string()));
  EXPECT_NE(test::read_bytes((tmp.path() / "a/SOURCES.txt").string()).find("gimp-data"), std::string::npos);

  const Dataset d = load_dataset("folder", (tmp.path() / "a").string());
  ASSERT_EQ(d.classes.size(), 5u);
  for (const auto& c : d.classes) {
    std::set<std::string> defects;
    for (const auto& s : c.test) {
      if (!s.anomalous) continue;
      defects.insert(s.defect);
      const cv::Mat mask = read_mask(s.mask);
      EXPECT_GE(cv::countNonZero(mask), 3) << s.mask;
      EXPECT_LT(cv::countNonZero(mask), 64 * 64 / 4) << s.mask;
    }
    EXPECT_EQ(defects, (std::set<std::string>{"foreign", "scratch", "smudge", "stain"})) << c.name;
  }
  // The mask is exactly where the defect is: a defective image is its normal twin (the same
  // stream) changed inside the mask and nowhere else.
  // Where this Debian's GIMP put them (gimp/2.0 on Debian 12, gimp/3.0 on Debian 13).
  auto installed = [](const std::string& name) {
    for (const PhotoSource& p : embedded_photo_list())
      if (fs::path(p.file).filename() == name) return photo_path(p);
    ADD_FAILURE() << name << " is not in configs/photos.yaml";
    return std::string();
  };
  const cv::Mat photo = read_photo_rgb8(installed("leather.pat"));
  const std::vector<cv::Mat> foreign = {read_photo_rgb8(installed("bark.pat"))};
  for (const std::string& defect : photo_benchmark_defects())
    for (uint64_t stream : {42ull, 43ull, 44ull}) {
      cv::Mat mask;
      const cv::Mat bad = photo_defective(photo, foreign, defect, stream, 64, mask);
      const cv::Mat twin = photo_normal(photo, stream, 64);
      cv::Mat diff;
      cv::absdiff(bad, twin, diff);
      cv::Mat outside = cv::Mat::zeros(mask.size(), CV_8U);
      outside.setTo(255, mask == 0);
      EXPECT_EQ(cv::norm(diff, cv::NORM_INF, outside), 0.0) << defect << ": changed outside its mask";
      EXPECT_GT(cv::mean(diff, mask)[0] + cv::mean(diff, mask)[1] + cv::mean(diff, mask)[2], 6.0) << defect << ": barely visible inside its mask";
    }
  cv::Mat mask;
  EXPECT_THROW(photo_defective(photo, {}, "dent", 1, 64, mask), InputError);
  o.classes = {"teapot"};
  EXPECT_THROW(make_photo_benchmark(o), InputError);
}

}  // namespace
}  // namespace anomalysd

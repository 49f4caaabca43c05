// Dataset readers on small generated trees in every layout, their errors, and few-shot sampling.
#include <fstream>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include "anomalysd/data/dataset.h"
#include "anomalysd/data/image_io.h"
#include "anomalysd/io/errors.h"
#include "data/tree_builder.h"
#include "test_support.h"

namespace anomalysd {
namespace {

namespace fs = std::filesystem;
using test::write_image;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(MVTec, ReadsLayoutAndLinksMasks) {
  test::TempDir dir;
  test::make_mvtec_class(dir.path(), "bottle", 5, {{"good", 2}, {"broken_large", 2}});
  const Dataset d = load_dataset("mvtec", dir.path().string(), {"bottle"});
  ASSERT_EQ(d.classes.size(), 1u);
  const ClassData& c = d.at("bottle");
  EXPECT_EQ(c.train_good.size(), 5u);
  ASSERT_EQ(c.test.size(), 4u);
  EXPECT_EQ(c.test[0].defect, "broken_large");
  EXPECT_TRUE(c.test[0].anomalous);
  EXPECT_EQ(fs::path(c.test[0].mask).filename(), "000_mask.png");
  EXPECT_EQ(c.test[2].defect, "good");
  EXPECT_TRUE(c.test[2].mask.empty());
  EXPECT_EQ(read_mask(c.test[0].mask).at<uint8_t>(4, 4), 1);
  EXPECT_EQ(read_image_size(c.test[0].image), std::make_pair(16, 20));
  EXPECT_THROW(d.at("cable"), InputError);
}

TEST(MVTec, GrayscaleImagesBecomeThreeChannel) {
  test::TempDir dir;
  const std::string path = dir.file("gray.png");
  cv::imwrite(path, cv::Mat(8, 8, CV_8U, cv::Scalar(77)));
  const cv::Mat rgb = read_rgb(path);
  EXPECT_EQ(rgb.channels(), 3);
  EXPECT_EQ(rgb.at<cv::Vec3b>(2, 2)[1], 77);
}

TEST(MVTec, ErrorsNameWhatIsMissing) {
  test::TempDir dir;
  test::make_mvtec_class(dir.path(), "bottle", 2, {{"good", 1}, {"crack", 1}});
  EXPECT_NE(error_of([&] { load_dataset("mvtec", dir.path().string(), {"cable"}); }).find("cable: class folder not found"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_dataset("mvtec", dir.path().string(), {"bottel"}); }).find("'bottel' is not a mvtec class"),
            std::string::npos);
  fs::remove(dir.path() / "bottle/ground_truth/crack/000_mask.png");
  const std::string e = error_of([&] { load_dataset("mvtec", dir.path().string(), {"bottle"}); });
  EXPECT_NE(e.find("test/crack/000.png: anomalous test image without its mask"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { load_dataset("mvtec", (dir.path() / "nope").string()); }).find("dataset folder not found"), std::string::npos);
}

TEST(VisA, RawReleaseWithSplitCsv) {
  test::TempDir dir;
  const fs::path root = dir.path();
  fs::create_directories(root / "split_csv");
  std::ofstream csv(root / "split_csv/1cls.csv");
  csv << "object,split,label,image,mask\n";
  for (int i = 0; i < 3; ++i) {
    const std::string name = "candle/Data/Images/Normal/000" + std::to_string(i) + ".JPG";
    write_image(root / name, 12, 10, false);
    csv << "candle," << (i < 2 ? "train" : "test") << ",normal," << name << ",\n";
  }
  write_image(root / "candle/Data/Images/Anomaly/000.JPG", 12, 10, false);
  write_image(root / "candle/Data/Masks/Anomaly/000.png", 12, 10, true);
  csv << "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\n";
  csv << "capsules,train,normal,capsules/Data/Images/Normal/0000.JPG,\n";  // other classes are skipped
  csv.close();
  const Dataset d = load_dataset("visa", root.string(), {"candle"});
  const ClassData& c = d.at("candle");
  EXPECT_EQ(c.train_good.size(), 2u);
  ASSERT_EQ(c.test.size(), 2u);
  EXPECT_EQ(c.test[0].defect, "bad");
  EXPECT_EQ(fs::path(c.test[0].mask).filename(), "000.png");
  EXPECT_EQ(read_image_size(c.test[0].image), std::make_pair(12, 10));  // JPEG header
  // A mask of 255s is binarised to 1.
  EXPECT_EQ(cv::countNonZero(read_mask(c.test[0].mask)), cv::countNonZero(cv::imread(c.test[0].mask, cv::IMREAD_GRAYSCALE)));

  std::ofstream bad(root / "split_csv/1cls.csv");
  bad << "object,split,label,image,mask\ncandle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,\n";
  bad.close();
  EXPECT_NE(error_of([&] { load_dataset("visa", root.string(), {"candle"}); }).find("1cls.csv:2: anomalous test image without its mask"),
            std::string::npos);
}

TEST(VisA, PreparedOneClassLayout) {
  test::TempDir dir;
  test::make_mvtec_class(dir.path(), "pcb1", 3, {{"good", 1}, {"bad", 2}}, /*mask_suffix=*/"");
  const Dataset d = load_dataset("visa", dir.path().string(), {"pcb1"});
  EXPECT_EQ(d.at("pcb1").test.size(), 3u);
  EXPECT_EQ(fs::path(d.at("pcb1").test[0].mask).filename(), "000.png");
}

TEST(Folder, MasksAreOptional) {
  test::TempDir dir;
  test::make_mvtec_class(dir.path(), "widget", 2, {{"good", 1}, {"scratch", 1}});
  fs::remove_all(dir.path() / "widget/ground_truth");
  fs::create_directories(dir.path() / "notaclass");  // no test/ folder: ignored
  const Dataset d = load_dataset("folder", dir.path().string());
  ASSERT_EQ(d.classes.size(), 1u);
  EXPECT_FALSE(d.classes[0].has_masks);
  for (const auto& s : d.classes[0].test) EXPECT_TRUE(s.mask.empty()) << s.image;
  EXPECT_EQ(d.classes[0].test[1].defect, "scratch");
  EXPECT_TRUE(d.classes[0].test[1].anomalous);  // anomalous, though without a mask
}

TEST(FewShot, SeededRecordedAndRepeatable) {
  test::TempDir dir;
  test::make_mvtec_class(dir.path(), "bottle", 10, {{"good", 1}});
  test::make_mvtec_class(dir.path(), "cable", 6, {{"good", 1}});
  const Dataset d = load_dataset("mvtec", dir.path().string(), {"bottle", "cable"});
  const ShotSelection a = sample_shots(d, 2, 7), b = sample_shots(d, 2, 7);
  EXPECT_EQ(a.shots, b.shots);
  EXPECT_EQ(a.shots.at("bottle").size(), 2u);
  EXPECT_NE(a.shots.at("bottle")[0], a.shots.at("bottle")[1]);
  bool differs = false;
  for (uint64_t seed = 8; seed < 12; ++seed) differs |= sample_shots(d, 2, seed).shots != a.shots;
  EXPECT_TRUE(differs);
  EXPECT_EQ(ShotSelection::from_json(a.to_json(), "test").shots, a.shots);
  // Fuzz finding: a k (or seed) too large for an integer arrives as a float; converting it was UB.
  for (const char* bad : {R"({"k": 1.6666666676666667e28, "seed": 0, "shots": {}})", R"({"k": 1, "seed": 2.5, "shots": {}})",
                          R"({"k": -1, "seed": 0, "shots": {}})"}) {
    try {
      ShotSelection::from_json(nlohmann::json::parse(bad), "shots.json");
      ADD_FAILURE() << "accepted " << bad;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("shots.json"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(sample_shots(d, 0, 1).shots.at("cable").empty());
  EXPECT_THROW(sample_shots(d, 7, 1), InputError);  // cable has 6
}

}  // namespace
}  // namespace anomalysd

namespace anomalysd {
namespace {

// Found by fuzz_image (tests/fuzz/seeds/image/regression-int-depth.bin): an image with signed
// integer pixels reached OpenCV's colour conversion, which throws its own exception — `infer`
// then stopped instead of skipping the file. Now a FormatError naming it.
TEST(ImageIo, UnsupportedPixelDepthIsAFormatError) {
  const std::string path = std::string(ANOMALYSD_SOURCE_DIR) + "/tests/fuzz/seeds/image/regression-int-depth.bin";
  try {
    read_rgb_float(path);
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_EQ(e.path(), path);
  }
}

// Only the documented formats reach OpenCV (a fuzz input sent GDCM's DICOM reader into a long
// allocation: tests/fuzz/seeds/image/regression-gdcm-timeout). A PPM, which OpenCV would decode,
// is refused by name.
TEST(ImageIo, FormatsBeyondPngJpegBmpTiffAreRefusedBeforeDecoding) {
  test::TempDir dir;
  const std::string path = dir.file("tiny.ppm");
  std::ofstream(path, std::ios::binary) << "P6\n2 2\n255\n" << std::string(12, '\x80');
  try {
    read_rgb_float(path);
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_EQ(e.path(), path);
    EXPECT_NE(std::string(e.what()).find("not a PNG, JPEG, BMP or TIFF"), std::string::npos) << e.what();
  }
}

// Every format's size comes from its header (PNG IHDR, JPEG start of frame, BMP DIB header, TIFF
// first IFD), so that an oversized file is refused before OpenCV allocates it: a 60-byte TIFF that
// claims 60000² pixels is refused by name (decoding it would ask for 10.8 GB).
TEST(ImageIo, EveryFormatsSizeComesFromItsHeaderAndOversizedFilesAreRefusedBeforeDecoding) {
  test::TempDir dir;
  const cv::Mat image(23, 37, CV_8UC3, cv::Scalar(10, 200, 90));
  for (const char* ext : {".png", ".jpg", ".bmp", ".tiff"}) {
    const std::string path = dir.file(std::string("image") + ext);
    ASSERT_TRUE(cv::imwrite(path, image));
    EXPECT_EQ(read_image_size(path), std::make_pair(23, 37)) << ext;
  }
  // A big-endian TIFF whose only IFD says 60000 × 60000, LONG width and SHORT height.
  const std::string tiff = dir.file("huge.tiff");
  {
    std::string bytes("MM\0*\0\0\0\x08", 8);
    bytes += std::string("\0\x02", 2);                                               // 2 entries
    bytes += std::string("\x01\x00\0\x04\0\0\0\x01\0\0\xea\x60", 12);            // 256 ImageWidth, LONG 60000
    bytes += std::string("\x01\x01\0\x03\0\0\0\x01\xea\x60\0\0", 12);            // 257 ImageLength, SHORT 60000
    bytes += std::string(4, '\0');
    std::ofstream(tiff, std::ios::binary) << bytes;
  }
  EXPECT_EQ(read_image_size(tiff), std::make_pair(60000, 60000));
  for (auto read : {+[](const std::string& p) { (void)read_rgb_float(p); }, +[](const std::string& p) { (void)read_mask(p); },
                    +[](const std::string& p) { (void)read_anomaly_map(p); }}) {
    try {
      read(tiff);
      ADD_FAILURE() << "expected FormatError";
    } catch (const FormatError& e) {
      EXPECT_EQ(e.path(), tiff);
      EXPECT_NE(std::string(e.what()).find("60000x60000, larger than"), std::string::npos) << e.what();
    }
  }
  // A header that holds no size is an error naming the file, never a decode.
  const std::string cut = dir.file("cut.bmp");
  std::ofstream(cut, std::ios::binary) << std::string("BM\0\0\0\0", 6);
  try {
    read_image_size(cut);
    ADD_FAILURE() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_EQ(e.path(), cut);
    EXPECT_NE(std::string(e.what()).find("BMP header"), std::string::npos) << e.what();
  }
}

// The size cap comes from memory (fuzz_image ran out of memory on a 64-byte BMP whose RLE data
// ends at once: 16384² pixels, 3.2 GB for each of two float copies). Such a file is refused by
// name; the largest image under the cap decodes, its float RGB copy within kMaxImageBytes.
TEST(ImageIo, TheSizeCapComesFromMemoryAndTheLargestImageUnderItDecodes) {
  static_assert(kMaxImagePixels * 3 * sizeof(float) <= kMaxImageBytes, "the float RGB copy fits the budget");
  const std::string images = std::string(ANOMALYSD_SOURCE_DIR) + "/tests/data/images/";
  const std::string over = images + "oversized-16384x16384.bmp";
  try {
    read_rgb_float(over);
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_EQ(e.path(), over);
  }
  // The large file is no fuzz seed: each mutation of it would decode 44.7 M pixels under ASan (79
  // runs in 30 s instead of 50,000). scripts/fuzz.sh runs it once through fuzz_image instead, within
  // libFuzzer's default RSS limit.
  const cv::Mat large = read_rgb_float(images + "large-8192x5461.bmp");
  ASSERT_EQ(large.rows, 5461);
  ASSERT_EQ(large.cols, 8192);
  ASSERT_LE(int64_t(large.rows) * large.cols, kMaxImagePixels);
  EXPECT_EQ(large.type(), CV_32FC3);
  EXPECT_EQ(cv::countNonZero(large.reshape(1)), 0);  // RLE ends at once: palette entry 0, black
}

}  // namespace
}  // namespace anomalysd

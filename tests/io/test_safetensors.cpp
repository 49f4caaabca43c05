// safetensors reader/writer: round trips for every dtype, every malformed-header case, the
// crash-safe writer, and files written by the independent Python writer of ../shared/fixtures.
#include <random>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "anomalysd/io/errors.h"
#include "anomalysd/io/inspect.h"
#include "anomalysd/io/safetensors.h"
#include "anomalysd/io/tensor_io.h"
#include "test_support.h"

namespace anomalysd {
namespace {

using test::TempDir;

// A file from raw header text and data bytes, the way a foreign (or broken) writer would lay it out.
std::string raw_file(const std::string& header, const std::string& data, int64_t declared_length = -1) {
  const uint64_t n = declared_length < 0 ? header.size() : static_cast<uint64_t>(declared_length);
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return bytes + header + data;
}

torch::Tensor sample_tensor(torch::ScalarType dtype, std::vector<int64_t> shape) {
  torch::Tensor base = torch::randn(shape, torch::kDouble) * 50;
  if (dtype == torch::kBool) return base > 0;
  if (dtype == torch::kByte) return base.abs().clamp_max(255).to(dtype);
  if (dtype == torch::kChar) return base.clamp(-128, 127).to(dtype);
  return base.to(dtype);
}

TEST(Safetensors, RoundTripEveryDtype) {
  TempDir dir;
  const std::vector<torch::ScalarType> dtypes = {torch::kDouble, torch::kFloat, torch::kHalf, torch::kBFloat16,
                                                 torch::kLong,   torch::kInt,   torch::kShort, torch::kChar,
                                                 torch::kByte,   torch::kBool};
  NamedTensors tensors;
  for (auto dtype : dtypes) tensors.emplace_back(std::string("t_") + c10::toString(dtype), sample_tensor(dtype, {3, 5, 2}));
  tensors.emplace_back("scalar", torch::tensor(3.5f).reshape({}));
  tensors.emplace_back("empty", torch::zeros({0, 4}));
  tensors.emplace_back("strided", torch::arange(12, torch::kFloat).reshape({3, 4}).t());  // non-contiguous
  const std::string path = dir.file("all.safetensors");
  save_safetensors(path, tensors, {{"format", "pt"}, {"note", "round trip"}});

  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file.header_size() % 8, 0u);
  EXPECT_EQ(file.metadata().at("note"), "round trip");
  ASSERT_EQ(file.tensors().size(), tensors.size());
  for (const auto& [name, expected] : tensors) {
    SCOPED_TRACE(name);
    const TensorInfo& info = file.info(name);
    EXPECT_EQ(to_scalar_type(info.dtype), expected.scalar_type());
    EXPECT_EQ(info.shape, expected.sizes().vec());
    const torch::Tensor loaded = load_tensor(file, name);
    EXPECT_EQ(loaded.scalar_type(), expected.scalar_type());
    EXPECT_TRUE(torch::equal(loaded, expected.contiguous()));
  }
  EXPECT_EQ(file.info("scalar").shape.size(), 0u);
  EXPECT_EQ(file.info("t_Float").dtype, StDtype::F32);
  EXPECT_EQ(file.info("t_BFloat16").dtype, StDtype::BF16);
  EXPECT_EQ(file.info("t_Bool").nbytes(), 30u);
}

TEST(Safetensors, LoadConvertsDtype) {
  TempDir dir;
  const std::string path = dir.file("half.safetensors");
  const torch::Tensor half = torch::tensor({0.5f, -1.25f, 3.0f}).to(torch::kHalf);
  save_safetensors(path, NamedTensors{{"w", half}});
  const auto file = SafetensorsFile::open(path);
  const torch::Tensor f32 = load_tensor(file, "w", torch::kCPU, torch::kFloat);
  EXPECT_EQ(f32.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(f32, torch::tensor({0.5f, -1.25f, 3.0f})));
  EXPECT_THROW(load_tensor(file, "missing"), FormatError);
}

TEST(Safetensors, ReadsUnpaddedForeignLayout) {
  // Header not padded to 8 and offsets not in name order: legal, and data is then unaligned.
  TempDir dir;
  const std::string header = R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"I16","shape":[2],"data_offsets":[4,8]}})";
  std::string data(8, '\0');
  const float b = 2.5f;
  const int16_t a[2] = {-7, 300};
  std::memcpy(data.data(), &b, 4);
  std::memcpy(data.data() + 4, a, 4);
  const std::string path = dir.file("foreign.safetensors");
  test::write_bytes(path, raw_file(header, data));
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_FLOAT_EQ(load_tensor(file, "b").item<float>(), 2.5f);
  EXPECT_TRUE(torch::equal(load_tensor(file, "a"), torch::tensor({-7, 300}, torch::kShort)));
}

struct MalformedCase {
  const char* label;
  std::string bytes;
  const char* message;  // substring the error must contain
};

std::vector<MalformedCase> malformed_cases() {
  const std::string ok_entry = R"("x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string data8(8, '\0');
  return {
      {"empty file", "", "too small to hold the 8-byte header length"},
      {"short file", "abc", "too small to hold the 8-byte header length"},
      {"length past end", raw_file("{}", "", 4096), "exceeds the file's"},
      {"absurd length", raw_file("{}", "", int64_t(1) << 40), "implausibly large"},
      {"not json", raw_file("{\"x\": nope}", ""), "header is not valid JSON"},
      {"not an object", raw_file("[1, 2]", ""), "header is not a JSON object"},
      {"entry not object", raw_file(R"({"x": 3})", ""), "tensor 'x': header entry is not an object"},
      {"unknown dtype", raw_file(R"({"x":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", std::string(2, '\0')),
       "tensor 'x': unsupported dtype 'F8_E4M3'"},
      {"missing offsets", raw_file(R"({"x":{"dtype":"F32","shape":[2]}})", data8), "tensor 'x': header entry lacks 'data_offsets'"},
      {"missing shape", raw_file(R"({"x":{"dtype":"F32","data_offsets":[0,8]}})", data8), "tensor 'x': header entry lacks 'shape'"},
      {"negative dim", raw_file(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8), "negative size"},
      {"three offsets", raw_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}})", data8),
       "'data_offsets' must be two non-negative integers"},
      {"begin after end", raw_file(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data8), "begin after they end"},
      {"past data", raw_file(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data8),
       "tensor 'x': data_offsets [0,16] run past the end of the data section (8 bytes)"},
      {"size mismatch", raw_file(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8),
       "tensor 'x': shape [3] of F32 needs 12 bytes but data_offsets [0,8] hold 8"},
      {"overlap", raw_file("{" + ok_entry + R"(,"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data8),
       "tensors 'x' and 'y' overlap"},
      {"duplicate name", raw_file("{" + ok_entry + "," + ok_entry + "}", data8), "header names 'x' twice"},
      {"metadata not strings", raw_file(R"({"__metadata__":{"format":1}})", ""), "'__metadata__' value of 'format' is not a string"},
      {"metadata not object", raw_file(R"({"__metadata__":[]})", ""), "'__metadata__' is not an object"},
  };
}

TEST(Safetensors, RejectsEveryMalformedHeaderWithItsReason) {
  TempDir dir;
  for (const auto& c : malformed_cases()) {
    SCOPED_TRACE(c.label);
    const std::string path = dir.file("bad.safetensors");
    test::write_bytes(path, c.bytes);
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << "accepted a malformed file";
    } catch (const FormatError& e) {
      EXPECT_EQ(e.path(), path);
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << "message was: " << e.what();
      EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << "message must start with the file name";
    }
  }
}

TEST(Safetensors, MissingFileNamesIt) {
  try {
    SafetensorsFile::open("/nonexistent/w.safetensors");
    ADD_FAILURE();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/w.safetensors: cannot open"), std::string::npos);
  }
}

TEST(Safetensors, TruncatedCopyOfValidFileIsRejected) {
  TempDir dir;
  const std::string good = dir.file("good.safetensors");
  save_safetensors(good, NamedTensors{{"a", torch::ones({16})}, {"b", torch::ones({16})}});
  const std::string bytes = test::read_bytes(good);
  for (std::size_t cut : {std::size_t(4), std::size_t(20), bytes.size() - 1}) {
    SCOPED_TRACE(cut);
    const std::string path = dir.file("cut.safetensors");
    test::write_bytes(path, bytes.substr(0, cut));
    EXPECT_THROW(SafetensorsFile::open(path), FormatError);
  }
}

TEST(Safetensors, RandomCorruptionIsRejectedOrReadSafely) {
  // Mutated copies of a valid file must either open and read within bounds or throw FormatError:
  // never crash, never read past the mapping.
  TempDir dir;
  const std::string good = dir.file("good.safetensors");
  save_safetensors(good, NamedTensors{{"a", torch::arange(6, torch::kFloat)}, {"b", torch::ones({2, 2}, torch::kHalf)}, {"c", torch::tensor(7, torch::kLong)}},
                   {{"format", "pt"}});
  const std::string bytes = test::read_bytes(good);
  std::mt19937 rng(1234);
  int opened = 0, rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string mutated = bytes;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t pos = rng() % mutated.size();
      switch (rng() % 3) {
        case 0: mutated[pos] = static_cast<char>(rng() % 256); break;                  // flip a byte
        case 1: mutated.resize(pos); break;                                              // truncate
        default: mutated.insert(pos, 1, static_cast<char>("{}[],:\"0123456789"[rng() % 17])); break;  // insert JSON-ish
      }
      if (mutated.empty()) break;
    }
    const std::string path = dir.file("mutated.safetensors");
    test::write_bytes(path, mutated);
    try {
      const auto file = SafetensorsFile::open(path);
      for (const auto& t : file.tensors()) load_tensor(file, t.name);
      ++opened;
    } catch (const FormatError&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 2000);  // most mutations break the header
  EXPECT_GT(opened, 0);       // some only touch tensor data
}

TEST(Safetensors, FailedWriteKeepsPreviousFileAndLeavesNoTemp) {
  TempDir dir;
  const std::string path = dir.file("weights.safetensors");
  save_safetensors(path, NamedTensors{{"keep", torch::full({4}, 7.0f)}});
  const std::string before = test::read_bytes(path);

  EXPECT_THROW(save_safetensors(path, NamedTensors{{"ok", torch::ones({2})}, {"bad", torch::ones({2}, torch::kComplexFloat)}}),
               FormatError);
  EXPECT_THROW(save_safetensors(path, NamedTensors{{"dup", torch::ones({1})}, {"dup", torch::ones({1})}}), FormatError);
  EXPECT_EQ(test::read_bytes(path), before);
  int entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1) << "a temporary file was left behind";
  EXPECT_THROW(save_safetensors(dir.file("no/such/folder/w.safetensors"), NamedTensors{{"a", torch::ones({1})}}), FormatError);
}

TEST(Safetensors, InspectReportsTensorsAndTotals) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  save_safetensors(path, NamedTensors{{"conv.weight", torch::zeros({4, 3, 3, 3})}, {"conv.bias", torch::zeros({4}, torch::kHalf)}},
                   {{"format", "pt"}});
  const auto file = SafetensorsFile::open(path);
  const std::string table = inspect_table(file);
  EXPECT_NE(table.find("2 tensors"), std::string::npos);
  EXPECT_NE(table.find("conv.weight"), std::string::npos);
  EXPECT_NE(table.find("[4, 3, 3, 3]"), std::string::npos);
  EXPECT_NE(table.find("total: 112 elements, 440 bytes"), std::string::npos) << table;
  const auto json = inspect_json(file);
  EXPECT_EQ(json["tensors"].size(), 2u);
  EXPECT_EQ(json["tensors"][0]["name"], "conv.bias");
  EXPECT_EQ(json["tensors"][0]["dtype"], "F16");
  EXPECT_EQ(json["tensors"][0]["bytes"], 8);
  EXPECT_EQ(json["metadata"]["format"], "pt");
}

// Files written by the fixtures' independent pure-Python writer.
TEST(SafetensorsFixtures, ReadsPythonWrittenFiles) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  const auto unet = SafetensorsFile::open((fixtures / "unet_sd2_inpaint_tiny/diffusion_pytorch_model.safetensors").string());
  EXPECT_EQ(unet.metadata().at("format"), "pt");
  EXPECT_EQ(unet.info("conv_in.weight").shape, (std::vector<int64_t>{32, 9, 3, 3}));
  EXPECT_EQ(unet.info("conv_in.weight").dtype, StDtype::F32);

  const auto ddim = SafetensorsFile::open((fixtures / "ddim_scheduler/inputs_outputs.safetensors").string());
  const torch::Tensor alphas = load_tensor(ddim, "alphas_cumprod");
  ASSERT_EQ(alphas.sizes(), torch::IntArrayRef({1000}));
  // scaled_linear betas from 0.00085: alphas_cumprod[0] = 1 - 0.00085.
  EXPECT_NEAR(alphas[0].item<float>(), 0.99915f, 1e-6);
  EXPECT_LT(alphas[999].item<float>(), alphas[0].item<float>());

  const auto io = SafetensorsFile::open((fixtures / "unet_sd2_inpaint_tiny/inputs_outputs.safetensors").string());
  EXPECT_TRUE(torch::equal(load_tensor(io, "timestep"), torch::tensor({981, 21}, torch::kLong)));
  EXPECT_EQ(io.info("timestep_scalar").shape.size(), 0u);
  EXPECT_EQ(load_tensor(io, "timestep_scalar").item<int64_t>(), 500);
}

TEST(SafetensorsFixtures, RewriteKeepsEveryTensorBitExact) {
  ANOMALYSD_REQUIRE_FIXTURES(fixtures);
  TempDir dir;
  const std::string source = (fixtures / "vae_kl_tiny/inputs_outputs.safetensors").string();
  const auto original = load_all(source);
  const std::string copy = dir.file("copy.safetensors");
  save_safetensors(copy, original, {{"format", "pt"}});
  const auto reread = load_all(copy);
  ASSERT_EQ(reread.size(), original.size());
  for (const auto& [name, t] : original) EXPECT_TRUE(torch::equal(reread.at(name), t)) << name;
  // Both writers lay tensors out in name order, so the data sections must be byte-identical.
  const auto a = SafetensorsFile::open(source), b = SafetensorsFile::open(copy);
  EXPECT_EQ(test::read_bytes(source).substr(8 + a.header_size()), test::read_bytes(copy).substr(8 + b.header_size()));
}

}  // namespace
}  // namespace anomalysd

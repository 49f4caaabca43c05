#include <algorithm>
// Config binding: defaults, overrides, and errors that name file:line:col or the --set that
// supplied the bad value.
#include <cstdlib>
#include <filesystem>
#include <set>

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "anomalysd/core/app_config.h"
#include "anomalysd/core/runtime.h"
#include "anomalysd/data/prompts.h"
#include "anomalysd/io/config.h"
#include "anomalysd/io/errors.h"
#include "test_support.h"

namespace anomalysd {
namespace {

// Runs `bind` on `text` and returns the ConfigError message ("" if none was thrown).
template <typename Bind>
std::string config_error(const std::string& text, Bind&& bind, const std::vector<std::string>& overrides = {}) {
  try {
    ConfigSource source = parse_config_text(text, "cfg.yaml");
    apply_overrides(source, overrides);
    bind(source);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

void bind_app(const ConfigSource& s) { AppConfig::from_source(s); }

TEST(Config, EmbeddedDefaultHoldsTheDocumentedDefaults) {
  const AppConfig c = load_app_config("");
  EXPECT_EQ(c.runtime.device, "auto");
  EXPECT_EQ(c.runtime.dtype, "float32");
  EXPECT_EQ(c.runtime.seed, 0);
  EXPECT_EQ(c.runtime.threads, 0);
}

TEST(Config, ShippedConfigsAreValid) {
  const AppConfig c = load_app_config(std::string(ANOMALYSD_SOURCE_DIR) + "/configs/default.yaml");
  EXPECT_EQ(c.runtime.device, "auto");
  const std::string dir = std::string(ANOMALYSD_SOURCE_DIR) + "/configs/";
  const AppConfig mvtec = load_app_config(dir + "mvtec.yaml");
  EXPECT_EQ(mvtec.inference.class_strength.size(), 15u);
  EXPECT_DOUBLE_EQ(mvtec.inference.strength_for("screw"), 0.4);
  EXPECT_EQ(resolve_config_path(mvtec, mvtec.prompts.at(0)).find("prompts/mvtec.yaml") != std::string::npos, true);
  EXPECT_EQ(load_app_config(dir + "visa.yaml").inference.class_strength.size(), 12u);
  // §5.1's training length, in its own unit: epochs (steps 0 = not set).
  for (const char* f : {"default.yaml", "mvtec.yaml", "visa.yaml"}) {
    const AppConfig t = load_app_config(dir + f);
    EXPECT_EQ(t.train.unet_epochs, 4000) << f;
    EXPECT_EQ(t.train.decoder_epochs, 200) << f;
    EXPECT_EQ(t.train.unet_steps, 0) << f;
    EXPECT_EQ(t.train.decoder_steps, 0) << f;
  }
  const AppConfig fast = load_app_config(dir + "fast.yaml");
  EXPECT_EQ(fast.inference.mask_packing, "grid2x2");
  EXPECT_EQ(fast.inference.steps, 20);
}

TEST(Config, ReadsValuesAndOverrides) {
  ConfigSource s = parse_config_text("device: cpu\nseed: 7\nthreads: 3\n", "cfg.yaml");
  apply_overrides(s, {"seed=11", "dtype=bfloat16"});
  const AppConfig c = AppConfig::from_source(s);
  EXPECT_EQ(c.runtime.device, "cpu");
  EXPECT_EQ(c.runtime.seed, 11);
  EXPECT_EQ(c.runtime.threads, 3);
  EXPECT_EQ(c.runtime.dtype, "bfloat16");
}

TEST(Config, ModelSection) {
  ConfigSource s = parse_config_text("model:\n  path: models/sd2-inpainting\n", "cfg.yaml");
  apply_override(s, "model.variant=fp16");
  const AppConfig c = AppConfig::from_source(s);
  EXPECT_EQ(c.model.path, "models/sd2-inpainting");
  EXPECT_EQ(c.model.variant, "fp16");
  EXPECT_EQ(config_error("model: 3\n", bind_app), "cfg.yaml:1:8: key 'model' must be a section (a mapping), got '3'");
}

TEST(Config, EmptyDocumentMeansDefaults) {
  const AppConfig c = AppConfig::from_source(parse_config_text("# nothing\n", "cfg.yaml"));
  EXPECT_EQ(c.runtime.device, "auto");
}

TEST(Config, UnknownKeyNamesLineAndColumn) {
  EXPECT_EQ(config_error("device: cpu\n  \nnoise_strenght: 0.5\n", bind_app).rfind("cfg.yaml:3:1: unknown key 'noise_strenght'", 0), 0u);
}

TEST(Config, WrongTypeNamesKeyAndValue) {
  EXPECT_EQ(config_error("seed: seven\n", bind_app), "cfg.yaml:1:7: key 'seed' must be an integer, got 'seven'");
  EXPECT_EQ(config_error("threads: [1, 2]\n", bind_app), "cfg.yaml:1:10: key 'threads' must be an integer, got a list");
  EXPECT_EQ(config_error("seed: 1.5\n", bind_app), "cfg.yaml:1:7: key 'seed' must be an integer, got '1.5'");
}

TEST(Config, OutOfRangeAndBadChoice) {
  EXPECT_EQ(config_error("threads: -1\n", bind_app), "cfg.yaml:1:10: key 'threads' = -1 is out of range [0, 1024]");
  EXPECT_EQ(config_error("dtype: fp8\n", bind_app),
            "cfg.yaml:1:8: key 'dtype' = 'fp8' is not one of: float32, float16, bfloat16, auto");
  EXPECT_EQ(config_error("device: gpu\n", bind_app),
            "cfg.yaml:1:9: key 'device' = 'gpu' is not one of: auto, cpu, cuda, cuda:N");
}

// `precision:` sets each SD part's dtype; `auto` follows `dtype`'s rule, which keeps the latents
// (noise, z_t, the DDIM step) in float32 whatever `dtype` says.
TEST(Config, PrecisionPerPartAutoFollowsDtypeButKeepsTheLatentsFloat32) {
  auto resolved = [](const std::vector<std::string>& overrides) {
    ConfigSource source = parse_config_text("", "cfg.yaml");
    apply_overrides(source, overrides);
    return resolve_precision(AppConfig::from_source(source).runtime);
  };
  EXPECT_TRUE(resolved({}).all_float32());
  const PipelinePrecision bf16 = resolved({"dtype=bfloat16"});
  EXPECT_EQ(bf16, PipelinePrecision::for_dtype(c10::kBFloat16));
  EXPECT_EQ(bf16.unet, c10::kBFloat16);
  EXPECT_EQ(bf16.latents, c10::kFloat) << bf16.describe();
  const PipelinePrecision fp16 = resolved({"dtype=float16"});
  EXPECT_EQ(fp16.unet, c10::kHalf);
  EXPECT_EQ(fp16.latents, c10::kFloat) << fp16.describe();
  // One part alone, for measuring where half precision costs.
  const PipelinePrecision decoder = resolved({"precision.vae_decoder=bfloat16"});
  EXPECT_EQ(decoder.describe(), "text_encoder=float32 unet=float32 vae_encoder=float32 vae_decoder=bfloat16 latents=float32");
  EXPECT_EQ(resolved({"dtype=bfloat16", "precision.latents=bfloat16"}), PipelinePrecision::uniform(c10::kBFloat16));
  EXPECT_EQ(resolved({"dtype=bfloat16", "precision.unet=float32"}).unet, c10::kFloat);
  EXPECT_EQ(config_error("precision:\n  unet: fp8\n", bind_app),
            "cfg.yaml:2:9: key 'precision.unet' = 'fp8' is not one of: auto, float32, float16, bfloat16");
  EXPECT_EQ(config_error("precision:\n  vae: bfloat16\n", bind_app).rfind("cfg.yaml:2:3: unknown key 'precision.vae'", 0), 0u)
      << config_error("precision:\n  vae: bfloat16\n", bind_app);
  // The resolved config says it, and reads back the same.
  ConfigSource source = parse_config_text("precision:\n  vae_encoder: float16\n", "cfg.yaml");
  const AppConfig c = AppConfig::from_source(source);
  EXPECT_EQ(AppConfig::from_source(parse_config_text(c.to_yaml(), "dump.yaml")).runtime.precision.vae_encoder, "float16");
}

TEST(Config, OverrideErrorsNameTheOverride) {
  EXPECT_EQ(config_error("", bind_app, {"threads=lots"}), "--set threads=lots: key 'threads' must be an integer, got 'lots'");
  EXPECT_EQ(config_error("", bind_app, {"models.path=x"}).rfind("--set models.path=x: unknown key 'models'", 0), 0u);
  EXPECT_EQ(config_error("", bind_app, {"model.varaint=fp16"}).rfind("--set model.varaint=fp16: unknown key 'model.varaint'", 0), 0u);
  EXPECT_EQ(config_error("", bind_app, {"novalue"}), "--set novalue: expected --set key.path=value");
  EXPECT_EQ(config_error("seed: 1\n", bind_app, {"seed.x=2"}), "--set seed.x=2: 'seed' is a value, not a section");
  EXPECT_EQ(config_error("", bind_app, {"a..b=2"}), "--set a..b=2: empty component in key 'a..b'");
}

TEST(Config, InvalidYamlNamesLine) {
  const std::string e = config_error("device: cpu\nseed: [1, 2\n", bind_app);
  EXPECT_EQ(e.rfind("cfg.yaml:", 0), 0u) << e;
  EXPECT_NE(e.find("invalid YAML"), std::string::npos) << e;
  EXPECT_EQ(config_error("- a\n- b\n", bind_app), "cfg.yaml: a config must be a mapping of keys to values");
}

TEST(Config, MissingFileIsFormatError) {
  EXPECT_THROW(load_app_config("/nonexistent/config.yaml"), FormatError);
}

// The section machinery that later stages build on: nesting, lists, doubles, required keys.
TEST(ConfigSection, NestedSectionsListsAndNumbers) {
  ConfigSource s = parse_config_text(
      "infer:\n  strength: 0.5\n  scales: [1, 2, 4, 8]\n  classes: bottle\n  weights: [0.9, 0.1]\n", "cfg.yaml");
  apply_override(s, "infer.masks.blur_sigma=4");
  ConfigSection root = ConfigSection::root(s);
  ConfigSection infer = root.section("infer");
  EXPECT_DOUBLE_EQ(infer.get_double("strength", 1.0, 0.0, 1.0), 0.5);
  EXPECT_EQ(infer.get_int_list("scales", {}, 1, 64), (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_EQ(infer.get_string_list("classes", {}), (std::vector<std::string>{"bottle"}));
  EXPECT_EQ(infer.get_double_list("weights", {}, 0, 1), (std::vector<double>{0.9, 0.1}));
  ConfigSection masks = infer.section("masks");
  EXPECT_DOUBLE_EQ(masks.get_double("blur_sigma", 0, 0, 100), 4.0);
  EXPECT_FALSE(masks.get_bool("absent", false));
  EXPECT_NO_THROW(masks.finish());
  EXPECT_NO_THROW(infer.finish());
  EXPECT_NO_THROW(root.finish());
}

TEST(ConfigSection, ValueErrorsInNestedSections) {
  ConfigSource s = parse_config_text("infer:\n  strength: .nan\n  scales: [1, 100]\n  flag: maybe\n  sub: 3\n", "cfg.yaml");
  ConfigSection infer = ConfigSection::root(s).section("infer");
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(message([&] { infer.get_double("strength", 0, 0, 1); }),
            "cfg.yaml:2:13: key 'infer.strength' must be a finite number, got '.nan'");
  EXPECT_EQ(message([&] { infer.get_int_list("scales", {}, 1, 64); }),
            "cfg.yaml:3:11: key 'infer.scales' holds 100, out of range [1, 64]");
  EXPECT_EQ(message([&] { infer.get_bool("flag", false); }), "cfg.yaml:4:9: key 'infer.flag' must be true or false, got 'maybe'");
  EXPECT_EQ(message([&] { infer.section("sub"); }), "cfg.yaml:5:8: key 'infer.sub' must be a section (a mapping), got '3'");
  EXPECT_EQ(message([&] { infer.require_string("model"); }), "cfg.yaml:2:3: required key 'infer.model' is missing");
}

}  // namespace
}  // namespace anomalysd

namespace anomalysd {
namespace {

TEST(MethodConfig, DefaultsAreThePapersSettings) {
  const AppConfig c = load_app_config("");
  EXPECT_EQ(c.resolution, 512);
  EXPECT_EQ(c.inference.steps, 50);
  EXPECT_DOUBLE_EQ(c.inference.strength, 0.4);
  EXPECT_EQ(c.inference.scales, (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_DOUBLE_EQ(c.inference.alpha, 0.1);
  EXPECT_DOUBLE_EQ(c.inference.blur_sigma, 4.0);
  EXPECT_DOUBLE_EQ(c.inference.guidance_scale, 1.0);
  EXPECT_EQ(c.inference.mask_packing, "none");
  EXPECT_EQ(c.features.taps, (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(c.train.iou_thresholds, (std::vector<double>{0.0, 0.2, 0.5}));
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-4);
  EXPECT_EQ(c.train.batch_size, 8);
  EXPECT_DOUBLE_EQ(c.train.decoder_lpips_weight, 0.1);
  // The printed config reads back to the same values.
  const AppConfig again = AppConfig::from_source(parse_config_text(c.to_yaml(), "printed"));
  EXPECT_EQ(again.to_yaml(), c.to_yaml());
}

TEST(MethodConfig, InferenceDefaultsAreWrittenOnceAndTheDefaultFileRepeatsThem) {
  // The compiled-in defaults (anomaly/inference_settings.h) and configs/default.yaml agree, and the
  // file lists every key of the section (so the reader sees each default).
  const std::string path = std::string(ANOMALYSD_SOURCE_DIR) + "/configs/default.yaml";
  EXPECT_TRUE(load_app_config(path).inference == InferenceSettings{});
  EXPECT_TRUE(load_app_config("").inference == InferenceSettings{});
  std::vector<std::string> listed, bound;
  for (const auto& kv : YAML::LoadFile(path)["inference"]) listed.push_back(kv.first.as<std::string>());
  for (const auto& kv : YAML::Load(load_app_config("").to_yaml())["inference"]) bound.push_back(kv.first.as<std::string>());
  std::sort(listed.begin(), listed.end());
  std::sort(bound.begin(), bound.end());
  EXPECT_EQ(listed, bound);
  // Any field differs: the comparison sees it.
  InferenceSettings other;
  other.mask_batch = 4;
  EXPECT_FALSE(other == InferenceSettings{});
}

TEST(MethodConfig, TrainDefaultsAreWrittenOnceAndTheDefaultFileRepeatsThem) {
  // train/train_settings.h's defaults and configs/default.yaml's train: section say the same, key
  // for key (augment: included), as the resolved config prints them.
  const std::string path = std::string(ANOMALYSD_SOURCE_DIR) + "/configs/default.yaml";
  auto train_section = [](const AppConfig& c) { return YAML::Dump(YAML::Load(c.to_yaml())["train"]); };
  AppConfig compiled;
  compiled.train = TrainSettings{};
  EXPECT_EQ(train_section(load_app_config(path)), train_section(compiled));
  std::vector<std::string> listed, bound;
  for (const auto& kv : YAML::LoadFile(path)["train"]) listed.push_back(kv.first.as<std::string>());
  for (const auto& kv : YAML::Load(compiled.to_yaml())["train"]) bound.push_back(kv.first.as<std::string>());
  std::sort(listed.begin(), listed.end());
  std::sort(bound.begin(), bound.end());
  EXPECT_EQ(listed, bound);
  // A default changed in one place only: the comparison sees it.
  compiled.train.augment.rotation = 15;
  EXPECT_NE(train_section(load_app_config(path)), train_section(compiled));
}

TEST(MethodConfig, PerClassStrengthAndItsErrors) {
  ConfigSource s = parse_config_text("inference:\n  class_strength: {screw: 0.3}\n", "cfg.yaml");
  apply_override(s, "inference.class_strength.wood=0.5");
  const AppConfig c = AppConfig::from_source(s);
  EXPECT_DOUBLE_EQ(c.inference.strength_for("screw"), 0.3);
  EXPECT_DOUBLE_EQ(c.inference.strength_for("wood"), 0.5);
  EXPECT_DOUBLE_EQ(c.inference.strength_for("bottle"), 0.4);
  auto bind = [](const ConfigSource& src) { AppConfig::from_source(src); };
  EXPECT_EQ(config_error("inference:\n  class_strength: {screw: 1.5}\n", bind),
            "cfg.yaml:2:27: key 'inference.class_strength.screw' = 1.5 is out of range [0, 1]");
  EXPECT_EQ(config_error("inference:\n  strenght: 0.3\n", bind).substr(0, 46), "cfg.yaml:2:3: unknown key 'inference.strenght'");
  EXPECT_NE(config_error("inference:\n  multiscale: false\n  prototype_mask: false\n", bind).find("no mask left"), std::string::npos);
  EXPECT_NE(config_error("inference:\n  mask_packing: grid3x3\n", bind).find("none, grid2x2"), std::string::npos);
  EXPECT_NE(config_error("train:\n  augment:\n    scale: [1.2, 0.8]\n", bind).find("train.augment.scale"), std::string::npos);
}

}  // namespace
}  // namespace anomalysd

namespace anomalysd {
namespace {

// Found by fuzz_config (tests/fuzz/seeds/config/regression-invalid-utf8.yaml): yaml-cpp stops
// reading at bytes that are not UTF-8, so the rest of the file silently took its defaults (the
// printed config read back differently). Now an error naming the position.
TEST(Config, InvalidUtf8IsAnErrorNotATruncatedConfig) {
  auto bind = [](const ConfigSource& src) { AppConfig::from_source(src); };
  EXPECT_EQ(config_error("seed: 3\nprompts: [a\xff.yaml]\ninference:\n  steps: 7\n", bind),
            "cfg.yaml:2:12: invalid UTF-8 (a YAML config must be UTF-8 text)");
  EXPECT_EQ(config_error("seed: 1\n", bind, {"prompts=[\xc3\x28]"}), "--set prompts=[\xc3\x28]: invalid UTF-8 in the override");
  // Well-formed multi-byte text is fine.
  EXPECT_EQ(config_error("prompts: [\"caf\xc3\xa9.yaml\"]\n", bind), "");
}

}  // namespace
}  // namespace anomalysd

namespace anomalysd {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kMvtecClasses = {"bottle", "cable",  "capsule", "carpet",     "grid",       "hazelnut", "leather", "metal_nut",
                                                "pill",   "screw",  "tile",    "toothbrush", "transistor", "wood",     "zipper"};
const std::vector<std::string> kVisaClasses = {"candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1",
                                               "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum"};

TEST(ShippedFiles, EveryConfigLoadsRoundTripsAndItsPromptFilesExist) {
  int configs = 0;
  for (const auto& e : fs::directory_iterator(fs::path(ANOMALYSD_SOURCE_DIR) / "configs")) {
    if (e.path().extension() != ".yaml") continue;
    // Not a run config: the list of real photographs, checked file by file in tests/data/test_photos.cpp.
    if (e.path().filename() == "photos.yaml") continue;
    SCOPED_TRACE(e.path().string());
    ++configs;
    AppConfig c;
    ASSERT_NO_THROW(c = load_app_config(e.path().string()));
    // Every key bound (an unknown one would have thrown), and the resolved config reads back the same.
    ConfigSource again = parse_config_text(c.to_yaml(), "resolved.yaml");
    EXPECT_EQ(AppConfig::from_source(again).to_yaml(), c.to_yaml());
    for (const auto& p : c.prompts) {
      const std::string resolved = resolve_config_path(c, p);
      EXPECT_TRUE(fs::is_regular_file(resolved)) << p << " -> " << resolved;
      EXPECT_NO_THROW(PromptBook::load({resolved}));
    }
  }
  EXPECT_EQ(configs, 5);  // default, demo, fast, mvtec, visa: a new file is loaded here too
}

TEST(ShippedFiles, PromptFilesHoldEveryClassOfTheirBenchmark) {
  const fs::path dir = fs::path(ANOMALYSD_SOURCE_DIR) / "prompts";
  for (const auto& [file, classes] : std::vector<std::pair<std::string, std::vector<std::string>>>{{"mvtec.yaml", kMvtecClasses},
                                                                                                   {"visa.yaml", kVisaClasses}}) {
    const PromptBook book = PromptBook::load({(dir / file).string()});
    EXPECT_EQ(book.size(), classes.size()) << file;
    for (const auto& cls : classes) {
      SCOPED_TRACE(file + ": " + cls);
      ASSERT_TRUE(book.has(cls));
      const ClassPrompts p = book.for_class(cls);
      // 𝒯_c¹ of §4.1, "A perfect [c]." with [c] in words (VisA's pcb1 is "printed circuit board")
      EXPECT_EQ(p.coarse.rfind("A perfect ", 0), 0u) << p.coarse;
      EXPECT_EQ(p.coarse.back(), '.') << p.coarse;
      EXPECT_GE(p.detailed.size(), 1u);                                    // 𝒯_c²
      EXPECT_TRUE(p.foreground == "object" || p.foreground == "texture") << p.foreground;
      EXPECT_EQ(p.source, (dir / file).string());
    }
  }
  // The textures of MVTec-AD are the five of the paper's texture group.
  const PromptBook mvtec = PromptBook::load({(dir / "mvtec.yaml").string()});
  std::set<std::string> textures;
  for (const auto& cls : kMvtecClasses)
    if (mvtec.for_class(cls).foreground == "texture") textures.insert(cls);
  EXPECT_EQ(textures, (std::set<std::string>{"carpet", "grid", "leather", "tile", "wood"}));
}

TEST(PromptBook, AllIsCoarseThenDetailedFallbackUnknownClassAndOverrides) {
  test::TempDir tmp;
  test::write_bytes(tmp.file("a.yaml"),
                    "metal_nut:\n  coarse: \"A perfect metal nut.\"\n  detailed: [\"d1\", \"d2\"]\n  foreground: object\n"
                    "wood:\n  detailed: [\"grain\"]\n  foreground: texture\n");
  test::write_bytes(tmp.file("b.yaml"), "wood:\n  coarse: \"Wood.\"\n");
  const PromptBook a = PromptBook::load({tmp.file("a.yaml")});
  // What inference averages (§4.2) and fine-tuning draws from: coarse first, then the detailed ones.
  EXPECT_EQ(a.for_class("metal_nut").all(), (std::vector<std::string>{"A perfect metal nut.", "d1", "d2"}));
  EXPECT_EQ(a.for_class("metal_nut").foreground, "object");
  // A missing coarse prompt is "A perfect [c]." from the readable class name.
  EXPECT_EQ(a.for_class("wood").all(), (std::vector<std::string>{"A perfect wood.", "grain"}));
  EXPECT_EQ(a.for_class("wood").foreground, "texture");
  // An unknown class: the fallback, with no foreground kind (fine-tuning then uses `object`).
  const ClassPrompts unknown = a.for_class("pipe_fryum");
  EXPECT_EQ(unknown.all(), (std::vector<std::string>{"A perfect pipe fryum."}));
  EXPECT_EQ(unknown.source, "fallback");
  EXPECT_EQ(unknown.foreground, "");
  EXPECT_FALSE(a.has("pipe_fryum"));
  // Later files replace a class as a whole.
  const PromptBook ab = PromptBook::load({tmp.file("a.yaml"), tmp.file("b.yaml")});
  EXPECT_EQ(ab.for_class("wood").all(), (std::vector<std::string>{"Wood."}));
  EXPECT_EQ(ab.for_class("wood").source, tmp.file("b.yaml"));
  EXPECT_EQ(ab.for_class("metal_nut").detailed.size(), 2u);
  // A foreground kind that is not object/texture: an error naming the key and file.
  test::write_bytes(tmp.file("bad.yaml"), "screw:\n  foreground: metal\n");
  try {
    PromptBook::load({tmp.file("bad.yaml")});
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("screw.foreground"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.yaml"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace anomalysd

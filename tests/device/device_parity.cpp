// Parity of the model library on a CUDA device against the reference fixtures, in float32 (TF32
// off) and in float16/bfloat16 (looser, reported). Prints one line per check and a summary line
// "N passed, N failed"; exit code 1 on any float32 failure.
//
//   device_parity FIXTURES_DIR [cuda|cpu] [--bench SD_CONFIGS_DIR]
// With --bench, also times the real-size SD2-inpainting UNet and VAE (random weights) on the device.
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "anomalysd/anomaly/prototype.h"
#include "anomalysd/io/tensor_io.h"
#include "anomalysd/models/alexnet_lpips.h"
#include "anomalysd/models/clip_text.h"
#include "anomalysd/models/ddim.h"
#include "anomalysd/models/unet.h"
#include "anomalysd/models/vae.h"
#include "anomalysd/models/weights.h"

using namespace anomalysd;
namespace fs = std::filesystem;

namespace {

int passed = 0, failed = 0;

void check(const std::string& name, const torch::Tensor& got, const torch::Tensor& ref, double tol, bool counts = true) {
  const torch::Tensor y = got.detach().to(torch::kCPU, torch::kDouble), r = ref.to(torch::kDouble);
  const double err = y.sizes() == r.sizes() ? (y - r).abs().max().item<double>() : INFINITY;
  const double bound = tol * std::max(1.0, r.abs().max().item<double>());
  const bool ok = err <= bound;
  std::printf("%-4s %-52s max|diff| %.3g (bound %.3g)%s\n", ok ? "ok" : "FAIL", name.c_str(), err, bound, counts ? "" : " [informative]");
  if (counts) ok ? ++passed : ++failed;
}

}  // namespace

int run(int argc, char** argv);

// Median seconds of `repeats` runs after a warm-up, synchronising the device around each.
double time_median(const std::function<void()>& f, const torch::Device& device, int repeats = 5) {
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  f();
  sync();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto s = std::chrono::steady_clock::now();
    f();
    sync();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void bench(const fs::path& sd2, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  for (auto dt : {torch::kHalf, torch::kFloat}) {
    UNet2DConditionModel unet(UNetConfig::from_json((sd2 / "unet/config.json").string()));
    unet->eval();
    unet->to(device, dt);
    for (int64_t b : {1, 4, 16}) {
      const auto opts = torch::TensorOptions().device(device).dtype(dt);
      const torch::Tensor x = torch::randn({b, 9, 64, 64}, opts), ctx = torch::randn({b, 77, 1024}, opts);
      const torch::Tensor t = torch::full({b}, 981, torch::TensorOptions().device(device).dtype(torch::kLong));
      const double s = time_median([&] { unet->forward(x, t, ctx); }, device);
      std::printf("bench unet sd2 %-8s batch %2lld: %.4f s per forward, %.4f s per sample\n", c10::toString(dt),
                  static_cast<long long>(b), s, s / b);
    }
    AutoencoderKL vae(VaeConfig::from_json((sd2 / "vae/config.json").string()));
    vae->eval();
    vae->to(device, dt);
    const auto opts = torch::TensorOptions().device(device).dtype(dt);
    const torch::Tensor image = torch::rand({1, 3, 512, 512}, opts) * 2 - 1, z = torch::randn({1, 4, 64, 64}, opts);
    std::printf("bench vae sd2 %-8s encode 512²: %.4f s, decode: %.4f s\n", c10::toString(dt),
                time_median([&] { vae->encode(image); }, device), time_median([&] { vae->decode(z); }, device));
  }
  if (device.is_cuda())
    std::printf("bench peak CUDA memory: see nvidia-smi; device %s\n", device.str().c_str());
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::printf("error: %s\n%d passed, %d failed\n", e.what(), passed, failed + 1);
    return 1;
  }
}

int run(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: device_parity FIXTURES_DIR [cuda|cpu]\n");
    return 2;
  }
  const fs::path fx(argv[1]);
  const torch::Device device(argc > 2 ? argv[2] : "cuda");
  std::printf("LibTorch %d.%d.%d, device %s, CUDA available %d\n", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH,
              device.str().c_str(), int(torch::cuda::is_available()));
  // Parity in float32 needs exact float32 convolutions and matmuls (cuDNN defaults to TF32).
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  torch::NoGradGuard no_grad;
  auto to = [&](const torch::Tensor& t, torch::ScalarType dt) { return t.is_floating_point() ? t.to(device, dt) : t.to(device); };
  const auto start = std::chrono::steady_clock::now();
  // Half-precision matmuls exist only on CUDA in LibTorch 1.x; a CPU dry run checks float32.
  const std::vector<torch::ScalarType> low_precision =
      device.is_cuda() ? std::vector<torch::ScalarType>{torch::kFloat, torch::kHalf, torch::kBFloat16} : std::vector<torch::ScalarType>{torch::kFloat};

  for (const char* name : {"unet_sd2_inpaint_tiny", "unet_sd1_inpaint_tiny"}) {
    const auto io = load_all((fx / name / "inputs_outputs.safetensors").string());
    for (auto dt : low_precision) {
      UNet2DConditionModel unet = load_unet((fx / name).string());
      unet->to(device, dt);
      const std::string tag = std::string(name) + " " + c10::toString(dt);
      const double tol = dt == torch::kFloat ? 1e-4 : dt == torch::kHalf ? 2e-2 : 6e-2;
      check(tag + " out", unet->forward(to(io.at("sample"), dt), io.at("timestep"), to(io.at("encoder_hidden_states"), dt)), io.at("out"), tol, dt == torch::kFloat);
      check(tag + " out_t500", unet->forward(to(io.at("sample"), dt), io.at("timestep_scalar"), to(io.at("encoder_hidden_states"), dt)), io.at("out_t500"), tol, dt == torch::kFloat);
    }
  }
  {
    const auto io = load_all((fx / "vae_kl_tiny/inputs_outputs.safetensors").string());
    for (auto dt : low_precision) {
      if (dt == torch::kBFloat16) continue;
      AutoencoderKL vae = load_vae((fx / "vae_kl_tiny").string());
      vae->to(device, dt);
      const std::string tag = std::string("vae ") + c10::toString(dt);
      const double tol = dt == torch::kFloat ? 1e-4 : 2e-2;
      const LatentPosterior p = vae->encode(to(io.at("image"), dt));
      check(tag + " posterior_mean", p.mean, io.at("posterior_mean"), tol, dt == torch::kFloat);
      check(tag + " decoded_z", vae->decode(to(io.at("latent_z"), dt)), io.at("decoded_z"), tol, dt == torch::kFloat);
    }
  }
  {
    const auto io = load_all((fx / "clip_text_tiny/inputs_outputs.safetensors").string());
    for (const std::string act : {"quick_gelu", "gelu"}) {
      ClipTextModel clip(ClipTextConfig::from_json((fx / "clip_text_tiny" / (act == "gelu" ? "config_gelu.json" : "config.json")).string()));
      load_weights(*clip, {(fx / "clip_text_tiny/model.safetensors").string()});
      clip->eval();
      clip->to(device);
      for (const std::string ids : {"sd1", "sd2"}) {
        const auto out = clip->forward(io.at("input_ids_" + ids));
        check("clip " + act + "." + ids + " last_hidden_state", out.last_hidden_state, io.at(act + "." + ids + ".last_hidden_state"), 1e-4);
        check("clip " + act + "." + ids + " pooler_output", out.pooler_output, io.at(act + "." + ids + ".pooler_output"), 1e-4);
      }
    }
  }
  {
    const auto io = load_all((fx / "ddim_scheduler/inputs_outputs.safetensors").string());
    DdimScheduler s(DdimConfig::from_json((fx / "ddim_scheduler/epsilon/scheduler_config.json").string()));
    s.set_timesteps(50);
    const auto out = s.step(io.at("model_output").to(device), 961, io.at("sample").to(device));
    check("ddim epsilon step1 prev_sample", out.prev_sample, io.at("epsilon.step1.prev_sample"), 1e-4);
    check("ddim add_noise t981", s.add_noise(io.at("sample").to(device), io.at("noise").to(device), torch::tensor({981})),
          io.at("epsilon.add_noise_t981"), 1e-4);
  }
  {
    // LPIPS with the real v0.1 lins; the AlexNet trunk's big weights are the fixtures' hash.
    const auto io = load_all((fx / "alexnet_lpips/inputs_outputs.safetensors").string());
    auto state = load_all((fx / "alexnet_lpips/features_bias.safetensors").string());
    std::ifstream in(fx / "alexnet_lpips/hashed_weights.json");
    const nlohmann::json hashed = nlohmann::json::parse(in);
    for (const auto& [name, spec] : hashed.items()) {
      uint32_t h = 0x811C9DC5u;
      for (unsigned char c : name) h = (h ^ c) * 0x01000193u;
      torch::Tensor t = torch::empty(spec["shape"].get<std::vector<int64_t>>());
      float* w = t.data_ptr<float>();
      const double scale = spec["scale"];
      for (int64_t i = 0; i < t.numel(); ++i) {
        uint32_t x = h ^ (static_cast<uint32_t>(i) * 0x9E3779B1u);
        x = ((x >> 16) ^ x) * 0x45D9F3Bu;
        x = ((x >> 16) ^ x) * 0x45D9F3Bu;
        x = (x >> 16) ^ x;
        w[i] = static_cast<float>(((static_cast<double>(x >> 8) - 8388608.0) / 8388608.0) * scale);
      }
      state[name] = t;
    }
    const std::string trunk = (fs::temp_directory_path() / "anomalysd_device_alexnet.safetensors").string();
    save_safetensors(trunk, state);
    Lpips lpips = load_lpips(trunk, (fx / "alexnet_lpips/lpips_lin_v0.1.safetensors").string());
    lpips->to(device);
    check("lpips v0.1 value", lpips->forward(io.at("lpips_in0").to(device), io.at("lpips_in1").to(device)).value, io.at("lpips.v0.1.value"), 1e-4);
    check("lpips v0.1 spatial_map", lpips->distance_map(io.at("lpips_in0").to(device), io.at("lpips_in1").to(device)),
          io.at("lpips.v0.1.spatial_map"), 1e-4);
  }
  {
    // Exact NN search on the device against the CPU.
    torch::manual_seed(0);
    const torch::Tensor q = torch::randn({4096, 272}), bank = torch::randn({20000, 272});
    check("nn distance cuda vs cpu", nearest_neighbour_distance(q.to(device), bank.to(device)), nearest_neighbour_distance(q, bank), 1e-4);
  }
  if (argc > 4 && std::string(argv[3]) == "--bench") bench(fs::path(argv[4]) / "sd2-inpainting", device);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("device parity: %.1f s\n%d passed, %d failed\n", seconds, passed, failed);
  return failed == 0 ? 0 : 1;
}

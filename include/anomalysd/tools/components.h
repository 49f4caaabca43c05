// Tools over the library's layers: one model component run on named input tensors (the engine of
// `anomalysd forward`, used to check a converted checkpoint against reference outputs) and the
// benchmarks behind `anomalysd bench`. Sits above models/, anomaly/ and metrics/, below cli/.
#pragma once

#include <map>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace anomalysd {

struct ForwardRequest {
  std::string component;   // unet | vae-encode | vae-decode | text-encoder | tokenizer | efficientnet | alexnet | lpips
  std::string model_dir;   // the component's folder (config.json + weights), or the tokenizer folder
  std::string weights;        // efficientnet / alexnet / lpips: torchvision-named safetensors
  std::string lpips_weights;  // lpips: the lin layers (lin{0..4}.model.1.weight)
  std::string variant;     // "" or e.g. "fp16": loads *.fp16.safetensors
  std::string device = "cpu";
  std::string dtype = "float32";
  std::vector<std::string> texts;  // tokenizer prompts; inpaint: the one prompt
  // inpaint: the diffusers-equivalent call's settings
  std::string negative_text;
  double strength = 1.0;
  int64_t steps = 50;
  double guidance_scale = 1.0;
};

const std::vector<std::string>& forward_components();

// Inputs and outputs by name, as in ../shared/fixtures:
//   unet: sample, timestep, encoder_hidden_states -> out
//   vae-encode: image -> posterior_mean, posterior_std;  vae-decode: latent_z -> decoded_z
//   text-encoder: input_ids -> last_hidden_state, pooler_output;  tokenizer: (texts) -> input_ids
//   efficientnet: input -> features.0 … features.8 (+ logits when the file has the classifier)
//   alexnet: input -> relu_after_features.{1,4,7,9,11}
//   lpips: lpips_in0, lpips_in1 -> value, spatial_map, layer0 … layer4
//   inpaint (a pipeline folder): image [B,3,H,W] in [0,1], mask [B,1,H,W], noise [B,Z,h,w] -> latents,
//     inpainted — each image with its own mask and start noise, as one diffusers inpaint call
// Outputs are float32 (int64 for ids) on the CPU.
std::map<std::string, at::Tensor> run_forward(const ForwardRequest& request, const std::map<std::string, at::Tensor>& inputs);

struct BenchFigures {
  std::string what;
  int64_t batch = 1;
  std::vector<double> seconds;  // each timed run
  double median_s = 0;
  double peak_rss_gib = 0;      // of the whole process so far
  int64_t parameters = 0;
  std::string profile;           // the per-operator table of one extra profiled run (bench --profile)
};

// Real-size models with random weights: `unet` (64×64 latent, 77×E context) and `vae-encode` /
// `vae-decode` (512×512 image) from a config.json; `efficientnet` (B6 features of one image),
// `prototype-bank` (4 shots × 4 rotations), `nn-error-map` (one image against that bank), `lpips`
// (distance maps of `batch` pairs). `size` overrides the spatial size (latent for unet, else image).
// `profile`: one more run under LibTorch's profiler, its per-operator table in BenchFigures::profile.
// `dtype` (float32 | bfloat16 | float16): the weights and inputs of unet / vae-* in that type (the
// SD parts follow the config's `dtype`; the feature networks stay float32).
BenchFigures bench_component(const std::string& component, const std::string& config_path, int64_t batch, int64_t repeats,
                             int64_t size = 0, bool profile = false, const std::string& dtype = "float32");

double peak_rss_gib();
// Times `repeats` runs of `run` into `f`: each run's seconds, their median and the peak RSS so far.
void time_runs(BenchFigures& f, const std::function<void()>& run, int64_t repeats);

// `anomalysd init-weights`: seeded random weights of the real architectures, in the files that
// scripts/convert_torchvision_weights.py writes (torchvision / LPIPS key names), for tests and
// demos without downloads. arch: efficientnet_b0..b7 (efficientnet_b6 the paper's), alexnet, lpips.
// EfficientNet's BatchNorm statistics are calibrated on noise images so that activations stay
// O(1) through all stages. The metadata says `anomalysd_init: random` (the method warns on it).
void init_feature_weights(const std::string& arch, uint64_t seed, const std::string& output);

}  // namespace anomalysd

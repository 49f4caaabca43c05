// DDIM sampler — port of diffusers v0.27 DDIMScheduler (leading spacing, epsilon / v_prediction,
// eta), built from a scheduler_config.json of any SD scheduler class: SD2-inpainting ships a
// PNDMScheduler config, whose beta schedule and offsets are what we need; the paper uses 50 DDIM steps.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

namespace anomalysd {

struct DdimConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";  // scaled_linear | linear
  bool set_alpha_to_one = false;
  int64_t steps_offset = 1;
  std::string prediction_type = "epsilon";      // epsilon | v_prediction
  std::string timestep_spacing = "leading";     // leading | trailing | linspace
  std::string source_class;                     // _class_name of the file

  static DdimConfig from_json(const std::string& path);
};

struct DdimStepOutput {
  torch::Tensor prev_sample;
  torch::Tensor pred_original_sample;
};

class DdimScheduler {
 public:
  explicit DdimScheduler(DdimConfig config);

  void set_timesteps(int64_t num_inference_steps);
  const std::vector<int64_t>& timesteps() const { return timesteps_; }
  int64_t num_inference_steps() const { return num_inference_steps_; }

  // img2img / inpaint start rule for strength λ ∈ [0, 1] (paper §4.2, start at λ·T):
  // init = min(int(steps·λ), steps); run timesteps[steps − init :].
  std::vector<int64_t> timesteps_for_strength(double strength) const;

  // One reverse step x_t -> x_{t-Δ} (DDIM eq. 12); eta > 0 adds variance_noise scaled by σ_t.
  DdimStepOutput step(const torch::Tensor& model_output, int64_t timestep, const torch::Tensor& sample,
                      double eta = 0.0, const torch::Tensor& variance_noise = {}) const;

  // q(x_t | x_0): √ᾱ_t·x0 + √(1−ᾱ_t)·noise; timesteps scalar-per-batch [B] or one value.
  torch::Tensor add_noise(const torch::Tensor& original, const torch::Tensor& noise, const torch::Tensor& timesteps) const;

  const torch::Tensor& alphas_cumprod() const { return alphas_cumprod_; }  // float32 [T]
  double final_alpha_cumprod() const { return final_alpha_cumprod_; }
  const DdimConfig& config() const { return config_; }

 private:
  DdimConfig config_;
  torch::Tensor alphas_cumprod_;
  double final_alpha_cumprod_;
  int64_t num_inference_steps_ = 0;
  std::vector<int64_t> timesteps_;
};

}  // namespace anomalysd

// Port of diffusers v0.27 schedulers/scheduling_ddim.py.
#include "anomalysd/models/ddim.h"

#include <cmath>

#include "anomalysd/io/errors.h"
#include "anomalysd/models/json_config.h"

namespace anomalysd {

DdimScheduler::DdimScheduler(DdimConfig config) : config_(std::move(config)) {
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat);
  const int64_t t = config_.num_train_timesteps;
  // float32 throughout, as diffusers, so that ᾱ matches bit for bit.
  const torch::Tensor betas = config_.beta_schedule == "scaled_linear"
                                  ? torch::linspace(std::sqrt(config_.beta_start), std::sqrt(config_.beta_end), t, f32).pow(2)
                                  : torch::linspace(config_.beta_start, config_.beta_end, t, f32);
  alphas_cumprod_ = torch::cumprod(1.0 - betas, 0);
  final_alpha_cumprod_ = config_.set_alpha_to_one ? 1.0 : alphas_cumprod_[0].item<double>();
}

void DdimScheduler::set_timesteps(int64_t steps) {
  const int64_t t = config_.num_train_timesteps;
  if (steps <= 0 || steps > t)
    throw InputError("DDIM: num_inference_steps = " + std::to_string(steps) + " must be in [1, " + std::to_string(t) + "]");
  num_inference_steps_ = steps;
  timesteps_.assign(steps, 0);
  if (config_.timestep_spacing == "leading") {
    const int64_t ratio = t / steps;
    for (int64_t i = 0; i < steps; ++i) timesteps_[i] = (steps - 1 - i) * ratio + config_.steps_offset;
  } else if (config_.timestep_spacing == "trailing") {
    const double ratio = static_cast<double>(t) / steps;
    for (int64_t i = 0; i < steps; ++i) timesteps_[i] = static_cast<int64_t>(std::round(t - i * ratio)) - 1;
  } else {  // linspace(0, T-1, steps) rounded, descending
    for (int64_t i = 0; i < steps; ++i)
      timesteps_[i] = static_cast<int64_t>(std::round((t - 1) * static_cast<double>(steps - 1 - i) / std::max<int64_t>(1, steps - 1)));
  }
}

std::vector<int64_t> DdimScheduler::timesteps_for_strength(double strength) const {
  if (num_inference_steps_ == 0) throw std::logic_error("DDIM: call set_timesteps first");
  if (!(strength >= 0.0 && strength <= 1.0)) throw InputError("DDIM: strength must be in [0, 1]");
  const int64_t init = std::min(static_cast<int64_t>(num_inference_steps_ * strength), num_inference_steps_);
  const int64_t start = std::max<int64_t>(num_inference_steps_ - init, 0);
  return std::vector<int64_t>(timesteps_.begin() + start, timesteps_.end());
}

DdimStepOutput DdimScheduler::step(const torch::Tensor& model_output, int64_t timestep, const torch::Tensor& sample,
                                   double eta, const torch::Tensor& variance_noise) const {
  if (num_inference_steps_ == 0) throw std::logic_error("DDIM: call set_timesteps first");
  // 1. previous timestep
  const int64_t prev_t = timestep - config_.num_train_timesteps / num_inference_steps_;
  // 2. ᾱ_t, ᾱ_prev (as float32 scalars, like the reference)
  const float alpha_t = alphas_cumprod_[timestep].item<float>();
  const float alpha_prev = prev_t >= 0 ? alphas_cumprod_[prev_t].item<float>() : static_cast<float>(final_alpha_cumprod_);
  const float beta_t = 1.0f - alpha_t;
  // 3. predicted x0 and ε
  DdimStepOutput out;
  torch::Tensor pred_epsilon;
  if (config_.prediction_type == "epsilon") {
    out.pred_original_sample = (sample - std::sqrt(beta_t) * model_output) / std::sqrt(alpha_t);
    pred_epsilon = model_output;
  } else {  // v_prediction
    out.pred_original_sample = std::sqrt(alpha_t) * sample - std::sqrt(beta_t) * model_output;
    pred_epsilon = std::sqrt(alpha_t) * model_output + std::sqrt(beta_t) * sample;
  }
  // 4. σ_t = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev)
  const float beta_prev = 1.0f - alpha_prev;
  const float variance = (beta_prev / beta_t) * (1.0f - alpha_t / alpha_prev);
  const float std_dev = static_cast<float>(eta) * std::sqrt(variance);
  // 5. x_{t−1} = √ᾱ_prev·x0 + √(1−ᾱ_prev−σ²)·ε (+ σ·z)
  out.prev_sample = std::sqrt(alpha_prev) * out.pred_original_sample +
                    std::sqrt(std::max(0.0f, 1.0f - alpha_prev - std_dev * std_dev)) * pred_epsilon;
  if (eta > 0) {
    if (!variance_noise.defined()) throw InputError("DDIM: eta > 0 needs variance noise");
    out.prev_sample = out.prev_sample + std_dev * variance_noise;
  }
  return out;
}

torch::Tensor DdimScheduler::add_noise(const torch::Tensor& original, const torch::Tensor& noise,
                                       const torch::Tensor& timesteps) const {
  const torch::Tensor a = alphas_cumprod_.to(original.device()).index_select(0, timesteps.to(original.device()).to(torch::kLong).reshape({-1}));
  std::vector<int64_t> shape(original.dim(), 1);
  shape[0] = a.size(0);
  const torch::Tensor sqrt_a = a.sqrt().to(original.scalar_type()).view(shape);
  const torch::Tensor sqrt_1ma = (1.0 - a).sqrt().to(original.scalar_type()).view(shape);
  return sqrt_a * original + sqrt_1ma * noise;
}

}  // namespace anomalysd

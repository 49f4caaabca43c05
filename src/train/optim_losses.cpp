#include "anomalysd/anomaly/inpaint.h"
#include "anomalysd/io/errors.h"
#include "anomalysd/train/losses.h"
#include "anomalysd/train/optim.h"

namespace anomalysd {

Adam::Adam(std::vector<NamedParameter> params, double lr, double beta1, double beta2, double eps)
    : params_(std::move(params)), lr_(lr), beta1_(beta1), beta2_(beta2), eps_(eps) {
  for (const auto& p : params_) {
    exp_avg_.push_back(torch::zeros_like(p.tensor, torch::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(torch::zeros_like(p.tensor, torch::MemoryFormat::Preserve));
  }
}

void Adam::zero_grad() {
  for (auto& p : params_)
    if (p.tensor.grad().defined()) p.tensor.mutable_grad() = torch::Tensor();
}

void Adam::step() {
  torch::NoGradGuard no_grad;
  ++steps_;
  // The arithmetic of torch.optim.Adam (single-tensor path), so results match it.
  const double bias1 = 1.0 - std::pow(beta1_, static_cast<double>(steps_));
  const double bias2_sqrt = std::sqrt(1.0 - std::pow(beta2_, static_cast<double>(steps_)));
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const torch::Tensor& g = params_[i].tensor.grad();
    if (!g.defined()) continue;
    exp_avg_[i].mul_(beta1_).add_(g, 1.0 - beta1_);
    exp_avg_sq_[i].mul_(beta2_).addcmul_(g, g, 1.0 - beta2_);
    const torch::Tensor denom = (exp_avg_sq_[i].sqrt() / bias2_sqrt).add_(eps_);
    params_[i].tensor.addcdiv_(exp_avg_[i], denom, -lr_ / bias1);
  }
}

std::map<std::string, torch::Tensor> Adam::state() const {
  std::map<std::string, torch::Tensor> s;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    s["exp_avg." + params_[i].name] = exp_avg_[i];
    s["exp_avg_sq." + params_[i].name] = exp_avg_sq_[i];
  }
  return s;
}

void Adam::load_state(const std::map<std::string, torch::Tensor>& state, int64_t steps) {
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& key, torch::Tensor& target) {
    const auto it = state.find(key);
    if (it == state.end()) throw FormatError("training state", "missing optimizer tensor '" + key + "'");
    if (it->second.sizes() != target.sizes()) throw FormatError("training state", "optimizer tensor '" + key + "' has the wrong shape");
    target.copy_(it->second);
  };
  for (std::size_t i = 0; i < params_.size(); ++i) {
    load("exp_avg." + params_[i].name, exp_avg_[i]);
    load("exp_avg_sq." + params_[i].name, exp_avg_sq_[i]);
  }
  steps_ = steps;
}

double clip_gradients(const std::vector<NamedParameter>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& p : params)
    if (p.tensor.grad().defined()) norms.push_back(p.tensor.grad().to(torch::kFloat).norm(2).unsqueeze(0));
  if (norms.empty()) return 0.0;
  const double total = torch::cat(norms).norm(2).item<double>();
  if (max_norm > 0 && total > max_norm) {
    const double factor = max_norm / (total + 1e-6);
    for (const auto& p : params)
      if (p.tensor.grad().defined()) p.tensor.mutable_grad().mul_(factor);
  }
  return total;
}

Ema::Ema(const std::vector<NamedParameter>& params, double decay) : decay_(decay) {
  for (const auto& p : params) {
    names_.push_back(p.name);
    shadow_.push_back(p.tensor.detach().clone());
  }
}

void Ema::update(const std::vector<NamedParameter>& params) {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < params.size(); ++i) shadow_[i].mul_(decay_).add_(params[i].tensor.detach(), 1.0 - decay_);
}

void Ema::swap_into(const std::vector<NamedParameter>& params) {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const torch::Tensor live = params[i].tensor.detach().clone();
    params[i].tensor.copy_(shadow_[i]);
    shadow_[i].copy_(live);
  }
}

std::map<std::string, torch::Tensor> Ema::state() const {
  std::map<std::string, torch::Tensor> s;
  for (std::size_t i = 0; i < names_.size(); ++i) s["ema." + names_[i]] = shadow_[i];
  return s;
}

void Ema::load_state(const std::map<std::string, torch::Tensor>& state) {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < names_.size(); ++i) {
    const auto it = state.find("ema." + names_[i]);
    if (it == state.end()) throw FormatError("training state", "missing EMA tensor 'ema." + names_[i] + "'");
    shadow_[i].copy_(it->second);
  }
}

// ---------------------------------------------------------------------------------------------
torch::Tensor unet_loss(SdPipeline& pipe, const torch::Tensor& images, const torch::Tensor& masks, const torch::Tensor& context,
                        const torch::Tensor& timesteps, const torch::Tensor& noise) {
  torch::Tensor z, condition;
  {
    torch::NoGradGuard no_grad;  // the VAE is frozen while the UNet trains
    z = encode_latents(pipe, images);
    condition = inpaint_condition(pipe, images, masks);  // [m↓; z°], as at inference
  }
  const torch::Tensor eps = noise.to(z.device(), z.scalar_type());
  const torch::Tensor z_t = pipe.scheduler.add_noise(z, eps, timesteps);  // eq. (7)
  torch::Tensor target = eps;
  if (pipe.scheduler.config().prediction_type == "v_prediction") {
    const torch::Tensor a = pipe.scheduler.alphas_cumprod().to(z.device()).index_select(0, timesteps.to(z.device())).view({-1, 1, 1, 1});
    target = a.sqrt() * eps - (1.0 - a).sqrt() * z;
  }
  const torch::Tensor prediction = pipe.unet->forward(torch::cat({z_t, condition}, 1), timesteps.to(z.device()), context.to(z.device(), z.scalar_type()));
  return torch::mse_loss(prediction.to(torch::kFloat), target.to(torch::kFloat));  // eq. (8)
}

DecoderLoss decoder_loss(SdPipeline& pipe, Lpips& lpips, const torch::Tensor& images, double beta) {
  const torch::Tensor& w = pipe.vae->post_quant_conv->weight;
  const torch::Tensor x = images.to(w.device(), w.scalar_type()) * 2.0 - 1.0;
  torch::Tensor z;
  {
    torch::NoGradGuard no_grad;  // frozen encoder
    z = pipe.vae->encode(x).mean;
  }
  const torch::Tensor x_hat = pipe.vae->decode(z);
  DecoderLoss l;
  l.mse = torch::mse_loss(x_hat.to(torch::kFloat), x.to(torch::kFloat));                  // eq. (9), first term
  l.lpips = lpips->loss(x_hat.to(torch::kFloat), x.to(torch::kFloat)).mean();            // eq. (10)
  l.total = l.mse + beta * l.lpips;
  return l;
}

}  // namespace anomalysd

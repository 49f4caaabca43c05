#include "anomalysd/train/optim.h"

#include "anomalysd/io/errors.h"

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

}  // namespace anomalysd

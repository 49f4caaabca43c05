// Adam (as torch.optim.Adam: β = (0.9, 0.999), ε = 1e-8, no weight decay) and an exponential
// moving average of weights, both with their state as named tensors, so that a checkpoint holds
// them exactly and a resumed run continues bit for bit.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace anomalysd {

struct NamedParameter {
  std::string name;
  torch::Tensor tensor;
};

class Adam {
 public:
  Adam(std::vector<NamedParameter> params, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);

  void zero_grad();
  void step();  // parameters without a gradient are left alone
  void set_lr(double lr) { lr_ = lr; }  // for a schedule: takes effect at the next step()
  int64_t steps() const { return steps_; }

  // "exp_avg.<name>", "exp_avg_sq.<name>"
  std::map<std::string, torch::Tensor> state() const;
  void load_state(const std::map<std::string, torch::Tensor>& state, int64_t steps);
  const std::vector<NamedParameter>& params() const { return params_; }

 private:
  std::vector<NamedParameter> params_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  double lr_, beta1_, beta2_, eps_;
  int64_t steps_ = 0;
};

// Global L2 norm of the gradients, clipped to max_norm when max_norm > 0; returns the norm before.
double clip_gradients(const std::vector<NamedParameter>& params, double max_norm);

class Ema {
 public:
  Ema(const std::vector<NamedParameter>& params, double decay);
  void update(const std::vector<NamedParameter>& params);  // shadow = d·shadow + (1 − d)·param
  // Swaps shadow and live weights (to save or to finish with the averaged weights).
  void swap_into(const std::vector<NamedParameter>& params);
  std::map<std::string, torch::Tensor> state() const;  // "ema.<name>"
  void load_state(const std::map<std::string, torch::Tensor>& state);

 private:
  std::vector<std::string> names_;
  std::vector<torch::Tensor> shadow_;
  double decay_;
};

}  // namespace anomalysd

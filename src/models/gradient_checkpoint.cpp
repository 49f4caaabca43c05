#include "anomalysd/models/gradient_checkpoint.h"

#include <atomic>
#include <mutex>
#include <unordered_map>

namespace anomalysd {

namespace {

// The autograd context stores IValues only: closures wait here, keyed by an id, until backward.
class ClosureRegistry {
 public:
  int64_t put(BlockFunction fn) {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t id = next_++;
    closures_.emplace(id, std::move(fn));
    return id;
  }
  BlockFunction take(int64_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = closures_.find(id);
    BlockFunction fn = std::move(it->second);
    closures_.erase(it);
    return fn;
  }

 private:
  std::mutex mutex_;
  int64_t next_ = 0;
  std::unordered_map<int64_t, BlockFunction> closures_;
};

ClosureRegistry& registry() {
  static ClosureRegistry r;
  return r;
}

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  // `inputs` as a TensorList: that is how autograd sees a list of tensors as differentiable inputs
  // (a std::vector argument would count as one non-tensor argument).
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, int64_t id, at::TensorList input_list) {
    const torch::autograd::variable_list inputs(input_list.begin(), input_list.end());
    ctx->saved_data["id"] = id;
    ctx->save_for_backward(inputs);
    std::vector<int64_t> needs;  // which inputs want a gradient
    for (const auto& t : inputs) needs.push_back(t.defined() && t.requires_grad() ? 1 : 0);
    ctx->saved_data["needs"] = needs;
    torch::autograd::variable_list outputs;
    {
      torch::NoGradGuard no_grad;  // no activations kept
      // The closure is looked up, not taken: backward takes it.
      BlockFunction fn = registry().take(id);
      outputs = fn(inputs);
      ctx->saved_data["id"] = registry().put(std::move(fn));
    }
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grad_outputs) {
    const BlockFunction fn = registry().take(ctx->saved_data["id"].toInt());
    const auto saved = ctx->get_saved_variables();
    const auto needs = ctx->saved_data["needs"].toIntVector();
    torch::autograd::variable_list inputs;
    for (std::size_t i = 0; i < saved.size(); ++i)
      inputs.push_back(saved[i].defined() ? saved[i].detach().requires_grad_(needs[i] != 0) : saved[i]);
    torch::autograd::variable_list outputs;
    {
      torch::AutoGradMode grad(true);
      outputs = fn(inputs);
    }
    torch::autograd::variable_list roots, grads;
    for (std::size_t i = 0; i < outputs.size(); ++i)
      if (outputs[i].requires_grad() && grad_outputs[i].defined()) {
        roots.push_back(outputs[i]);
        grads.push_back(grad_outputs[i]);
      }
    if (!roots.empty()) torch::autograd::backward(roots, grads);  // parameter gradients accumulate here
    torch::autograd::variable_list result{torch::Tensor()};  // for `id`
    for (const auto& x : inputs) result.push_back(x.defined() && x.requires_grad() ? x.grad() : torch::Tensor());
    return result;
  }
};

}  // namespace

torch::autograd::variable_list checkpointed(const BlockFunction& fn, const torch::autograd::variable_list& inputs) {
  if (!torch::GradMode::is_enabled()) return fn(inputs);
  return CheckpointFunction::apply(registry().put(fn), at::TensorList(inputs));
}

}  // namespace anomalysd

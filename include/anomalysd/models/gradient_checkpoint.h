// Gradient checkpointing (activation recomputation), as torch.utils.checkpoint: a block's forward
// runs without keeping its activations; backward recomputes them from the saved inputs and
// back-propagates through the recomputation. Trades one extra forward per block for the memory
// of its activations — what makes SD's UNet at 512², batch 8, fit a 24 GB GPU.
#pragma once

#include <functional>

#include <torch/torch.h>

namespace anomalysd {

using BlockFunction = std::function<torch::autograd::variable_list(const torch::autograd::variable_list&)>;

// Runs fn(inputs) checkpointed. `fn` must be deterministic (no dropout) and may read parameters,
// whose gradients accumulate during backward as usual. Outside grad mode it just calls fn.
torch::autograd::variable_list checkpointed(const BlockFunction& fn, const torch::autograd::variable_list& inputs);

}  // namespace anomalysd

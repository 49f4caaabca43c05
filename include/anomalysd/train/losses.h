// The fine-tuning losses of AnomalySD (paper §4.1).
//
// Legend: B batch, H×W image size, Z latent channels, h×w latent size, L tokens, E text width.
#pragma once

#include <torch/torch.h>

#include "anomalysd/models/alexnet_lpips.h"
#include "anomalysd/models/sd_pipeline.h"

namespace anomalysd {

// Eq. (8): ‖ε − ε_θ([z_t; m↓; z°], t, τ(y))‖² (mean), with z = E(x)·sf and z° = E((1 − m) ⊙ x)·sf
// from the frozen encoder (posterior means: a deviation from diffusers' training scripts, which
// sample the posterior; the mean makes a resumed run bit-identical and removes one noise source) and z_t = √ᾱ_t z + √(1 − ᾱ_t) ε. With a
// v_prediction scheduler the target is v = √ᾱ_t ε − √(1 − ᾱ_t) z. The UNet input is built by
// inpaint_condition(), as at inference.
// images [B, 3, H, W] in [0, 1]; masks [B, 1, H, W]; context [B, L, E]; timesteps int64 [B];
// noise [B, Z, h, w].
torch::Tensor unet_loss(SdPipeline& pipe, const torch::Tensor& images, const torch::Tensor& masks, const torch::Tensor& context,
                        const torch::Tensor& timesteps, const torch::Tensor& noise);

struct DecoderLoss {
  torch::Tensor total, mse, lpips;
};

// Eq. (9–10): L_D = ‖x − D(E(x))‖² + β·LPIPS(x, D(E(x))) (means over the batch), the encoder
// frozen. Both terms on images in [−1, 1]: the range the VAE encodes and decodes (as LDM/diffusers
// train it) and the one LPIPS expects; an MSE on [0, 1] would be 4× smaller and shift the balance
// with β = 0.1 towards LPIPS. images [B, 3, H, W] in [0, 1]. Pinned by tests/train/data/make_loss_reference.py:
// diffusers' VAE, and LPIPS as the lpips 0.1 package computes it (its formula ported in the script, with
// the package's real lin weights; AlexNetLpipsParity pins our LPIPS against the package itself).
DecoderLoss decoder_loss(SdPipeline& pipe, Lpips& lpips, const torch::Tensor& images, double beta);

}  // namespace anomalysd

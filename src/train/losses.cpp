#include "anomalysd/train/losses.h"

#include "anomalysd/anomaly/inpaint.h"
#include "anomalysd/io/errors.h"

namespace anomalysd {

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
  const torch::ScalarType net = pipe.unet->conv_in->weight.scalar_type();
  const torch::Tensor prediction =
      pipe.unet->forward(torch::cat({z_t, condition}, 1).to(net), timesteps.to(z.device()), context.to(z.device(), net));
  return torch::mse_loss(prediction.to(torch::kFloat), target.to(torch::kFloat));  // eq. (8)
}

DecoderLoss decoder_loss(SdPipeline& pipe, Lpips& lpips, const torch::Tensor& images, double beta) {
  const torch::Tensor& encoder_w = pipe.vae->quant_conv->weight;
  const torch::Tensor& decoder_w = pipe.vae->post_quant_conv->weight;
  const torch::Tensor x = images.to(encoder_w.device(), torch::kFloat) * 2.0 - 1.0;
  torch::Tensor z;
  {
    torch::NoGradGuard no_grad;  // frozen encoder
    z = pipe.vae->encode(x.to(encoder_w.scalar_type())).mean;
  }
  const torch::Tensor x_hat = pipe.vae->decode(z.to(decoder_w.scalar_type()));
  DecoderLoss l;
  l.mse = torch::mse_loss(x_hat.to(torch::kFloat), x.to(torch::kFloat));                  // eq. (9), first term
  l.lpips = lpips->loss(x_hat.to(torch::kFloat), x.to(torch::kFloat)).mean();            // eq. (10)
  l.total = l.mse + beta * l.lpips;
  return l;
}

}  // namespace anomalysd

// Port of the denoising loop of diffusers v0.27 pipelines/stable_diffusion/
// pipeline_stable_diffusion_inpaint.py (9-channel UNet, DDIM, eta 0, output_type "pt").
#include "anomalysd/anomaly/inpaint.h"

#include <ATen/CPUGeneratorImpl.h>

#include "anomalysd/io/errors.h"

namespace anomalysd {

namespace F = torch::nn::functional;

namespace {

torch::Device pipeline_device(const SdPipeline& pipe) { return pipe.unet->conv_in->weight.device(); }
torch::ScalarType unet_dtype(const SdPipeline& pipe) { return pipe.unet->conv_in->weight.scalar_type(); }
torch::ScalarType encoder_dtype(const SdPipeline& pipe) { return pipe.vae->quant_conv->weight.scalar_type(); }
torch::ScalarType decoder_dtype(const SdPipeline& pipe) { return pipe.vae->post_quant_conv->weight.scalar_type(); }

}  // namespace

torch::Tensor encode_prompts(SdPipeline& pipe, const std::vector<std::string>& prompts) {
  if (prompts.empty()) throw InputError("no prompt to encode");
  torch::NoGradGuard no_grad;
  const int64_t length = pipe.tokenizer.max_length();
  torch::Tensor ids = torch::empty({static_cast<int64_t>(prompts.size()), length}, torch::kLong);
  for (std::size_t i = 0; i < prompts.size(); ++i)
    ids[static_cast<int64_t>(i)].copy_(torch::tensor(pipe.tokenizer.encode(prompts[i]), torch::kLong));
  const torch::Tensor& w = pipe.text_encoder->token_embedding->weight;
  return pipe.text_encoder->forward(ids.to(w.device())).last_hidden_state;
}

torch::Tensor average_prompt_embedding(SdPipeline& pipe, const std::vector<std::string>& prompts) {
  return encode_prompts(pipe, prompts).mean(0, /*keepdim=*/true);  // Avg({τ(y) | y ∈ 𝒯_c}), §4.2
}

int64_t vae_scale_factor(const SdPipeline& pipe) {
  return int64_t(1) << (pipe.vae->config.block_out_channels.size() - 1);
}

int64_t inpaint_size_multiple(const SdPipeline& pipe) {
  return vae_scale_factor(pipe) * (int64_t(1) << (pipe.unet->config.block_out_channels.size() - 1));
}

void check_inpaint_size(const SdPipeline& pipe, int64_t height, int64_t width) {
  const int64_t m = inpaint_size_multiple(pipe);
  if (height <= 0 || width <= 0 || height % m != 0 || width % m != 0)
    throw InputError("image size " + std::to_string(width) + "x" + std::to_string(height) + " does not fit the pipeline: sides must be multiples of " +
                     std::to_string(m) + " (VAE factor " + std::to_string(vae_scale_factor(pipe)) + " x 2^(UNet levels - 1))");
}

torch::Tensor encode_latents(SdPipeline& pipe, const torch::Tensor& images) {
  // x ∈ [0, 1] → [−1, 1] in float32, then the encoder's precision; the latent in the latents' one.
  const torch::Tensor x = images.to(pipeline_device(pipe), torch::kFloat) * 2.0 - 1.0;
  return pipe.vae->encode(x.to(encoder_dtype(pipe))).mean.to(pipe.latent_dtype) * pipe.vae->config.scaling_factor;
}

torch::Tensor decode_latents(SdPipeline& pipe, const torch::Tensor& latents) {
  const torch::Tensor z = (latents.to(pipe.latent_dtype) / pipe.vae->config.scaling_factor).to(decoder_dtype(pipe));
  return (pipe.vae->decode(z).to(torch::kFloat) / 2.0 + 0.5).clamp(0.0, 1.0);
}

torch::Tensor inpaint_condition(SdPipeline& pipe, const torch::Tensor& image, const torch::Tensor& masks) {
  if (image.dim() != 4 || image.size(1) != 3 || (image.size(0) != 1 && image.size(0) != masks.size(0)))
    throw ShapeError("inpaint: image must be [1, 3, H, W] (or one image per mask)");
  if (masks.dim() != 4 || masks.size(1) != 1 || masks.size(2) != image.size(2) || masks.size(3) != image.size(3))
    throw ShapeError("inpaint: masks must be [M, 1, H, W] with the image's H, W");
  const torch::Device device = pipeline_device(pipe);
  const int64_t f = vae_scale_factor(pipe), h = image.size(2) / f, wd = image.size(3) / f;
  // As diffusers' mask processor: binarised at 0.5; the masked image keeps pixels where m < 0.5.
  const torch::Tensor binary = (masks.to(device) >= 0.5).to(torch::kFloat);
  const torch::Tensor mask_latent = F::interpolate(binary, F::InterpolateFuncOptions().size(std::vector<int64_t>{h, wd}).mode(torch::kNearest));
  const torch::Tensor image_m11 = image.to(device, torch::kFloat) * 2.0 - 1.0;
  const torch::Tensor masked = image_m11 * (1.0 - binary);  // (1 − m) ⊙ x, x in [−1, 1]: masked pixels are 0 (grey)
  const torch::Tensor masked_latent =
      pipe.vae->encode(masked.to(encoder_dtype(pipe))).mean.to(pipe.latent_dtype) * pipe.vae->config.scaling_factor;  // z°
  return torch::cat({mask_latent.to(pipe.latent_dtype), masked_latent}, 1);
}

namespace {

void check_inpainting_pipeline(const SdPipeline& pipe) {
  if (!pipe.is_inpainting()) throw InputError("the pipeline's UNet has " + std::to_string(pipe.unet->config.in_channels) +
                                              " input channels: AnomalySD needs an inpainting UNet (9)");
}

}  // namespace

DenoisingSchedule denoising_schedule(const SdPipeline& pipe, int64_t steps, double strength, double guidance_scale) {
  DenoisingSchedule s;
  s.scheduler = pipe.scheduler;
  s.scheduler.set_timesteps(steps);
  // Deviation from the paper's wording, kept for diffusers parity: the strength rule starts at the
  // schedule's timestep ⌊λ·steps⌋ steps from the end, t = 381 for λ = 0.4 at 50 steps, not λ·T = 400.
  s.timesteps = s.scheduler.timesteps_for_strength(strength);
  s.strength = strength;
  s.guidance_scale = guidance_scale;
  if (s.timesteps.empty())
    throw InputError("strength " + std::to_string(strength) + " with " + std::to_string(steps) +
                     " steps runs no denoising step (floor(steps x strength) = 0): raise inference.strength or inference.steps");
  return s;
}

InpaintResult inpaint(SdPipeline& pipe, const torch::Tensor& image, const torch::Tensor& image_latent, const torch::Tensor& masks,
                      const torch::Tensor& noise, const PromptConditioning& conditioning, const DenoisingSchedule& schedule) {
  torch::NoGradGuard no_grad;
  check_inpainting_pipeline(pipe);
  check_inpaint_size(pipe, image.size(2), image.size(3));
  // 2. per mask: [m↓; z°]
  return inpaint_from_condition(pipe, image_latent, inpaint_condition(pipe, image, masks), noise, conditioning, schedule);
}

InpaintResult inpaint_from_condition(SdPipeline& pipe, const torch::Tensor& image_latent, const torch::Tensor& condition,
                                     const torch::Tensor& noise, const PromptConditioning& conditioning, const DenoisingSchedule& s) {
  torch::NoGradGuard no_grad;
  check_inpainting_pipeline(pipe);
  const torch::Device device = pipeline_device(pipe);
  const torch::ScalarType net = unet_dtype(pipe), latent = pipe.latent_dtype;
  const int64_t m = condition.size(0);
  const bool guided = s.guidance_scale > 1.0;
  if (!conditioning.cond.defined() || conditioning.cond.dim() != 3 || conditioning.cond.size(0) != 1)
    throw ShapeError("inpaint: the conditioning must be [1, L, E]");
  if (guided && (!conditioning.uncond.defined() || conditioning.uncond.sizes() != conditioning.cond.sizes()))
    throw ShapeError("inpaint: guidance_scale > 1 needs the negative prompt's embedding, shaped like the prompt's");

  // 1. timesteps: the last ⌊steps·λ⌋ of the DDIM schedule (start at λ·T, §4.2), from denoising_schedule()
  const std::vector<int64_t>& timesteps = s.timesteps;
  if (timesteps.empty()) throw std::logic_error("inpaint: an empty schedule (use denoising_schedule())");

  // 3. start latent z_T̃ (eq. 7 at t_start; pure noise at strength 1). One start noise per image,
  //    shared by every mask (the paper does not say; a per-mask noise would add variance between
  //    the cells of one scale). Noise, latents and the scheduler's arithmetic run in the latents'
  //    precision (float32 unless `precision.latents` says otherwise); only the UNet's input and
  //    output cross into its own.
  const torch::Tensor eps = noise.to(device, latent);
  torch::Tensor z = s.strength >= 1.0
                        ? eps * 1.0  // DDIM's init_noise_sigma is 1
                        : s.scheduler.add_noise(image_latent.to(device, latent), eps, torch::full({1}, timesteps.front(), torch::kLong));
  z = z.expand({m, z.size(1), z.size(2), z.size(3)}).contiguous();
  const torch::Tensor unet_condition = condition.to(device, net);

  // 4. denoising loop on [z_t; m↓; z°] (eq. 11)
  const torch::Tensor cond = conditioning.cond.to(device, net).expand({m, -1, -1});
  const torch::Tensor uncond = guided ? conditioning.uncond.to(device, net).expand({m, -1, -1}) : torch::Tensor();
  // The prompt's cross-attention K/V are the same for every step and mask: project them once.
  const TextProjectionCache text_projections(*pipe.unet, {cond.narrow(0, 0, 1), guided ? uncond.narrow(0, 0, 1) : torch::Tensor()});
  InpaintResult result;
  for (const int64_t t : timesteps) {
    const torch::Tensor input = torch::cat({z.to(net), unet_condition}, 1);  // DDIM's scale_model_input is the identity
    const torch::Tensor timestep = torch::tensor(t, torch::kLong);
    torch::Tensor eps_hat = pipe.unet->forward(input, timestep, cond).to(latent);
    ++result.unet_calls;
    if (guided) {  // ε = ε_u + g (ε_c − ε_u)
      const torch::Tensor eps_uncond = pipe.unet->forward(input, timestep, uncond).to(latent);
      ++result.unet_calls;
      eps_hat = eps_uncond + s.guidance_scale * (eps_hat - eps_uncond);
    }
    z = s.scheduler.step(eps_hat, t, z).prev_sample;
  }
  // 5. decode
  result.latents = z;
  result.images = decode_latents(pipe, z);
  return result;
}

torch::Tensor start_noise(uint64_t seed, int64_t channels, int64_t height, int64_t width) {
  at::Generator generator = at::detail::createCPUGenerator(seed);
  return torch::randn({1, channels, height, width}, generator, torch::TensorOptions().dtype(torch::kFloat));
}

// ---------------------------------------------------------------------------------------------
SdInpainter::SdInpainter(SdPipeline& pipe, int64_t steps, double guidance_scale) : pipe_(pipe), steps_(steps) {
  check_inpainting_pipeline(pipe_);
  schedule_.guidance_scale = guidance_scale;
}

void SdInpainter::set_class(const PromptConditioning& conditioning, double strength) {
  schedule_ = denoising_schedule(pipe_, steps_, strength, schedule_.guidance_scale);
  conditioning_ = conditioning;
}

void SdInpainter::begin_image(const torch::Tensor& image, uint64_t seed) {
  torch::NoGradGuard no_grad;
  if (schedule_.timesteps.empty()) throw std::logic_error("SdInpainter: set_class() first");
  check_inpaint_size(pipe_, image.size(2), image.size(3));
  const torch::Device device = pipeline_device(pipe_);
  // On CUDA the upload goes through pinned (page-locked) memory, asynchronously. The image stays
  // float32: each VAE encode casts it to the encoder's precision.
  const torch::Tensor host = device.is_cuda() && image.device().is_cpu() ? image.pin_memory() : image;
  image_ = host.to(device, torch::kFloat, /*non_blocking=*/device.is_cuda());
  image_latent_ = encode_latents(pipe_, image_);  // E(x), once per image
  const int64_t f = vae_scale_factor(pipe_);
  noise_ = start_noise(seed, pipe_.unet->config.out_channels, image.size(2) / f, image.size(3) / f);
}

torch::Device SdInpainter::device() const { return pipeline_device(pipe_); }

torch::Tensor SdInpainter::inpaint(const torch::Tensor& masks) {
  torch::NoGradGuard no_grad;
  if (!image_.defined()) throw std::logic_error("SdInpainter: begin_image() first");
  const torch::Tensor batch = masks.to(image_.device());
  const int64_t n = batch.size(0), height = image_.size(2), width = image_.size(3);
  // [m↓; z°] per mask; the full mask's z° = E(0)·sf does not depend on the image: encoded once.
  const torch::Tensor full = (batch >= 0.5).flatten(1).all(1).cpu();
  std::vector<int64_t> partial;
  for (int64_t i = 0; i < n; ++i)
    if (!full[i].item<bool>()) partial.push_back(i);
  torch::Tensor condition;
  if (static_cast<int64_t>(partial.size()) == n) {
    condition = inpaint_condition(pipe_, image_, batch);
  } else {
    auto cached = full_mask_latent_.find({height, width});
    if (cached == full_mask_latent_.end())
      cached = full_mask_latent_.emplace(std::make_pair(height, width),
                                         inpaint_condition(pipe_, image_, torch::ones({1, 1, height, width}, image_.options()))).first;
    condition = cached->second.expand({n, -1, -1, -1}).clone();
    if (!partial.empty()) {
      const torch::Tensor index = torch::tensor(partial, torch::kLong).to(image_.device());
      condition.index_copy_(0, index, inpaint_condition(pipe_, image_, batch.index_select(0, index)));
    }
  }
  const InpaintResult r = inpaint_from_condition(pipe_, image_latent_, condition, noise_, conditioning_, schedule_);
  unet_calls_ += r.unet_calls;
  return r.images;
}

}  // namespace anomalysd

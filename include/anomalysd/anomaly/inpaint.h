// The inpainting run of AnomalySD (paper §4.1–4.2, eq. 11): a Stable Diffusion inpainting
// pipeline denoises from λ·T instead of pure noise, so that the inpainted image keeps the test
// image's layout. Matches diffusers v0.27 StableDiffusionInpaintPipeline with a DDIM scheduler
// (eta 0) step for step; ../shared/fixtures/inpaint_cases pins it.
//
// What happens, for one image x and masks m (1 = inpaint):
//   1. z = E(x)·sf (posterior mean, scaling factor sf), once per image;
//   2. per mask: m binarised at 0.5, m↓ = nearest resize to the latent grid, z° = E(x ⊙ (m < 0.5))·sf
//      with x in [−1, 1];
//   3. z_T̃ = add_noise(z, ε, t_start) (DDIM timesteps from the strength rule), or ε·init_noise_sigma
//      at strength 1;
//   4. for each timestep: ε̂ = UNet([z_t; m↓; z°], t, τ(y)) (classifier-free guidance when g > 1),
//      DDIM step;
//   5. x̂ = D(z_0 / sf) / 2 + 0.5, clamped to [0, 1].
//
// Legend: M masks, H×W image size, Z latent channels, h×w latent size (H/f × W/f), L tokens, E width.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "anomalysd/models/ddim.h"
#include "anomalysd/models/sd_pipeline.h"

namespace anomalysd {

// Text conditioning τ(y), [1, L, E] each; `uncond` (the negative prompt) is needed only when
// guidance_scale > 1. Broadcast over a mask batch with expand, never copied per mask.
struct PromptConditioning {
  torch::Tensor cond;
  torch::Tensor uncond;
};

// The denoising part of an inpainting run: the DDIM schedule of `steps` and the timesteps that
// strength λ runs (start at λ·T, §4.2). Computed once per (steps, λ), never per mask batch: the
// scheduler is a copy, so the pipeline's own is never changed.
struct DenoisingSchedule {
  DdimScheduler scheduler{DdimConfig{}};  // set to `steps`
  std::vector<int64_t> timesteps;   // the last ⌊steps·λ⌋ of the schedule
  double strength = 0.4;            // λ
  double guidance_scale = 1.0;      // > 1: classifier-free guidance (two UNet evaluations per step)
};
// Throws InputError when ⌊steps·λ⌋ = 0 (no denoising step would run).
DenoisingSchedule denoising_schedule(const SdPipeline& pipe, int64_t steps, double strength, double guidance_scale = 1.0);

// τ of each prompt: the CLIP last_hidden_state, [N, L, E].
torch::Tensor encode_prompts(SdPipeline& pipe, const std::vector<std::string>& prompts);
// §4.2 "Aggregation of Hierarchical Prompts": the average embedding over the class's prompts, [1, L, E].
torch::Tensor average_prompt_embedding(SdPipeline& pipe, const std::vector<std::string>& prompts);

// 2^(VAE levels − 1): pixels per latent cell.
int64_t vae_scale_factor(const SdPipeline& pipe);
// Image sides must be multiples of vae_scale_factor · 2^(UNet levels − 1).
int64_t inpaint_size_multiple(const SdPipeline& pipe);
// Throws InputError naming the size and the multiple when H×W does not fit the pipeline.
void check_inpaint_size(const SdPipeline& pipe, int64_t height, int64_t width);

// E(x)·sf of images [N, 3, H, W] in [0, 1] (posterior mean) -> [N, Z, h, w].
torch::Tensor encode_latents(SdPipeline& pipe, const torch::Tensor& images);
// D(z / sf) mapped to [0, 1]: [N, Z, h, w] -> [N, 3, H, W].
torch::Tensor decode_latents(SdPipeline& pipe, const torch::Tensor& latents);

// The UNet input of eq. (11) without z_t: per mask [m↓; z°] ([M, 1 + Z, h, w]), from masks
// [M, 1, H, W] and the image [1, 3, H, W] in [0, 1] (or [M, 3, H, W]: one image per mask).
// Fine-tuning builds its input with this too.
torch::Tensor inpaint_condition(SdPipeline& pipe, const torch::Tensor& image, const torch::Tensor& masks);

struct InpaintResult {
  torch::Tensor latents;  // [M, Z, h, w], final latents before decoding
  torch::Tensor images;   // [M, 3, H, W] in [0, 1]
  int64_t unet_calls = 0; // UNet evaluations of the mask batch (2 per step with guidance)
};

// Steps 2–5 for one image and one batch of masks. image [1, 3, H, W] in [0, 1] on the pipeline's
// device; image_latent = encode_latents(image); masks [M, 1, H, W]; noise [1, Z, h, w] (shared by
// all masks). Runs the whole batch at once: the detector splits large mask sets.
InpaintResult inpaint(SdPipeline& pipe, const torch::Tensor& image, const torch::Tensor& image_latent, const torch::Tensor& masks,
                      const torch::Tensor& noise, const PromptConditioning& conditioning, const DenoisingSchedule& schedule);

// Steps 3–5 with the UNet's conditioning [m↓; z°] already built ([M, 1 + Z, h, w], from
// inpaint_condition()): what inpaint() runs after step 2.
InpaintResult inpaint_from_condition(SdPipeline& pipe, const torch::Tensor& image_latent, const torch::Tensor& condition,
                                     const torch::Tensor& noise, const PromptConditioning& conditioning, const DenoisingSchedule& schedule);

// Start noise ε of an image, [1, Z, h, w] float32 on the CPU: a pure function of the seed (which
// callers derive from the run's seed and the image's identity), whatever the device or batch.
torch::Tensor start_noise(uint64_t seed, int64_t channels, int64_t height, int64_t width);

// Anything that inpaints masked regions of an image into normal ones. The method (detector.h)
// runs on this interface, so tests can plug in an oracle.
class Inpainter {
 public:
  virtual ~Inpainter() = default;
  // Per class, before its images: the prompt conditioning τ (§4.2) and the class's λ. Inpainters
  // without a diffusion model ignore it.
  virtual void set_class(const PromptConditioning& /*conditioning*/, double /*strength*/) {}
  // Called once per image before inpaint(): image [1, 3, H, W] in [0, 1]; `seed` fixes the start noise.
  virtual void begin_image(const torch::Tensor& image, uint64_t seed) = 0;
  // One batch of masks [M, 1, H, W] (1 = inpaint) -> inpainted images [M, 3, H, W] in [0, 1].
  virtual torch::Tensor inpaint(const torch::Tensor& masks) = 0;
  // Pixels per latent cell: masks are aligned to this grid.
  virtual int64_t alignment() const { return 1; }
  // UNet evaluations so far (0 for inpainters without a UNet).
  virtual int64_t unet_calls() const { return 0; }
  // Where inpaint() returns its images (the detector keeps its maps there).
  virtual torch::Device device() const { return torch::kCPU; }
};

// The Stable Diffusion inpainter: E(x) once per image, the schedule once per class, each mask
// batch in one denoising run.
class SdInpainter : public Inpainter {
 public:
  SdInpainter(SdPipeline& pipe, int64_t steps, double guidance_scale);

  void set_class(const PromptConditioning& conditioning, double strength) override;
  void begin_image(const torch::Tensor& image, uint64_t seed) override;
  torch::Tensor inpaint(const torch::Tensor& masks) override;
  int64_t alignment() const override { return vae_scale_factor(pipe_); }
  int64_t unet_calls() const override { return unet_calls_; }
  torch::Device device() const override;
  const DenoisingSchedule& schedule() const { return schedule_; }

 private:
  SdPipeline& pipe_;
  int64_t steps_ = 50;
  DenoisingSchedule schedule_;  // no timesteps until set_class()
  PromptConditioning conditioning_;
  torch::Tensor image_, image_latent_, noise_;
  // z° of the mask that covers the whole image: E(0)·sf, the same for every image of a size.
  std::map<std::pair<int64_t, int64_t>, torch::Tensor> full_mask_latent_;
  int64_t unet_calls_ = 0;
};

}  // namespace anomalysd

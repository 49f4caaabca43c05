#!/usr/bin/python3
"""Reference values of AnomalySD's fine-tuning losses (paper eq. 8-10), computed with the reference
libraries on fixed inputs, for tests/train/test_finetune.cpp (Losses.*).

  /usr/bin/python3 tests/train/data/make_loss_reference.py [../shared]    # writes loss_reference.safetensors here

Needs Debian's python3-torch and python3-torchvision, and ../shared (the vendored diffusers 0.27.2 in
ref-bench/site, the tiny pipeline and the AlexNet/LPIPS weights of fixtures/). Deterministic: two runs
write the same bytes.

Eq. (8), as diffusers' inpainting training does it (train_dreambooth_inpaint / the inpaint pipeline's
prepare_mask_latents), with the posterior mean where diffusers samples (the C++ deviation, documented):
  z = E(2x - 1).mean * sf, z° = E((2x - 1) * (m < 0.5)).mean * sf, m↓ = nearest(m >= 0.5, latent size),
  z_t = scheduler.add_noise(z, ε, t), target = ε (epsilon) or scheduler.get_velocity(z, ε, t) (v_prediction),
  loss = mse(unet([z_t; m↓; z°], t, context), target), mean over every element.
Eq. (9-10): x in [-1, 1] (the VAE's own range), x̂ = D(E(x).mean); mse(x̂, x) + β · LPIPS(x̂, x) (lpips 0.1,
AlexNet trunk, mean over the batch), β = 0.1.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "../../../../shared"))
sys.path[:0] = [os.path.join(SHARED, "ref-bench", "site")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

FIX = os.path.join(SHARED, "fixtures")
PIPE = os.path.join(FIX, "pipeline_sd2_inpaint_tiny")


def hash_uniform(name, shape, scale):
    """The fixtures' bit-reproducible weights (fixtures/README.md)."""
    h = np.uint32(0x811C9DC5)
    for c in name.encode():
        h = np.uint32((int(h) ^ c) * 0x01000193 & 0xFFFFFFFF)
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.uint64)
    x = (np.uint64(int(h)) ^ ((i * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF))) & np.uint64(0xFFFFFFFF)
    for _ in range(2):
        x = (((x >> np.uint64(16)) ^ x) * np.uint64(0x45D9F3B)) & np.uint64(0xFFFFFFFF)
    x = (x >> np.uint64(16)) ^ x
    v = ((x >> np.uint64(8)).astype(np.float64) - 8388608.0) / 8388608.0
    return torch.from_numpy((v * scale).astype(np.float32).reshape(shape))


def alexnet_features():
    import json
    folder = os.path.join(FIX, "alexnet_lpips")
    state = load_file(os.path.join(folder, "features_bias.safetensors"))
    with open(os.path.join(folder, "hashed_weights.json")) as f:
        for name, spec in json.load(f).items():
            state[name] = hash_uniform(name, spec["shape"], spec["scale"])
    net = torchvision.models.alexnet().features
    net.load_state_dict({k[len("features."):]: v for k, v in state.items()})
    return net.eval()


def lpips(net, lins, x0, x1):
    """lpips 0.1 (net='alex'): ScalingLayer, 5 ReLU taps, unit-normalised, squared diff, 1x1 lin, spatial mean, sum."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    taps = []
    h = torch.cat([(x0 - shift) / scale, (x1 - shift) / scale])
    for i, layer in enumerate(net):
        h = layer(h)
        if i in (1, 4, 7, 9, 11):
            taps.append(h)
        if i == 11:
            break
    b = x0.shape[0]
    value = 0
    for l, t in enumerate(taps):
        f = t / (t.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        d = (f[:b] - f[b:]).pow(2)
        value = value + F.conv2d(d, lins[f"lin{l}.model.1.weight"]).mean([2, 3], keepdim=True)
    return value.flatten()  # [B]


def main():
    torch.manual_seed(1234)
    unet = UNet2DConditionModel.from_pretrained(PIPE, subfolder="unet").eval()
    vae = AutoencoderKL.from_pretrained(PIPE, subfolder="vae").eval()
    sf = vae.config.scaling_factor
    eps_sched = DDIMScheduler.from_pretrained(PIPE, subfolder="scheduler")
    v_sched = DDIMScheduler.from_pretrained(PIPE, subfolder="scheduler", prediction_type="v_prediction")

    b, size = 2, 32
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    images = torch.rand(b, 3, size, size)
    masks = torch.zeros(b, 1, size, size)
    masks[0, :, 4:20, 8:28] = 1
    masks[1, :, 16:32, 0:12] = 1
    noise = torch.randn(b, unet.config.out_channels, size // f, size // f)
    timesteps = torch.tensor([17, 803], dtype=torch.long)
    context = torch.randn(b, 77, unet.config.cross_attention_dim)

    out = {"images": images, "masks": masks, "noise": noise, "timesteps": timesteps, "context": context}
    with torch.no_grad():
        x = images * 2 - 1
        z = vae.encode(x).latent_dist.mean * sf
        binary = (masks >= 0.5).float()
        z_masked = vae.encode(x * (1 - binary)).latent_dist.mean * sf
        m_small = F.interpolate(binary, size=(size // f, size // f), mode="nearest")
        for tag, sched in (("epsilon", eps_sched), ("v_prediction", v_sched)):
            z_t = sched.add_noise(z, noise, timesteps)
            target = noise if tag == "epsilon" else sched.get_velocity(z, noise, timesteps)
            pred = unet(torch.cat([z_t, m_small, z_masked], 1), timesteps, context).sample
            out[f"unet_loss.{tag}"] = F.mse_loss(pred.float(), target.float(), reduction="mean").reshape(1)

        net = alexnet_features()
        lins = load_file(os.path.join(FIX, "alexnet_lpips", "lpips_lin_v0.1.safetensors"))
        x_hat = vae.decode(vae.encode(x).latent_dist.mean).sample
        mse = F.mse_loss(x_hat, x)                      # on [-1, 1]
        lp = lpips(net, lins, x_hat, x).mean()
        out["decoder.mse"] = mse.reshape(1)
        out["decoder.lpips"] = lp.reshape(1)
        out["decoder.total_beta0.1"] = (mse + 0.1 * lp).reshape(1)
    save_file({k: v.contiguous() for k, v in sorted(out.items())}, os.path.join(HERE, "loss_reference.safetensors"),
              metadata={"format": "pt", "generator": "tests/train/data/make_loss_reference.py"})
    for k, v in sorted(out.items()):
        if v.numel() == 1:
            print(f"{k} = {v.item():.9g}")


if __name__ == "__main__":
    main()

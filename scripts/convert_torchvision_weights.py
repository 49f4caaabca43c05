#!/usr/bin/env python3
"""Convert torchvision's ImageNet EfficientNet-B6 and AlexNet weights, and LPIPS v0.1's linear
layers, to the safetensors files anomalysd loads (paper §4.3: prototype bank; eq. 16–17: score).

For a machine with internet access and PyTorch + torchvision (anomalysd itself needs neither):

    pip install torch torchvision
    python3 scripts/convert_torchvision_weights.py models/
      -> models/efficientnet_b6.safetensors, models/alexnet.safetensors, models/lpips_alex_v0.1.safetensors

Key names stay torchvision's (features.0.0.weight, ...) and LPIPS's (lin0.model.1.weight, ...), so
the C++ loader is a lookup. `--random` converts randomly initialised models instead (no download):
the test suite uses it to check this script's conversion against the C++ loaders.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fetch_models import torch_state_to_numpy, write_safetensors  # noqa: E402  (same folder)

LPIPS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth"
LPIPS_CHANNELS = [64, 192, 384, 256, 256]


def save_safetensors(path, state, metadata):
    """torch state dict -> safetensors, with fetch_models.py's dependency-free writer."""
    write_safetensors(path, torch_state_to_numpy(state), metadata)
    print(f"wrote {path} ({len(state)} tensors)")


def lpips_lins(random):
    """LPIPS v0.1 'alex' lin layers as {lin{i}.model.1.weight: [1, C, 1, 1]}."""
    import torch
    if random:
        g = torch.Generator().manual_seed(0)
        return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(LPIPS_CHANNELS)}
    state = torch.hub.load_state_dict_from_url(LPIPS_URL, map_location="cpu", progress=True)
    out = {k: v for k, v in state.items() if k.startswith("lin")}
    expected = {f"lin{i}.model.1.weight" for i in range(5)}
    if set(out) != expected:
        raise SystemExit(f"unexpected LPIPS keys: {sorted(state)}")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", help="output folder")
    p.add_argument("--random", action="store_true", help="random initialisation instead of downloaded weights")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import torch
    import torchvision
    torch.manual_seed(a.seed)
    os.makedirs(a.dest, exist_ok=True)
    tv = torchvision.models
    if a.random:
        b6, alex = tv.efficientnet_b6(), tv.alexnet()
        source = "random init (seed %d), torchvision %s" % (a.seed, torchvision.__version__)
    else:
        b6 = tv.efficientnet_b6(weights=tv.EfficientNet_B6_Weights.IMAGENET1K_V1)
        alex = tv.alexnet(weights=tv.AlexNet_Weights.IMAGENET1K_V1)
        source = "torchvision %s ImageNet weights" % torchvision.__version__
    save_safetensors(os.path.join(a.dest, "efficientnet_b6.safetensors"), b6.state_dict(),
                     {"format": "pt", "model": "efficientnet_b6", "source": source})
    save_safetensors(os.path.join(a.dest, "alexnet.safetensors"), alex.state_dict(),
                     {"format": "pt", "model": "alexnet", "source": source})
    save_safetensors(os.path.join(a.dest, "lpips_alex_v0.1.safetensors"), lpips_lins(a.random),
                     {"format": "pt", "model": "lpips-alex-v0.1", "source": "random" if a.random else LPIPS_URL})
    if a.random:  # reference outputs for the C++ side to compare against
        x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(a.seed + 1))
        b6.eval()
        alex.eval()
        with torch.no_grad():
            outs = {"input": x}
            h = x
            for i, f in enumerate(b6.features):
                h = f(h)
                outs[f"features.{i}"] = h
            h = x
            for i, f in enumerate(alex.features):
                h = f(h)
                if i in (1, 4, 7, 9, 11):
                    outs[f"relu_after_features.{i}"] = h.clone()
        save_safetensors(os.path.join(a.dest, "reference_outputs.safetensors"), outs, {"format": "pt"})
    return 0


if __name__ == "__main__":
    sys.exit(main())

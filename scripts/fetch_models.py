#!/usr/bin/env python3
"""Fetch a Stable Diffusion inpainting checkpoint in the diffusers layout, as anomalysd reads it.

For a machine with internet access and Python (anomalysd itself needs neither). Downloads only
configs, tokenizer files and *.safetensors weights; where a repository has only PyTorch pickles
(*.bin), converts them to safetensors with a small self-contained writer.

    pip install huggingface_hub torch numpy          # torch only needed to convert *.bin
    python3 scripts/fetch_models.py sd2-inpainting models/sd2-inpainting
    python3 scripts/fetch_models.py sd15-inpainting models/sd15-inpainting --variant fp16
    python3 scripts/fetch_models.py --convert-only models/some-pipeline      # *.bin -> *.safetensors

Then check a component against the reference, e.g.:
    anomalysd inspect models/sd2-inpainting/unet/diffusion_pytorch_model.safetensors
"""
import argparse
import json
import os
import struct
import sys
import tempfile

REPOS = {
    "sd2-inpainting": "stabilityai/stable-diffusion-2-inpainting",
    "sd15-inpainting": "stable-diffusion-v1-5/stable-diffusion-inpainting",
}
COMPONENTS = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]

# numpy dtype name -> safetensors dtype
ST_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
             "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: numpy array} (bfloat16 given as (uint16 array, 'BF16')) atomically."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        value = tensors[name]
        array, dtype = value if isinstance(value, tuple) else (value, ST_DTYPES[str(value.dtype)])
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes(order="C")  # 0-d and empty arrays too
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(struct.pack("<Q", len(text)))
            out.write(text)
            for b in blobs:
                out.write(b)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def torch_state_to_numpy(state):
    import torch
    out = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            out[name] = (t.view(torch.int16).numpy().view("uint16"), "BF16")
        else:
            out[name] = t.numpy()
    return out


def convert_bin_files(folder):
    """Converts every *.bin (PyTorch pickle) under folder that has no safetensors twin."""
    import torch
    converted = 0
    for root, _, files in os.walk(folder):
        for f in files:
            if not f.endswith(".bin"):
                continue
            target = os.path.join(root, f[:-4] + ".safetensors")
            if os.path.exists(target):
                continue
            state = torch.load(os.path.join(root, f), map_location="cpu")
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            write_safetensors(target, torch_state_to_numpy(state), {"format": "pt"})
            print(f"converted {os.path.join(root, f)} -> {target}")
            converted += 1
    return converted


def fetch(name, dest, variant):
    from huggingface_hub import snapshot_download
    repo = REPOS.get(name, name)
    weights = f"*.{variant}.safetensors" if variant else "*.safetensors"
    patterns = ["model_index.json"] + [f"{c}/*.json" for c in COMPONENTS] + ["tokenizer/*.txt"]
    patterns += [f"{c}/{weights}" for c in ("unet", "vae", "text_encoder")]
    snapshot_download(repo, local_dir=dest, allow_patterns=patterns)
    missing = [c for c in ("unet", "vae", "text_encoder")
               if not any(f.endswith(".safetensors") for f in os.listdir(os.path.join(dest, c)))]
    if missing:  # older repositories: fall back to pickles and convert them
        snapshot_download(repo, local_dir=dest, allow_patterns=[f"{c}/*.bin" for c in missing])
        convert_bin_files(dest)
    print(f"{repo} -> {dest}" + (f" (variant {variant})" if variant else ""))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="sd2-inpainting | sd15-inpainting | a Hugging Face repo id")
    p.add_argument("dest", nargs="?", help="destination folder")
    p.add_argument("--variant", default="", help="weight variant, e.g. fp16")
    p.add_argument("--convert-only", metavar="DIR", help="only convert *.bin files under DIR to safetensors")
    a = p.parse_args()
    if a.convert_only:
        n = convert_bin_files(a.convert_only)
        print(f"{n} file(s) converted")
        return 0
    if not a.model or not a.dest:
        p.error("give MODEL and DEST, or --convert-only DIR")
    fetch(a.model, a.dest, a.variant)
    return 0


if __name__ == "__main__":
    sys.exit(main())

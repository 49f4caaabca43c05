#!/usr/bin/env python3
"""torchrun for Debian's python3-torch 2.x, which is built without libuv while torchrun's own
TCPStore asks for it (PyTorch >= 2.4: "use_libuv was requested but PyTorch was build without libuv
support"). Same arguments as torchrun; the stores it makes use plain sockets, which speak the same
protocol:  python3 scripts/torchrun-nolibuv.py --no-python --nproc_per_node=2 anomalysd finetune ...
"""
import sys

import torch.distributed as dist

_TCPStore = dist.TCPStore


def _plain_socket_store(*args, **kwargs):
    kwargs.setdefault("use_libuv", False)
    return _TCPStore(*args, **kwargs)


# Before torchrun's modules import the name.
dist.TCPStore = _plain_socket_store

from torch.distributed.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

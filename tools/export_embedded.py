#!/usr/bin/env python
"""Copy the weights of a training checkpoint into the package as the embedded model.

    python tools/export_embedded.py /work/train/shapes_v1/model_final.pth

Keeps only the model's tensors (no optimizer, scheduler or iteration state), as float32, and writes
``workbench/model_zoo/weights/Shapes/panoptic_kp_R_50_FPN_small.pth`` atomically (a temporary file
in the same folder, then a rename). The file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch

from workbench.model_zoo.model_zoo import _EMBEDDED_WEIGHTS, _EMBEDDED_WEIGHTS_ROOT


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a DetectionCheckpointer .pth file written by training")
    p.add_argument("--name", default="Shapes/panoptic_kp_R_50_FPN_small")
    p.add_argument("--note", default="", help="free text stored beside the weights (e.g. the command)")
    args = p.parse_args()

    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise SystemExit(f"{args.checkpoint}: expected a dict with a 'model' state dict, got {type(ckpt).__name__}"
                         + (f" with keys {sorted(ckpt)[:8]}" if isinstance(ckpt, dict) else ""))
    state = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in ckpt["model"].items()}
    out = {"model": state, "__author__": "workbench", "iteration": int(ckpt.get("iteration", -1))}
    if args.note:
        out["note"] = args.note
    dst = os.path.join(_EMBEDDED_WEIGHTS_ROOT, _EMBEDDED_WEIGHTS[args.name])
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), suffix=".tmp")
    os.close(fd)
    try:
        torch.save(out, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600: make the shipped file readable by all
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"{dst}: {len(state)} tensors, {os.path.getsize(dst) / 1e6:.1f} MB, iteration {out['iteration']}")


if __name__ == "__main__":
    main()

"""Weight statistics of a model: one row per parameter / buffer, with flags for the broken ones.

::

    weight_stats(model).flagged()     # dead / constant / non-finite / overflowing tensors
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

import torch
from torch import nn

__all__ = ["WeightStats", "weight_stats"]


@dataclass
class WeightStats:
    """One row per parameter / buffer: name, shape, mean, std, min, max, fraction of zeros and
    ``flags`` ("dead": all zero, "constant": one value, "nonfinite": NaN / inf, "overflow":
    |x| beyond ``overflow``, fp16's largest value by default)."""

    rows: List[Dict[str, Any]]

    def flagged(self) -> List[Dict[str, Any]]:
        return [r for r in self.rows if r["flags"]]

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        lines = [f"{'name':<48} {'shape':<18} {'mean':>9} {'std':>9} {'absmax':>9} {'zero%':>6}  flags"]
        for r in self.rows:
            lines.append(f"{r['name'][:48]:<48} {str(r['shape']):<18} {r['mean']:>9.3g} {r['std']:>9.3g} "
                         f"{r['absmax']:>9.3g} {r['zero_frac'] * 100:>6.1f}  {','.join(r['flags'])}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("name", "shape", "mean", "std", "absmax", "zero %", "flags"))
        body = []
        for r in self.rows:
            style = ' style="background:#fdd"' if r["flags"] else ""
            body.append(f"<tr{style}><td>{r['name']}</td><td>{r['shape']}</td><td>{r['mean']:.3g}</td>"
                        f"<td>{r['std']:.3g}</td><td>{r['absmax']:.3g}</td><td>{r['zero_frac'] * 100:.1f}</td>"
                        f"<td>{','.join(r['flags'])}</td></tr>")
        return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def weight_stats(model: nn.Module, *, buffers: bool = True, overflow: float = 65504.0) -> WeightStats:
    """Statistics of every parameter (and buffer) of ``model``; see :class:`WeightStats`."""
    items = list(model.named_parameters())
    if buffers:
        items += [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    rows = []
    with torch.no_grad():
        for name, t in items:
            x = t.detach().float()
            finite = torch.isfinite(x)
            xf = x[finite]
            flags = []
            if not bool(finite.all()):
                flags.append("nonfinite")
            if xf.numel() and float(xf.abs().max()) > overflow:
                flags.append("overflow")
            if x.numel() and bool((x == 0).all()):
                flags.append("dead")
            elif x.numel() > 1 and xf.numel() == x.numel() and not name.endswith(("pixel_mean", "pixel_std")) and float(xf.max()) == float(xf.min()):
                flags.append("constant")
            rows.append({"name": name, "shape": tuple(t.shape),
                         "mean": float(xf.mean()) if xf.numel() else float("nan"),
                         "std": float(xf.std()) if xf.numel() > 1 else 0.0,
                         "min": float(xf.min()) if xf.numel() else float("nan"),
                         "max": float(xf.max()) if xf.numel() else float("nan"),
                         "absmax": float(xf.abs().max()) if xf.numel() else float("nan"),
                         "zero_frac": float((x == 0).float().mean()) if x.numel() else 0.0,
                         "flags": flags})
    return WeightStats(rows)

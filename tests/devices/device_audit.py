"""A device audit for a model's forward: device mixing and host <-> device synchronisations.

``DeviceAudit`` is a ``TorchDispatchMode``: it sees every aten (and torchvision) op a forward
runs, with the tensors it gets. It records

* **device mixing**: an op given both tensors on the model's device and a CPU tensor of one or
  more dimensions (CUDA kernels take CPU zero-dim tensors as scalars, nothing else): a tensor
  made on the CPU inside the forward, e.g. ``torch.arange(n)`` without ``device=``, met the
  model's tensors;
* **synchronisations**, by kind: ``scalar_read`` (``.item()``, ``int(t)``, ``bool(t)``, ``if t:``,
  ``torch.equal``), ``to_host`` (``.cpu()``, ``.to("cpu")``, ``.tolist()``), ``to_device``
  (``torch.tensor(..., device=d)``, ``cpu_tensor.to(d)``: a pageable copy that waits for the
  stream) and ``dynamic_shape`` (``nonzero``, boolean indexing, ``unique``, torchvision's
  ``nms``...: the host waits for the result's size). Each entry keeps the workbench line that
  caused it.

With ``emulate=True`` (no GPU needed) the "device" is an emulated CUDA: :func:`to_fake_cuda`
turns a model's parameters and buffers into :class:`FakeCuda` tensors, CPU tensors that report
``device == cuda:0`` and so take every CUDA branch of the code (``x.is_cuda``,
``x.device.type != "cpu"``), while the audit runs each op on the CPU data underneath. Factory
calls with a CUDA ``device=`` and copies to CUDA give ``FakeCuda`` results; anything else made
on the CPU stays a plain CPU tensor, and is caught the moment it meets a ``FakeCuda`` one. On a
machine with a GPU the same audit watches a real CUDA run (``emulate=False``).
"""

from __future__ import annotations

import collections
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

import workbench

_WORKBENCH = str(Path(workbench.__file__).resolve().parent)
_HERE = str(Path(__file__).resolve())
_CUDA = torch.device("cuda", 0)
aten = torch.ops.aten

# Ops whose output size depends on the data: on CUDA the host waits for it.
_DYNAMIC_SHAPE = {
    aten.nonzero.default, aten.masked_select.default, aten.unique_consecutive.default,
    aten._unique2.default, aten.unique_dim.default, aten.repeat_interleave.Tensor,
}
# torch functions that, given CUDA tensors, decompose into cuDNN-only ops (no CPU kernel).
_CUDA_BRANCHING = {torch.batch_norm, torch.nn.functional.batch_norm, torch.grid_sampler,
                   torch.nn.functional.grid_sample}
# Indexing with a bool mask finds the mask's True positions first (a nonzero).
_INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
_COPIES = {aten._to_copy.default, aten.copy_.default, aten.lift_fresh.default, aten.lift_fresh_copy.default,
           aten.to.device, aten.to.dtype_layout}
_TO = (aten._to_copy.default, aten.to.device, aten.to.dtype_layout)


def _where() -> str:
    """The innermost workbench source line on the stack (``path:line in function``)."""
    for frame in reversed(traceback.extract_stack()):
        f = str(Path(frame.filename).resolve()) if frame.filename[:1] != "<" else frame.filename
        if f.startswith(_WORKBENCH) and "device_audit" not in f:
            return f"{Path(f).relative_to(Path(_WORKBENCH).parent)}:{frame.lineno} in {frame.name}"
    return "(outside workbench)"


@dataclass
class Finding:
    op: str
    where: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.op} at {self.where}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class AuditReport:
    mixing: List[Finding] = field(default_factory=list)
    syncs: Dict[str, List[Finding]] = field(default_factory=lambda: collections.defaultdict(list))

    def sync_counts(self) -> Dict[str, int]:
        return {k: len(v) for k, v in sorted(self.syncs.items())}

    def by_line(self, kind: str) -> Dict[str, int]:
        """``{where: count}`` for one sync kind (or "mixing")."""
        items = self.mixing if kind == "mixing" else self.syncs.get(kind, [])
        return dict(collections.Counter(f.where for f in items).most_common())

    def describe(self) -> str:
        lines = [f"{len(self.mixing)} device-mixing op(s)"]
        lines += [f"  {f}" for f in self.mixing[:30]]
        for kind, found in sorted(self.syncs.items()):
            lines.append(f"{len(found)} {kind} sync(s):")
            lines += [f"  {n} x {w}" for w, n in self.by_line(kind).items()]
        return "\n".join(lines)


class FakeCuda(torch.Tensor):
    """A CPU tensor that says it lives on ``cuda:0``; only usable under :class:`DeviceAudit`
    (or through ``FakeCuda.__torch_dispatch__``, which runs ops without auditing them)."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        if isinstance(elem, FakeCuda) or elem.device.type != "cpu":
            raise TypeError(f"FakeCuda wraps a plain CPU tensor, got {type(elem).__name__} on "
                            f"{elem.device}")
        r = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=_CUDA, requires_grad=elem.requires_grad)
        r.elem = elem
        return r

    def __repr__(self) -> str:
        return f"FakeCuda({self.elem!r})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.tolist:
            _record_sync("to_host", "tolist")
            return args[0].elem.tolist()
        if func in (torch.Tensor.numpy, torch.Tensor.__array__):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to "
                            "copy the tensor to host memory first.")
        if func in _CUDA_BRANCHING:
            # Composites that pick a cuDNN kernel for CUDA inputs: run their CPU path on the
            # data underneath (after the device check the dispatch mode would have made).
            audit = getattr(_state, "audit", None)
            flat = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            host = [t for t in flat if not isinstance(t, FakeCuda) and t.dim() > 0]
            if audit is not None and host:
                audit.report.mixing.append(Finding(getattr(func, "__name__", str(func)), _where(),
                                                   "with CPU tensor(s)"))
            plain = tree_map(lambda x: x.elem if isinstance(x, FakeCuda) else x, (args, kwargs))
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*plain[0], **plain[1])
            return tree_map(lambda t: FakeCuda(t) if type(t) is torch.Tensor else t, out)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run_emulated(func, args, kwargs or {})


_state = threading.local()


def _record_sync(kind: str, op: str, detail: str = "") -> None:
    audit: Optional[DeviceAudit] = getattr(_state, "audit", None)
    if audit is not None:
        audit.report.syncs[kind].append(Finding(op, _where(), detail))


def _is_cuda_device(d: Any) -> bool:
    return isinstance(d, torch.device) and d.type == "cuda" or isinstance(d, str) and d.startswith("cuda")


def _target_device(args, kwargs) -> Optional[torch.device]:
    """The ``device`` an op is asked to make its result on (keyword, or positional as in
    ``aten.to.device``), if any."""
    dev = kwargs.get("device")
    if dev is None:
        dev = next((a for a in args if isinstance(a, torch.device)), None)
    return torch.device(dev) if isinstance(dev, str) else dev


def _run_emulated(func, args, kwargs):
    """Run ``func`` on the CPU data under any FakeCuda arguments; results of ops that had
    FakeCuda inputs, or were asked for a CUDA device, are FakeCuda (copies to the host are not)."""
    on_device = [False]

    def unwrap(x):
        if isinstance(x, FakeCuda):
            on_device[0] = True
            return x.elem
        if _is_cuda_device(x):
            return torch.device("cpu")
        return x

    dev = _target_device(args, kwargs)
    args, kwargs = tree_map(unwrap, args), tree_map(unwrap, kwargs)
    to_cuda = _is_cuda_device(dev)
    out = func(*args, **kwargs)
    if dev is not None and not to_cuda and func in _COPIES:
        return out  # a copy to the host
    if not (on_device[0] or to_cuda):
        return out
    return tree_map(lambda t: FakeCuda(t) if type(t) is torch.Tensor else t, out)


def to_fake_cuda(module: torch.nn.Module) -> torch.nn.Module:
    """Replace ``module``'s parameters and buffers, in place, by :class:`FakeCuda` ones."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                m._parameters[name] = torch.nn.Parameter(FakeCuda(p.detach()), requires_grad=False)
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = FakeCuda(b)
    return module


class DeviceAudit(TorchDispatchMode):
    """Watch the ops run inside ``with DeviceAudit(emulate) as audit:``; see the module docstring.

    The findings are in ``audit.report``. With ``emulate=True`` the block's CUDA tensors are
    :class:`FakeCuda` ones and no CUDA runtime is touched.
    """

    def __init__(self, emulate: bool) -> None:
        super().__init__()
        self.emulate = emulate
        self.report = AuditReport()
        if emulate:
            # Like FakeTensorMode: CUDA-device factories and copies are answered by this mode,
            # so the CUDA runtime must not be initialised for them (there may be no driver).
            self._mode_key = torch._C._TorchDispatchModeKey.FAKE

    def __enter__(self):
        if self.emulate:
            torch._C._ensureCUDADeviceGuardSet()
            self._lift = torch._C._only_lift_cpu_tensors()
            torch._C._set_only_lift_cpu_tensors(True)
        self._outer = getattr(_state, "audit", None)
        _state.audit = self
        return super().__enter__()

    def __exit__(self, *exc):
        _state.audit = self._outer
        if self.emulate:
            torch._C._set_only_lift_cpu_tensors(self._lift)
        return super().__exit__(*exc)

    def _device_kind(self, t: torch.Tensor) -> str:
        if isinstance(t, FakeCuda):
            return "device"
        return "host" if t.device.type == "cpu" else "device"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        kinds = [self._device_kind(t) for t in flat]
        name = str(func)
        dev = _target_device(args, kwargs)
        if func in _COPIES:
            if "device" in kinds and func in _TO and dev is not None and dev.type == "cpu":
                self.report.syncs["to_host"].append(Finding(name, _where(), "device -> host copy"))
            elif func is aten.copy_.default and kinds[:2] == ["host", "device"]:
                self.report.syncs["to_host"].append(Finding(name, _where(), "device -> host copy_"))
            elif (func in _TO and _is_cuda_device(dev) and kinds == ["host"]) or \
                    (func is aten.copy_.default and kinds[:2] == ["device", "host"] and flat[1].dim() > 0):
                self.report.syncs["to_device"].append(
                    Finding(name, _where(), f"host -> device copy of {tuple(flat[-1].shape)} "
                                       f"{str(flat[-1].dtype).replace('torch.', '')}"))
        elif "device" in kinds:
            host = [t for t, k in zip(flat, kinds) if k == "host" and t.dim() > 0]
            if host:
                shapes = ", ".join(str(tuple(t.shape)) for t in host)
                self.report.mixing.append(Finding(name, _where(), f"with CPU tensor(s) of shape {shapes}"))
            if func in _DYNAMIC_SHAPE or name.startswith("torchvision.nms") or (
                    func in _INDEXING and any(t is not None and t.dtype == torch.bool for t in args[1])):
                self.report.syncs["dynamic_shape"].append(Finding(name, _where()))
        if self.emulate:
            out = _run_emulated(func, args, kwargs)
        else:
            out = func(*args, **kwargs)
        if "device" in kinds and func not in _TO:
            if not isinstance(out, torch.Tensor) and any(
                    isinstance(v, (bool, int, float)) for v in tree_flatten(out)[0]):
                self.report.syncs["scalar_read"].append(Finding(name, _where()))
        return out


def tensors_on(obj: Any, path: str = "outputs") -> List[tuple]:
    """``[(path, tensor)]`` for every tensor in nested outputs (dicts, lists, tuples, Instances)."""
    from workbench.structures import Instances

    found = []
    if isinstance(obj, torch.Tensor):
        found.append((path, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            found += tensors_on(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found += tensors_on(v, f"{path}[{i}]")
    elif isinstance(obj, Instances):
        for k, v in obj.get_fields().items():
            found += tensors_on(getattr(v, "tensor", v), f"{path}.{k}")
    return found

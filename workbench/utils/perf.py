"""Switches for the inference-time optimisations, in one place.

All of them change no module name, parameter, buffer or ``state_dict`` key, and apply only in
inference: in eval mode (the CPU ones also only without autograd), outside tracing / scripting /
``torch.compile``. All but ``tf32`` and ``autocast`` (GPU arithmetic, approximate, see below) are
exact in meaning. ``tests/parity`` checks every fixture with all of those on and with all off.

On by default: ``inference_mode``, ``fast_paste``, ``fast_pooler``, ``fast_keypoints`` and
``threaded_box_ops``, which give bit-identical results (they remove overhead around the same
kernels, or split independent work over threads).

Off by default: ``fold_batchnorm`` and ``onednn_layout``, which are most of the backbone's
speed-up (together about 0.7x its time) but can change the last bits:

* folding changes the rounding (about 1e-7 relative per layer, 1e-6 at the FPN outputs). The
  visible fixtures tolerate it, but not robustly: ``retinanet_R_50_FPN``'s boxes move to
  0.0097 px from the reference against a 0.01 px tolerance (0.0048 px unfolded, on an AVX2
  machine); on an AVX-512 machine one 101-pixel mask of ``mask_rcnn_R_50_FPN`` passed by a
  single pixel (IoU 0.9902), and on the keypoint fixture's images plus +-1 grey level of noise,
  3 of 8 trials moved a keypoint score by more than its 1e-3 tolerance (an arg-max flip in 2).
* the blocked layout runs the same oneDNN kernels as the NCHW path for every conv of the R50
  models at two threads (bit-identical there), but oneDNN picks other kernels for some narrow
  convs (e.g. the embedded model's 64 -> 7 mask predictor) and for 1x1 convs at one thread.
* both step aside (plain path) when a hook is registered on a module they would fuse or keep
  blocked, so with them on a hooked run can differ from an unhooked one in the last bits
  (``notebooks/04`` compares the two with ``torch.equal``).

Turn them on where results need not match the reference bit for bit, e.g.
``WORKBENCH_INFERENCE_OPT=fold_batchnorm=1,onednn_layout=1`` for a dataset-scale run.

The CPU-only switches (``onednn_layout``, ``fast_paste``, ``threaded_box_ops``) step aside by
themselves for tensors on any other device. Three switches are for the GPU (CUDA), all off by
default:

* ``channels_last`` is a layout, like ``onednn_layout``: the same convolutions, other cuDNN
  kernels (results within float32 rounding, not bit for bit). ``enabled=True`` turns it on, so
  the parity suite guards it wherever it runs on CUDA.
* ``tf32`` and ``autocast`` change the arithmetic: documented as approximate, never turned on
  by ``enabled=True``. With ``tf32`` off, workbench's inference runs convolutions and matmuls in
  full float32 even though torch's own default lets cuDNN use TF32 for convolutions: the switch
  sets both flags for the forward and restores what it found. ``autocast`` ("bf16" / "fp16")
  runs the backbone and the heads under ``torch.autocast`` (on any device; on CPU only bf16
  makes sense); box decoding, NMS, mask and keypoint post-processing always run in float32
  (:class:`full_precision`, :func:`float32`), so outputs are float32 whatever the switch says.

================== ====================================================================
switch             what it does
================== ====================================================================
fold_batchnorm     ``Conv2d`` + ``FrozenBatchNorm2d`` (or an eval-mode ``BatchNorm2d``) runs
                   as one convolution whose weight and bias fold the norm in, recomputed at
                   every call (see :meth:`workbench.layers.Conv2d.folded_weight_bias`).
onednn_layout      on CPU, the ResNet body (when its norms are folded), the RPN head and the
                   mask / keypoint heads keep their activations in oneDNN's blocked layout
                   from one convolution to the next (``Tensor.to_mkldnn()``) instead of
                   reordering NCHW <-> blocked around every conv, as each plain conv call does.
                   The kernels are the same in most cases (see above), so are the values.
                   Inputs and outputs stay dense NCHW; the path is skipped (plain NCHW)
                   whenever a hook is registered inside, autograd is on, or a submodule is
                   of a kind not known to run on blocked tensors.
inference_mode     ``DefaultPredictor`` runs the model under ``torch.inference_mode()``
                   instead of ``torch.no_grad()``.
fast_paste         CPU mask pasting: the same ``grid_sample`` per box over its own window,
                   without the per-box indexing and grid stacking around it.
fast_pooler        ``ROIPooler`` fills a preallocated output level by level with
                   ``index_copy_`` (no zero-fill, no masked scatter).
fast_keypoints     keypoint decoding skips the full-resolution softmax: the score at the
                   arg-max is ``1 / sum(exp(heatmap - max))``, the same float.
threaded_box_ops   torchvision's CPU ``roi_align`` / ``roi_pool`` / ``nms`` kernels use one
                   thread whatever ``torch.get_num_threads()`` says: ROI pooling splits its
                   boxes, per-class NMS its classes, over that many threads. Each box (class)
                   is computed on its own, so the results are the same.
channels_last      CUDA: the backbone takes its input batch in ``torch.channels_last``
                   memory format (cuDNN's NHWC kernels; the layout carries through the
                   network). Off by default; in ``enabled=True``.
tf32               CUDA: convolutions and matmuls may use TF32 (10-bit mantissa products)
                   during inference. Approximate; off by default and in ``enabled=True``.
autocast           "off" (default), "bf16" or "fp16": backbone and heads under
                   ``torch.autocast`` of that dtype, post-processing in float32.
                   Approximate; never turned on by ``enabled=True``.
================== ====================================================================

Turn them on or off (all or some), for a measurement or when bisecting a numerical question::

    from workbench.utils import perf

    with perf.inference_options(enabled=False):      # everything off inside the block
        outputs = model(inputs)
    with perf.inference_options(enabled=True):       # everything on, fold_batchnorm included
        outputs = model(inputs)                      # (tf32 and autocast stay off)
    with perf.inference_options(autocast="bf16"):    # the GPU's approximate arithmetic
        outputs = model(inputs)
    with perf.inference_options(onednn_layout=False):  # one switch
        ...
    perf.set_inference_options(fold_batchnorm=True)    # process-wide, until changed back

or from the environment, read at import: ``WORKBENCH_INFERENCE_OPT=0`` turns everything off,
``WORKBENCH_INFERENCE_OPT=fold_batchnorm=1,onednn_layout=0`` sets the named ones (the others
keep their defaults); ``autocast=bf16`` names the autocast dtype.

Why not config keys: these switches change how the computation is scheduled, not what the
model is; a checkpoint's config should not carry them, and they must also reach models not built
from a config (custom modules, notebooks) and code that has no cfg at hand (``paste_masks_in_image``).
The state is process-wide (not per thread), like ``torch.backends`` flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch

__all__ = [
    "InferenceOptions",
    "get_inference_options",
    "set_inference_options",
    "inference_options",
    "inference_precision",
    "full_precision",
    "float32",
    "ENV_VAR",
]

ENV_VAR = "WORKBENCH_INFERENCE_OPT"
# The ``autocast`` switch's values.
AUTOCAST_DTYPES: Dict[str, Optional[torch.dtype]] = {"off": None, "bf16": torch.bfloat16,
                                                     "fp16": torch.float16}


@dataclass(frozen=True)
class InferenceOptions:
    """Which inference optimisations are on. See the module docstring for each field."""

    # Off by default: the two switches that can change numbers (see the module docstring).
    fold_batchnorm: bool = False
    onednn_layout: bool = False
    inference_mode: bool = True
    fast_paste: bool = True
    fast_pooler: bool = True
    fast_keypoints: bool = True
    threaded_box_ops: bool = True
    # GPU switches, off by default; tf32 and autocast are approximate (never in all_on()).
    channels_last: bool = False
    tf32: bool = False
    autocast: str = "off"

    APPROXIMATE = ("tf32", "autocast")

    def __post_init__(self) -> None:
        if self.autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"InferenceOptions.autocast must be one of {sorted(AUTOCAST_DTYPES)}, "
                             f"got {self.autocast!r}.")

    @classmethod
    def all_off(cls) -> "InferenceOptions":
        return cls(**{f.name: False for f in dataclasses.fields(cls) if f.type in (bool, "bool")})

    @classmethod
    def all_on(cls) -> "InferenceOptions":
        """Every switch whose results stay within float32 rounding (fold_batchnorm and the
        layouts included): what the parity suite checks as "opt_on". tf32 and autocast stay off."""
        return cls(**{f.name: f.name not in cls.APPROXIMATE
                      for f in dataclasses.fields(cls) if f.type in (bool, "bool")})

    @classmethod
    def from_env(cls, value: Optional[str]) -> "InferenceOptions":
        """Parse ``WORKBENCH_INFERENCE_OPT``: "", "1" (defaults), "0" (all off), or "name=0,name=1"."""
        if value is None or value.strip() in ("", "1", "on", "true"):
            return cls()
        if value.strip() in ("0", "off", "false"):
            return cls.all_off()
        names = {f.name for f in dataclasses.fields(cls)}
        changes = {}
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            name, _, flag = item.partition("=")
            name = name.strip()
            if name not in names:
                raise ValueError(f"{ENV_VAR}: unknown option {name!r}; expected one of {sorted(names)}.")
            if name == "autocast":
                if flag.strip() not in AUTOCAST_DTYPES:
                    raise ValueError(f"{ENV_VAR}: {item!r} should be autocast=" + " or autocast=".join(
                        sorted(AUTOCAST_DTYPES)) + ".")
                changes[name] = flag.strip()
                continue
            if flag.strip() not in ("0", "1", "on", "off", "true", "false"):
                raise ValueError(f"{ENV_VAR}: {item!r} should be {name}=0 or {name}=1.")
            changes[name] = flag.strip() in ("1", "on", "true")
        return cls(**changes)


_options = InferenceOptions.from_env(os.environ.get(ENV_VAR))


def get_inference_options() -> InferenceOptions:
    """The options in force."""
    return _options


def set_inference_options(options: Optional[InferenceOptions] = None, **changes: Any) -> InferenceOptions:
    """Replace the options process-wide (``options``, then ``changes`` on top); returns the old ones."""
    global _options
    old = _options
    new = options if options is not None else _options
    _options = dataclasses.replace(new, **changes) if changes else new
    return old


@contextlib.contextmanager
def inference_options(enabled: Optional[bool] = None, **changes: Any) -> Iterator[InferenceOptions]:
    """Set options for the ``with`` block: ``enabled=False`` / ``True`` turns every switch off /
    on first (``fold_batchnorm`` included; ``tf32`` and ``autocast`` stay off, see
    :meth:`InferenceOptions.all_on`), keyword arguments then set single ones. Restores the
    previous options on exit."""
    if enabled is None:
        base = _options
    else:
        base = InferenceOptions.all_on() if enabled else InferenceOptions.all_off()
    old = set_inference_options(base, **changes)
    try:
        yield _options
    finally:
        set_inference_options(old)


def _plain_eager() -> bool:
    """True outside TorchScript scripting / tracing and torch.compile."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling():
        return False
    return True


def global_module_hooks() -> bool:
    """True while a global module hook (``torch.nn.modules.module.register_module_forward_hook``
    or its pre-hook twin) is registered: it must see every module run as written, unfused."""
    from torch.nn.modules import module as _m

    return bool(getattr(_m, "_global_forward_hooks", None) or getattr(_m, "_global_forward_pre_hooks", None))


# -- oneDNN blocked layout -------------------------------------------------------------------

# Module types whose forward runs unchanged on blocked (mkldnn) tensors, with an optional extra
# check of the instance. Modules register themselves (register_onednn_safe); a tree holding
# anything else runs in plain NCHW.
_ONEDNN_SAFE: Dict[type, Optional[Callable[[torch.nn.Module], bool]]] = {
    torch.nn.Sequential: None,
    torch.nn.ReLU: None,
    torch.nn.Conv2d: lambda m: m.padding_mode == "zeros",
    torch.nn.ConvTranspose2d: lambda m: m.padding_mode == "zeros",
    torch.nn.MaxPool2d: None,
}
# Children a registered check has vouched for (e.g. a Conv2d's folded norm): not walked into.
_ONEDNN_SKIP_CHILDREN: Dict[type, Tuple[str, ...]] = {}
_ONEDNN_AVAILABLE = bool(getattr(torch.backends, "mkldnn", None) and torch.backends.mkldnn.is_available())


def register_onednn_safe(cls: type, check: Optional[Callable[[torch.nn.Module], bool]] = None,
                         skip_children: Sequence[str] = ()) -> None:
    """Declare that ``cls.forward`` only uses ops that take blocked (mkldnn) tensors and are
    exact on them (conv, transposed conv, relu, max pool, add). ``check(module)`` can veto an
    instance; ``skip_children`` names children that ``check`` has already vetted."""
    _ONEDNN_SAFE[cls] = check
    _ONEDNN_SKIP_CHILDREN[cls] = tuple(skip_children)


def _onednn_safe_tree(module: torch.nn.Module) -> bool:
    """Every descendant of ``module`` is of a registered kind, passes its check, has no hooks."""
    skip = _ONEDNN_SKIP_CHILDREN.get(type(module), ())
    for name, child in module.named_children():
        if child._forward_hooks or child._forward_pre_hooks:
            return False
        if name in skip:
            continue
        cls = type(child)
        if cls not in _ONEDNN_SAFE:
            return False
        check = _ONEDNN_SAFE[cls]
        if check is not None and not check(child):
            return False
        if not _onednn_safe_tree(child):
            return False
    return True


def enter_onednn(module: torch.nn.Module, x: torch.Tensor):
    """``(x.to_mkldnn(), True)`` if ``module`` may run on ``x`` in oneDNN's blocked layout,
    else ``(x, False)``. The caller converts its outputs back with ``.to_dense()``.

    Conditions: the ``onednn_layout`` switch, a 4-d float32 dense CPU tensor, eval mode, no
    autograd (``no_grad`` / ``inference_mode``), eager execution, no global module hooks, and
    :func:`_onednn_safe_tree` for the module's children.
    """
    if (not _options.onednn_layout or not _ONEDNN_AVAILABLE or module.training
            or torch.is_grad_enabled() or x.dim() != 4 or x.dtype != torch.float32
            or x.device.type != "cpu" or x.is_mkldnn or x.numel() == 0 or not _plain_eager()):
        return x, False
    if global_module_hooks() or not _onednn_safe_tree(module):
        return x, False
    return x.to_mkldnn(), True



# -- a few threads for single-threaded kernels ------------------------------------------------

_pool_state: Optional[Tuple[int, int, ThreadPoolExecutor]] = None  # (pid, workers, pool)


def thread_pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads, recreated after a fork or a size change."""
    global _pool_state
    pid = os.getpid()
    if _pool_state is None or _pool_state[0] != pid or _pool_state[1] != workers:
        if _pool_state is not None and _pool_state[0] == pid:
            _pool_state[2].shutdown(wait=False)
        _pool_state = (pid, workers, ThreadPoolExecutor(workers, thread_name_prefix="workbench"))
    return _pool_state[2]


def map_in_threads(fn: Callable, items: Sequence) -> list:
    """``[fn(item) for item in items]`` on :func:`thread_pool`, with the caller's autograd mode
    (``no_grad`` or ``inference_mode``; both are thread-local). Only for work without autograd."""
    inference = torch.is_inference_mode_enabled()

    def run(item):
        with torch.inference_mode() if inference else torch.no_grad():
            return fn(item)

    return list(thread_pool(min(len(items), torch.get_num_threads())).map(run, items))


# -- GPU switches: TF32, autocast, channels_last ---------------------------------------------

def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


@contextlib.contextmanager
def _cuda_tf32(allow: bool) -> Iterator[None]:
    """cuDNN convolutions and CUDA matmuls with (``allow``) or without TF32, restored on exit.

    Through torch's per-backend precision flags where they exist (torch >= 2.9: the legacy
    ``allow_tf32`` properties raise once the two APIs have been mixed), else the legacy ones.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        matmul = torch.backends.cuda.matmul
        old = (conv.fp32_precision, matmul.fp32_precision)
        conv.fp32_precision = matmul.fp32_precision = "tf32" if allow else "ieee"
        try:
            yield
        finally:
            conv.fp32_precision, matmul.fp32_precision = old
        return
    old_legacy = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old_legacy


@contextlib.contextmanager
def inference_precision(device: torch.device) -> Iterator[None]:
    """The arithmetic of one inference on ``device``: the meta-architectures run their
    inference (backbone, heads, post-processing) inside it.

    On CUDA, TF32 as the ``tf32`` switch says (off: full float32, whatever torch's flags say;
    they are restored on exit). With ``autocast`` "bf16" / "fp16", ``torch.autocast`` of that
    dtype on ``device``'s type, outside tracing / scripting / ``torch.compile``; the
    post-processing steps leave it (:class:`full_precision`). Nothing else on other devices.
    """
    dtype = AUTOCAST_DTYPES[_options.autocast]
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(_cuda_tf32(_options.tf32))
        if dtype is not None and _plain_eager():
            stack.enter_context(torch.autocast(device.type, dtype=dtype))
        yield


def in_inference_precision(method: Callable) -> Callable:
    """Decorator for a meta-architecture's ``forward`` / ``inference``: in eval mode the call
    runs inside :func:`inference_precision` on the model's ``device``; training is untouched."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.training:
            return method(self, *args, **kwargs)
        with inference_precision(self.device):
            return method(self, *args, **kwargs)

    return wrapper


class full_precision(contextlib.ContextDecorator):
    """Context manager / decorator: ``torch.autocast`` off inside (on every device type where
    it is on), for the post-processing steps (box decoding and selection, mask and keypoint
    decoding): they run in float32 when the backbone and heads run under the ``autocast``
    switch. Their inputs are cast with :func:`float32`. A no-op when autocast is off."""

    def _recreate_cm(self):
        return type(self)()  # a fresh instance per decorated call (re-entrant, thread-safe)

    def __enter__(self) -> "full_precision":
        self._stack = contextlib.ExitStack()
        for device_type in ("cuda", "cpu"):
            if _autocast_enabled(device_type):
                self._stack.enter_context(torch.autocast(device_type, enabled=False))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


_HALF = (torch.float16, torch.bfloat16)


def float32(x: Any) -> Any:
    """``x`` with every float16 / bfloat16 tensor cast to float32 (``x`` may be a tensor or
    nested lists / tuples of them); anything else, float32 tensors included, is returned as it
    is (the same objects). For the inputs of post-processing under the ``autocast`` switch."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype in _HALF else x
    if type(x) in (list, tuple):
        items = [float32(t) for t in x]
        return x if all(a is b for a, b in zip(items, x)) else type(x)(items)
    return x


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in ``torch.channels_last`` memory format if the ``channels_last`` switch is on, ``x``
    is a 4-d CUDA tensor and execution is eager; else ``x`` itself (same values either way)."""
    if (_options.channels_last and x.dim() == 4 and x.device.type == "cuda" and not x.is_mkldnn
            and _plain_eager()):
        return x.contiguous(memory_format=torch.channels_last)
    return x

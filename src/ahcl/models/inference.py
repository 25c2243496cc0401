"""The inference form of a frozen backbone: what every encoding path runs.

:func:`inference_model` copies a :class:`~ahcl.models.backbones.Backbone` (the original is never
touched: finetune training keeps using it) into an :class:`InferenceBackbone`: eval mode, no
gradients, BatchNorm folded into the convolution before it (``torch.fx`` fusion, where the
network traces symbolically; a network that does not keeps its BatchNorm layers and only loses
the folding), weights and inputs ``channels_last``, on the placement's device, optionally
``torch.compile``-d, run under ``torch.inference_mode()`` and the placement's autocast.

Why this shape (MobileNetV2 on a 2-core AVX2/AVX-512 CPU, 2 torch threads; ``bench_encode.py``
measures it): plain NCHW float32 ≈ 36 img/s at batch 32–64; channels_last ≈ 60 (oneDNN's
depthwise and 1×1 kernels want NHWC, and without it every layer reorders); folding BN on top
≈ 110 (half of MobileNetV2's layers are BatchNorm, each a full pass over the activations); and
forwarding the CPU batch in chunks of :data:`CPU_CHUNK` images ≈ 200, because the activations of 8
images stay in the caches where 32 do not. Features differ from the plain model by ~1e-6
(float32 rounding in another order), which is why the form is part of the feature-cache key
(:func:`~ahcl.models.backbones.form_tag`).
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import shutil

import numpy as np
import torch
import torch.fx.experimental.optimization
from torch import nn

from ahcl.data.transforms import QuarterTurn
from ahcl.device import CPU, Placement
from ahcl.errors import AhclError
from ahcl.models.backbones import Backbone, form_tag

__all__ = ["CPU", "CPU_CHUNK", "CompileUnavailableError", "InferenceBackbone", "inference_model"]

logger = logging.getLogger(__name__)


#: Images per forward call on the CPU. Measured over 2–32 on MobileNetV2, EfficientNet-B0,
#: ResNet-18/50: 8 is the fastest for all four (1.3–1.7× batch 32 for the first two), since the
#: early activations of 8 images (8×32×112×112 floats ≈ 13 MB) fit the last-level cache. On a GPU
#: the whole batch goes at once: there the opposite holds.
CPU_CHUNK = 8


class CompileUnavailableError(AhclError, RuntimeError):
    """``torch.compile`` was asked for where it cannot work.

    Attributes:
        device: the placement's device (``"cpu"``, ``"cuda:0"``).
        reason: what is missing (``"no torch.compile"``, ``"no C++ compiler"``, ...) or the type
            of the exception compilation raised.
    """


class InferenceBackbone(nn.Module):
    """A frozen copy of a backbone for encoding: images ``float (B, 3, H, W)`` → ``float32
    (B, feature_dim)`` on the placement's device. Build it with :func:`inference_model`.

    It carries what :func:`~ahcl.models.features.extract_features` needs of a backbone (``name``,
    ``feature_dim``, ``transform``, ``cache_key``), so it can be passed there instead of one.

    Attributes:
        name, feature_dim, weights_id, transform, transform_id: those of the source backbone.
        placement: where it runs and in what precision.
        folded: whether BatchNorm was folded into the convolutions.
        compiled: whether the body is ``torch.compile``-d.
        form: :func:`~ahcl.models.backbones.form_tag` of this form.
        cache_key: the source's :meth:`~ahcl.models.backbones.Backbone.feature_key` of ``form``.
        body: the converted network.
    """

    def __init__(self, body: nn.Module, *, source: Backbone, placement: Placement, folded: bool,
                 compiled: bool) -> None:
        super().__init__()
        self.body = body
        # Copies only: holding ``source`` (or its transform, an nn.Module for torchvision's
        # presets) would make it a submodule, and .eval() or .to() on this form would then switch
        # or move the original's.
        self.name = source.name
        self.feature_dim = source.feature_dim
        self.weights_id = source.weights_id
        self.transform = copy.deepcopy(source.transform)
        self.transform_id = source.transform_id
        self.placement = placement
        self.folded = folded
        self.compiled = compiled
        self.form = form_tag(placement.device.type, placement.precision, compiled)
        self.cache_key = source.feature_key(self.form)
        self._compile_checked = not compiled
        super().train(False)

    def train(self, mode: bool = True) -> "InferenceBackbone":
        """Stays in eval mode; ``train(True)`` is refused (train the source backbone instead)."""
        if mode:
            raise ValueError(f"the inference form of {self.name} cannot train; "
                             "train the Backbone it was built from")
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a batch.

        Args:
            x: ``float (B, 3, H, W)`` images normalised by :attr:`transform`, on any device
                (pinned CPU memory is copied asynchronously to CUDA).

        Returns:
            ``float32 (B, feature_dim)`` on the placement's device.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        x = self.placement.to_device(x).contiguous(memory_format=torch.channels_last)
        chunks = x.split(CPU_CHUNK) if self.placement.device.type == "cpu" else (x,)
        with torch.inference_mode(), self.placement.autocast():
            outs = [self._body(chunk) for chunk in chunks]
        return (outs[0] if len(outs) == 1 else torch.cat(outs)).float()

    def features(self, x: torch.Tensor) -> np.ndarray:
        """:meth:`forward` as ``float32 (B, feature_dim)`` numpy on the CPU."""
        return self.forward(x).cpu().numpy()

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        if self._compile_checked:
            out = self.body(x)
        else:
            try:  # torch.compile compiles on the first call: its failures surface here
                out = self.body(x)
            except Exception as exc:  # noqa: BLE001 - dynamo, inductor and compiler errors alike
                raise CompileUnavailableError(
                    f"torch.compile failed for {self.name} on {self.placement.device} "
                    f"({type(exc).__name__}); run without --compile",
                    device=str(self.placement.device), reason=type(exc).__name__) from exc
            self._compile_checked = True
        if isinstance(out, tuple):  # GoogLeNet / Inception return aux logits beside features
            out = out[0]
        return out.flatten(1)

    def turned(self, k: int) -> "InferenceBackbone":
        """This form reading every image rotated by ``k`` quarter turns first: the same network
        (shared, not copied), its own transform and its own feature-cache key."""
        k = int(k) % 4
        if k == 0:
            return self
        view = copy.copy(self)  # shallow: the body is shared
        # Own submodule table (the transform may be a registered torchvision preset), so the
        # original keeps its transform.
        object.__setattr__(view, "_modules", {k_: m for k_, m in self._modules.items()
                                              if k_ != "transform"})
        object.__setattr__(view, "transform", QuarterTurn(k, self.transform))
        object.__setattr__(view, "cache_key", f"{self.cache_key}|turn{k}")
        return view

    def extra_repr(self) -> str:
        return f"name={self.name!r}, form={self.form!r}, folded={self.folded}"


def inference_model(backbone: Backbone, placement: Placement | None = None, *,
                    compile: bool = False) -> InferenceBackbone:
    """The inference form of ``backbone`` (a converted copy; ``backbone`` is left as it is).

    Args:
        backbone: any :class:`~ahcl.models.backbones.Backbone`, in train or eval mode, on any
            device.
        placement: device and precision (default :data:`CPU`, float32).
        compile: wrap the body in ``torch.compile`` (inductor). It compiles on the first batch
            (tens of seconds) and pays off only where the benchmark says so.

    Returns:
        An :class:`InferenceBackbone` on ``placement.device``.

    Raises:
        CompileUnavailableError: ``compile`` where torch.compile cannot work (no torch.compile,
            an unsupported Python, no C++ compiler for the CPU, no triton for CUDA); also raised
            by the first forward call if compilation itself fails.
    """
    placement = CPU if placement is None else placement
    if compile:
        _check_compile(placement)
    body = copy.deepcopy(backbone.body).eval().requires_grad_(False)
    folded = False
    try:
        # inplace on our own copy: fuse() would otherwise deep-copy the network a second time.
        body = torch.fx.experimental.optimization.fuse(body, inplace=True)
        folded = True
    except Exception as exc:  # noqa: BLE001 - whatever symbolic tracing rejects
        logger.debug("%s: BatchNorm not folded (%s: %s); channels_last only", backbone.name,
                     type(exc).__name__, exc)
    body = body.to(placement.device, memory_format=torch.channels_last)
    if compile:
        body = torch.compile(body)
    return InferenceBackbone(body, source=backbone, placement=placement, folded=folded,
                             compiled=compile)


def _check_compile(placement: Placement) -> None:
    """Refuse ``torch.compile`` up front where it is known not to work (one line each)."""
    device = str(placement.device)
    if not hasattr(torch, "compile"):
        raise CompileUnavailableError(f"--compile: torch {torch.__version__} has no torch.compile "
                                      "(it needs torch >= 2.0); run without --compile",
                                      device=device, reason="no torch.compile")
    supported = getattr(torch._dynamo, "is_dynamo_supported", lambda: True)
    if not supported():
        raise CompileUnavailableError(f"--compile: torch {torch.__version__} cannot compile on "
                                      "this Python or platform; run without --compile",
                                      device=device, reason="dynamo unsupported")
    if placement.device.type == "cpu" and _cxx() is None:
        raise CompileUnavailableError("--compile on the CPU needs a C++ compiler (g++ or clang++) "
                                      "for inductor's kernels; install one or run without "
                                      "--compile", device=device, reason="no C++ compiler")
    if placement.is_cuda and importlib.util.find_spec("triton") is None:
        raise CompileUnavailableError("--compile on CUDA needs triton (pip install triton); "
                                      "or run without --compile", device=device,
                                      reason="no triton")


def _cxx() -> str | None:
    """The C++ compiler inductor would find: ``$CXX``, else g++, c++ or clang++ on the PATH."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else []
    for name in [*names, "g++", "c++", "clang++"]:
        found = shutil.which(name)
        if found:
            return found
    return None

"""The inference form: equal to the plain backbone, leaves it untouched, keys its own cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ahcl.device import Placement
from ahcl.models import inference as inference_module
from ahcl.models.backbones import INFERENCE_FORM, Backbone, create_backbone, form_tag
from ahcl.models.feature_cache import FeatureCache
from ahcl.models.features import extract_features
from ahcl.models.inference import (
    CPU,
    CPU_CHUNK,
    CompileUnavailableError,
    InferenceBackbone,
    inference_model,
)
from tests.models._helpers import N_IMAGES, Counting

# Folding BN and channels_last reorder float32 sums: the features agree to ~1e-6 of their scale
# (measured 2e-7 on tiny_cnn, ~1e-6 on random-weight MobileNetV2/ResNet-18); 1e-4 leaves room
# for other kernels and still catches any real difference (a lost BN, a wrong layout).
REL_TOL = 1e-4


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _plain(backbone: Backbone, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return backbone.eval().forward_features(x).numpy()


def _assert_rel_close(got: np.ndarray, want: np.ndarray, tol: float = REL_TOL) -> None:
    scale = float(np.abs(want).max())
    assert scale > 0
    assert float(np.abs(got - want).max()) <= tol * scale


@pytest.mark.parametrize("name, size", [("tiny_cnn", 64), ("mobilenet_v2", 96),
                                        ("resnet18", 64)])
def test_inference_form_equals_the_plain_backbone(name, size):
    bb = create_backbone(name, pretrained=False, seed=3)
    # CPU_CHUNK + 3 images: two chunks on the CPU, the second a partial one.
    x = _images(CPU_CHUNK + 3, size)
    fast = inference_model(bb)
    assert fast.folded and not fast.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    got = fast.features(x)
    assert got.dtype == np.float32 and got.shape == (len(x), bb.feature_dim)
    _assert_rel_close(got, _plain(bb, x))


def test_building_the_form_leaves_the_backbone_untouched():
    bb = create_backbone("mobilenet_v2", pretrained=False, seed=1).train()
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in bb.modules())
    fast = inference_model(bb)
    fast.features(_images(4, 64))
    assert bb.training and all(m.training for m in bb.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bb.modules()) == n_bn == 52
    after = bb.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # running stats included
    assert all(p.requires_grad and p.is_contiguous() and p.device.type == "cpu"
               for p in bb.parameters())
    # The form shares no tensor with the original, and nothing of it is a submodule of the form.
    ours = {p.data_ptr() for p in bb.parameters()}
    assert not ours & {p.data_ptr() for p in fast.parameters()}
    assert not any(m is bb.body or m is bb.transform for m in fast.modules())


class _Branchy(nn.Module):
    """Conv → BN with data-dependent control flow: torch.fx cannot trace it symbolically."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        # The branch fx cannot follow; it depends on the weights, not on the batch, so a
        # chunked forward pass (CPU_CHUNK images at a time) takes it exactly as a whole one.
        if self.conv.weight.sum() > 0:
            y = y * 2
        return self.pool(torch.relu(y))


def test_an_untraceable_backbone_falls_back_to_channels_last_only():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        body = _Branchy()
        body.bn.running_mean.uniform_(-0.5, 0.5)
    bb = Backbone(body, name="branchy", feature_dim=8, weights_id="random-seed0",
                  transform=lambda img: img, transform_id="none")
    fast = inference_model(bb)
    assert not fast.folded and any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    x = _images(CPU_CHUNK + 1, 16)
    _assert_rel_close(fast.features(x), _plain(bb, x))
    # Same key whether or not BN folds: folding is fixed by the architecture (name + weights).
    assert fast.cache_key == bb.cache_key


def test_the_form_stays_in_eval_and_checks_shapes():
    fast = inference_model(create_backbone("tiny_cnn"))
    with pytest.raises(ValueError, match="cannot train"):
        fast.train()
    assert fast.eval() is fast and not fast.training
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        fast(torch.zeros(3, 64, 64))


def test_form_tags_and_cache_keys(tmp_path):
    assert form_tag("cpu", "fp32") == f"fast{INFERENCE_FORM}-cpu-fp32" == "fast1-cpu-fp32"
    tags = {form_tag(d, p, c) for d in ("cpu", "cuda") for p in ("fp32", "bf16", "fp16")
            for c in (False, True)}
    assert len(tags) == 12
    bb = create_backbone("tiny_cnn", seed=0)
    plain_key = f"{bb.name}|{bb.weights_id}|{bb.transform_id}|{bb.feature_dim}"  # before forms
    fp32 = inference_model(bb)
    bf16 = inference_model(bb, Placement(torch.device("cpu"), "bf16"))
    assert fp32.cache_key == bb.cache_key == f"{plain_key}|fast1-cpu-fp32"
    assert bf16.cache_key == f"{plain_key}|fast1-cpu-bf16"
    assert len({plain_key, fp32.cache_key, bf16.cache_key}) == 3
    folders = {FeatureCache(tmp_path, key, bb.feature_dim).path.name
               for key in (plain_key, fp32.cache_key, bf16.cache_key)}
    assert len(folders) == 3


def test_precisions_never_share_cached_features(images, tmp_path, tiny, monkeypatch):
    bb, count = tiny
    fp32 = extract_features(images, bb, cache_dir=tmp_path, num_workers=0)
    bf16 = extract_features(images, bb, cache_dir=tmp_path, num_workers=0,
                            placement=Placement(torch.device("cpu"), "bf16"))
    assert count.n == 2 * N_IMAGES  # the bf16 call found nothing it could use
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)
    _assert_rel_close(bf16, fp32, tol=5e-2)  # bfloat16 keeps 8 bits of mantissa
    again = extract_features(images, bb, cache_dir=tmp_path,
                             placement=Placement(torch.device("cpu"), "bf16"))
    assert count.n == 2 * N_IMAGES and np.array_equal(again, bf16)


def test_compile_is_refused_in_one_line_where_it_cannot_work(monkeypatch):
    bb = create_backbone("tiny_cnn")
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(inference_module.shutil, "which", lambda name: None)
    with pytest.raises(CompileUnavailableError, match="C\\+\\+ compiler") as info:
        inference_model(bb, compile=True)
    assert info.value.reason == "no C++ compiler" and info.value.device == "cpu"
    assert "\n" not in str(info.value) and isinstance(info.value, RuntimeError)
    monkeypatch.delattr(torch, "compile")
    with pytest.raises(CompileUnavailableError, match="torch.compile") as info:
        inference_model(bb, compile=True)
    assert info.value.reason == "no torch.compile"
    assert isinstance(inference_model(bb), InferenceBackbone)  # without compile: fine


def test_a_failing_compilation_surfaces_as_one_line(monkeypatch):
    def broken(*_: object) -> None:
        raise RuntimeError("inductor said no\nwith a long traceback")

    monkeypatch.setattr(inference_module, "_check_compile", lambda placement: None)
    monkeypatch.setattr(torch, "compile", lambda module: broken)
    fast = inference_model(create_backbone("tiny_cnn"), compile=True)
    assert fast.compiled and fast.form == "fast1-cpu-fp32-compiled"
    with pytest.raises(CompileUnavailableError, match="run without --compile") as info:
        fast(_images(2, 64))
    assert info.value.reason == "RuntimeError" and "\n" not in str(info.value)


@pytest.mark.slow
def test_compiled_form_equals_the_plain_backbone():
    # Compiles tiny_cnn with inductor (needs a C++ compiler): ~10-30 s on two cores.
    bb = create_backbone("tiny_cnn", seed=2)
    try:
        fast = inference_model(bb, compile=True)
    except CompileUnavailableError as exc:
        pytest.skip(str(exc))
    x = _images(CPU_CHUNK + 2, 64)
    _assert_rel_close(fast.features(x), _plain(bb, x))
    assert fast.cache_key != inference_model(bb).cache_key


def test_default_placement_is_the_cpu_in_float32():
    assert CPU == Placement(torch.device("cpu"), "fp32")
    assert inference_model(create_backbone("tiny_cnn")).placement == CPU

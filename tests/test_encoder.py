"""Query encoding: codes through the inference form equal the plain network's, on a placement."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ahcl.device import Placement
from ahcl.encoder import Encoder
from ahcl.index.packing import pack_codes, unpack_codes
from ahcl.models import inference as inference_module
from ahcl.models.backbones import create_backbone
from ahcl.models.heads import HashNet
from ahcl.models.inference import CPU, CompileUnavailableError

REPO = Path(__file__).resolve().parents[1]
N_BITS, N_CLASSES = 32, 3
BF16 = Placement(torch.device("cpu"), "bf16")


@pytest.fixture
def images(tmp_path) -> list[Path]:
    """Twelve seeded random RGB PNGs (so a batch of 5 leaves a partial last one)."""
    rng = np.random.default_rng(1)
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"scene_{i}.png")
        Image.fromarray(rng.integers(0, 256, (70, 70, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def _net(finetune: bool, seed: int = 0) -> HashNet:
    backbone = create_backbone("tiny_cnn", seed=seed) if finetune else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HashNet(64, N_BITS, N_CLASSES, hidden=16, backbone=backbone)


def _plain_u(net: HashNet, backbone, paths: list[Path]) -> np.ndarray:
    """Reference: the unconverted network, one NCHW float32 batch."""
    source = backbone if backbone is not None else net.backbone
    x = torch.stack([source.transform(Image.open(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        net.eval()
        feats = backbone.eval().forward_features(x) if backbone is not None else x
        return (net.forward_head(feats) if backbone is not None else net(feats))[0].numpy()


@pytest.mark.parametrize("finetune", [False, True])
def test_codes_match_the_plain_network_and_the_default_path(images, tmp_path, finetune):
    net = _net(finetune)
    backbone = None if finetune else create_backbone("tiny_cnn", seed=0)
    default = Encoder(net, backbone, str(tmp_path / "a"), batch_size=5)
    placed = Encoder(net, backbone, str(tmp_path / "b"), batch_size=5, placement=CPU,
                     num_workers=2)
    u = default.encode_u(images)
    assert u.dtype == np.float32 and u.shape == (len(images), N_BITS)
    # Folded BN and channels_last move u by float32 rounding only.
    np.testing.assert_allclose(u, _plain_u(net, backbone, images), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(placed.encode_u(images), u)
    codes = default.encode(images)
    assert codes.dtype == np.uint8 and codes.shape == (len(images), N_BITS // 8)
    np.testing.assert_array_equal(codes, pack_codes(u))
    np.testing.assert_array_equal(placed.encode(images), codes)


@pytest.mark.parametrize("finetune", [False, True])
def test_uploaded_images_get_the_codes_of_their_files(images, tmp_path, finetune):
    net = _net(finetune, seed=4)
    backbone = None if finetune else create_backbone("tiny_cnn", seed=4)
    encoder = Encoder(net, backbone, str(tmp_path), batch_size=5)
    uploads = [Image.open(p) for p in images]
    np.testing.assert_array_equal(encoder.encode_images(uploads), encoder.encode(images))
    assert encoder.encode_images([]).shape == (0, N_BITS // 8)
    # The service's split: inputs made on each request's thread, then one forward pass (of
    # more images than one batch here) gives the same codes.
    inputs = encoder.image_inputs(uploads)
    assert len(inputs) == len(uploads) > encoder.batch_size
    np.testing.assert_array_equal(encoder.encode_inputs(inputs), encoder.encode(images))
    assert encoder.encode_inputs([]).shape == (0, N_BITS // 8)


def test_sign_of_zero_is_plus_one(images, tmp_path):
    encoder = Encoder(_net(False), create_backbone("tiny_cnn"), str(tmp_path))
    with torch.no_grad():  # a head whose output is exactly 0: tanh(0) = 0 → bit 1
        for p in encoder._head.parameters():
            p.zero_()
    assert (encoder.encode_u(images[:3]) == 0).all()
    assert (unpack_codes(encoder.encode(images[:3]), N_BITS) == 1).all()


def test_encoding_leaves_the_trained_network_alone(images, tmp_path):
    net = _net(True, seed=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    Encoder(net, None, batch_size=4).encode(images)
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert all(p.requires_grad and p.is_contiguous() for p in net.parameters())
    assert sum(isinstance(m, torch.nn.Module) for m in net.modules()) == \
        sum(1 for _ in _net(True, seed=2).modules())


# bfloat16 keeps 8 mantissa bits: a bit flips only where |u| is within ~1% of 0. On these
# random images and weights ≥ 95% of the bits must agree with float32 (measured: 100%,
# max |Δu| 0.002).
BF16_MIN_AGREEMENT = 0.95


@pytest.mark.parametrize("finetune", [False, True])
def test_bf16_autocast_on_the_cpu_agrees_with_fp32(images, tmp_path, finetune):
    net = _net(finetune, seed=3)
    backbone = None if finetune else create_backbone("tiny_cnn", seed=3)
    fp32 = Encoder(net, backbone, str(tmp_path), batch_size=5)
    bf16 = Encoder(net, backbone, str(tmp_path), batch_size=5, placement=BF16)
    u32, u16 = fp32.encode_u(images), bf16.encode_u(images)
    assert u16.dtype == np.float32
    agree = (unpack_codes(fp32.encode(images), N_BITS) ==
             unpack_codes(bf16.encode(images), N_BITS)).mean()
    assert agree >= BF16_MIN_AGREEMENT
    np.testing.assert_allclose(u16, u32, rtol=0, atol=0.02)


def _config(tmp_path: Path, mode: str) -> dict:
    return {"mode": mode, "pretrained": False, "backbone": "tiny_cnn", "seed": 0, "hidden": 16,
            "dropout": 0.0, "feature_cache": str(tmp_path / "cache"), "batch_size_features": 5}


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_from_state_takes_placement_workers_and_compile(images, tmp_path, mode, monkeypatch):
    finetune = mode == "finetune"
    net = _net(finetune)
    blob = {"net": net.state_dict()}
    if not finetune:
        blob["backbone"] = create_backbone("tiny_cnn", seed=0).state_dict()
    plain = Encoder.from_state(blob, _config(tmp_path, mode), N_BITS, N_CLASSES)
    placed = Encoder.from_state(blob, _config(tmp_path, mode), N_BITS, N_CLASSES,
                                placement=CPU, num_workers=0)
    assert placed.placement == CPU and placed.num_workers == 0 and plain.placement == CPU
    np.testing.assert_array_equal(placed.encode(images), plain.encode(images))
    monkeypatch.setattr(inference_module, "_cxx", lambda: None)
    with pytest.raises(CompileUnavailableError, match="C\\+\\+ compiler"):
        Encoder.from_state(blob, _config(tmp_path, mode), N_BITS, N_CLASSES, compile=True)


@pytest.mark.slow
def test_bench_encode_smoke_prints_a_ratio():
    env = {**os.environ, "AHCL_PROGRESS": "0"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_encode.py"), "--smoke"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"ratio \(b\)/\(a\) = \d+\.\d\dx", done.stdout), done.stdout
    assert re.search(r"^cpu: .+ \| avx2=(yes|no) avx512f=(yes|no)", done.stdout, re.M)
    assert "features vs (a)" in done.stdout and "match" in done.stdout

"""``--device`` / ``--precision`` on the verbs: a device that is not there is one line, exit 1,
and nothing is written (no run folder, no index change)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

import ahcl
from ahcl import device as dev
from ahcl.cli import main


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)


@pytest.fixture(scope="module")
def small_run(tiny_run) -> Path:
    return tiny_run


def _one_line_error(capsys, text: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and text in err[0], err


@pytest.mark.parametrize("flags, text", [
    (["--device", "cuda"], "--device cuda: no CUDA device is visible; use --device cpu"),
    (["--device", "cuda:7"], "no CUDA device is visible"),
    (["--device", "gpu"], "--device gpu: not a device"),
    (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a GPU"),
])
def test_train_refuses_before_writing(no_gpu, synthetic_scenes, tmp_path, capsys, flags, text):
    out = tmp_path / "run"
    assert main(["train", "--data", str(synthetic_scenes), "--out", str(out),
                 "--backbone", "tiny_cnn", *flags]) == 1
    _one_line_error(capsys, text)
    assert not out.exists()


def test_index_add_refuses_without_touching_the_index(no_gpu, small_run, tmp_path, capsys):
    index = tmp_path / "a.index"
    assert main(["index", "build", str(small_run), "--out", str(index)]) == 0
    before = hashlib.sha256(index.read_bytes()).hexdigest()
    capsys.readouterr()
    image = ahcl.load_run(small_run, device="cpu").db_paths[0]
    assert main(["index", "add", str(index), image, "--run", str(small_run),
                 "--device", "cuda"]) == 1
    _one_line_error(capsys, "no CUDA device is visible")
    assert hashlib.sha256(index.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("verb", [["encode", "{run}", "{img}"], ["search", "{run}", "{img}"],
                                  ["evaluate", "{run}"], ["serve", "{run}"]])
def test_reading_verbs_refuse_a_missing_device(no_gpu, small_run, capsys, verb):
    image = ahcl.load_run(small_run, device="cpu").db_paths[0]
    argv = [a.format(run=small_run, img=image) for a in verb]
    assert main([*argv, "--device", "mps"]) == 1
    _one_line_error(capsys, "--device mps: Apple's MPS backend is not available here")


def test_cpu_device_and_precisions_encode(small_run, tmp_path, capsys):
    image = ahcl.load_run(small_run, device="cpu").db_paths[0]
    assert main(["encode", str(small_run), image, "--device", "cpu", "--precision", "fp32",
                 "--workers", "0"]) == 0
    fp32 = capsys.readouterr().out.split()[0]
    assert fp32 == ahcl.load_run(small_run).encode([image])[0].tobytes().hex()
    assert main(["encode", str(small_run), image, "--device", "cpu", "--precision",
                 "bf16"]) == 0
    bf16 = capsys.readouterr().out.split()[0]
    assert len(bf16) == len(fp32)


def test_a_run_opens_on_any_device(small_run):
    run = ahcl.load_run(small_run, device="cpu", precision="bf16")
    assert run.placement.precision == "bf16" and run.placement.device.type == "cpu"
    with pytest.raises(dev.DeviceError):
        ahcl.load_run(small_run, device="cuda:99")

"""Backbone registry: feature widths, heads removed correctly, seeded init, weights from the hub cache."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ahcl.errors import AhclError, UnknownNameError
from ahcl.models.backbones import (
    Backbone,
    UnknownBackboneError,
    WeightsUnavailableError,
    create_backbone,
    list_backbones,
    weights_available,
)

# Oracle: the input width of each model's ImageNet classifier layer (torchvision source / paper).
FEATURE_DIMS = {
    "tiny_cnn": 64,
    "alexnet": 4096, "vgg11": 4096, "vgg16": 4096, "vgg19": 4096,
    "resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048,
    "mobilenet_v2": 1280, "mobilenet_v3_large": 1280, "efficientnet_b0": 1280, "densenet121": 1024,
}
HEAVY = {"vgg11", "vgg16", "vgg19", "resnet101"}  # > 40M parameters: slow to initialise on CPU



def test_registry_lists_required_names_and_every_name_has_an_expected_width():
    names = list_backbones()
    for required in ("tiny_cnn", "mobilenet_v2", "resnet18", "resnet50", "vgg11", "vgg16",
                     "alexnet", "efficientnet_b0"):
        assert required in names
    assert set(names) == set(FEATURE_DIMS), "add new registrations to FEATURE_DIMS"


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in sorted(FEATURE_DIMS)])
def test_random_init_constructs_with_the_right_feature_dim(name):
    bb = create_backbone(name, pretrained=False).eval()
    assert isinstance(bb, Backbone) and bb.name == name
    assert bb.feature_dim == FEATURE_DIMS[name]
    assert bb.weights_id == "random-seed0"
    with torch.inference_mode():
        out = bb(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, FEATURE_DIMS[name]) and out.dtype == torch.float32


def _seeded_full_model(name: str, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return torchvision.models.get_model(name, weights=None)


@pytest.mark.parametrize("name,head", [("alexnet", "classifier.6"), ("resnet18", "fc")])
def test_features_are_the_input_of_the_removed_classifier_layer(name, head):
    # The same seed rebuilds the same full model: its logits must equal head(features).
    full = _seeded_full_model(name, seed=3).eval()
    bb = create_backbone(name, pretrained=False, seed=3).eval()
    x = torch.randn(2, 3, 80, 80, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits = full(x)
        rebuilt = full.get_submodule(head)(bb(x))
    torch.testing.assert_close(rebuilt, logits, rtol=1e-4, atol=1e-4)


def test_vgg_and_alexnet_keep_the_pretrained_fc_layers():
    bb = create_backbone("alexnet", pretrained=False)
    linears = [m for m in bb.body.classifier if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(9216, 4096), (4096, 4096)]
    assert isinstance(bb.body.classifier[-1], torch.nn.Identity)


def test_any_torchvision_classification_name_works():
    bb = create_backbone("squeezenet1_1", pretrained=False).eval()  # convolutional head
    assert bb.feature_dim == 512
    with torch.inference_mode():
        assert bb(torch.zeros(1, 3, 64, 64)).shape == (1, 512)


def test_random_init_is_seeded_and_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    a = create_backbone("resnet18", pretrained=False, seed=1)
    b = create_backbone("resnet18", pretrained=False, seed=1)
    c = create_backbone("resnet18", pretrained=False, seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.body.conv1.weight, c.body.conv1.weight)
    assert c.weights_id == "random-seed2"


def test_tiny_cnn_is_seeded_by_its_own_generator():
    state = torch.get_rng_state()
    a, b, c = (create_backbone("tiny_cnn", seed=s) for s in (5, 5, 6))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert a.weights_id == "random-seed5" and a.cache_key != c.cache_key


def test_transforms_resize_crop_and_normalise():
    gray = Image.new("RGB", (300, 200), (128, 128, 128))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (128 / 255 - mean) / std
    for name, size in (("tiny_cnn", 64), ("resnet18", 224)):
        bb = create_backbone(name, pretrained=False)
        x = bb.transform(gray)
        assert x.shape == (3, size, size) and x.dtype == torch.float32
        np.testing.assert_allclose(x.mean(dim=(1, 2)).numpy(), expected, rtol=1e-5)
    tiny, resnet = create_backbone("tiny_cnn"), create_backbone("resnet18", pretrained=False)
    assert "resize256" in resnet.transform_id and "crop224" in resnet.transform_id
    assert tiny.transform_id != resnet.transform_id


def test_forward_features_rejects_wrong_shapes():
    bb = create_backbone("tiny_cnn")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        bb.forward_features(torch.zeros(3, 64, 64))


def test_unknown_names_raise_user_errors():
    with pytest.raises(UnknownBackboneError, match="unknown backbone"):
        create_backbone("resnet_9000")
    with pytest.raises(UnknownBackboneError, match="IMAGENET1K_V1"):
        create_backbone("resnet18", weights="NOPE")
    assert not weights_available("resnet_9000")
    assert not weights_available("tiny_cnn")


def test_unknown_names_are_key_errors_with_fields_and_the_same_message():
    with pytest.raises(UnknownNameError) as info:
        create_backbone("resnet_9000")
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, UnknownBackboneError)
    assert (err.kind, err.name, err.choices) == ("backbone", "resnet_9000", list_backbones())
    assert str(err) == (f"unknown backbone 'resnet_9000'; choose one of {', '.join(list_backbones())}"
                        " or another torchvision classification model")
    with pytest.raises(UnknownBackboneError) as info:
        create_backbone("resnet18", weights="NOPE")
    err = info.value
    assert (err.kind, err.name, err.backbone) == ("weights", "NOPE", "resnet18")
    assert "IMAGENET1K_V1" in err.choices


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    """Torch's hub cache pointed at an empty folder, and downloads failing as they do offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert Path(torch.hub.get_dir()) == tmp_path / "hub"
    return tmp_path / "hub" / "checkpoints"


def test_missing_weights_offline_raise_one_actionable_line(empty_hub, capsys):
    assert not weights_available("resnet18")
    with pytest.raises(WeightsUnavailableError) as info:
        create_backbone("resnet18", pretrained=True)
    message = str(info.value)
    assert isinstance(info.value, AhclError) and "\n" not in message
    assert "resnet18-f37072fd.pth" in message and "pretrained=False" in message
    assert capsys.readouterr().out == ""  # torch.hub's "Downloading" notice is kept off stdout


def test_missing_weights_error_carries_fields(empty_hub):
    with pytest.raises(WeightsUnavailableError) as info:
        create_backbone("resnet18", pretrained=True)
    err = info.value
    assert (err.name, err.weights) == ("resnet18", "IMAGENET1K_V1")
    assert err.path == str(empty_hub / "resnet18-f37072fd.pth") and err.reason == "URLError"


def test_corrupt_cached_weights_raise(empty_hub):
    empty_hub.mkdir(parents=True)
    (empty_hub / "mobilenet_v2-b0353104.pth").write_bytes(b"not a checkpoint")
    assert weights_available("mobilenet_v2")
    with pytest.raises(WeightsUnavailableError, match="delete the file"):
        create_backbone("mobilenet_v2")


def test_pretrained_mobilenet_loads_the_cached_imagenet_weights(mobilenet_weights):
    assert weights_available("mobilenet_v2")
    bb = create_backbone("mobilenet_v2").eval()
    assert (bb.weights_id, bb.feature_dim) == ("IMAGENET1K_V1", 1280)
    state = torch.load(mobilenet_weights, weights_only=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        feats = bb(x)
        logits = feats @ state["classifier.1.weight"].T + state["classifier.1.bias"]
        full = torchvision.models.mobilenet_v2()
        full.load_state_dict(state)
        expected = full.eval()(x)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert feats.min() >= 0 and feats.max() <= 6  # ReLU6 then average pooling

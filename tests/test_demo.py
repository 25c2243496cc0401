"""The demo: offline fallbacks, table, report and plots."""

from __future__ import annotations

import json


from ahcl import demo
from ahcl.cli import main

TINY = ({"backbone": "tiny_cnn", "outer_iters": 2, "hidden": 16}, "tiny_cnn (test)")


def test_demo_falls_back_to_synthetic_scenes(tmp_path, monkeypatch, capsys):
    # Nothing listens on port 1: the UC Merced download fails at once, as offline.
    monkeypatch.setenv("AHCL_DATASET_URL_UCMERCED", "http://127.0.0.1:1/UCMerced_LandUse.zip")
    monkeypatch.setattr(demo, "choose_backbone", lambda say: TINY)
    monkeypatch.setattr(demo, "SYNTHETIC_PER_CLASS", 10)
    monkeypatch.setattr(demo, "SYNTHETIC_SIZE", 32)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--bits", "16,32", "--json"]) == 0
    captured = capsys.readouterr()
    assert "using synthetic scenes instead" in captured.err
    result = json.loads(captured.out)
    assert [r["n_bits"] for r in result["rows"]] == [16, 32]
    assert all(0 <= r["map"] <= 1 for r in result["rows"])
    assert result["data"].startswith("synthetic scenes")
    for name in ("report.md", "map_vs_bits.png", "pr_curve.png", "precision_at_k.png"):
        assert (out / name).stat().st_size > 0
    assert "| 32 |" in (out / "report.md").read_text()


def test_demo_on_a_folder_prints_table_and_next_steps(synthetic_scenes, tmp_path, monkeypatch,
                                                     capsys):
    monkeypatch.setattr(demo, "choose_backbone", lambda say: TINY)
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(synthetic_scenes), "--out", str(out), "--bits", "16"]) == 0
    text = capsys.readouterr().out
    assert "| bits | mAP |" in text and "ahcl search" in text and "ahcl serve" in text
    # A second call reuses the finished run.
    assert main(["demo", "--data", str(synthetic_scenes), "--out", str(out), "--bits", "16"]) == 0


def test_demo_named_dataset_that_cannot_be_had_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AHCL_DATASET_URL_WHU_RS19", "http://127.0.0.1:1/x.zip")
    assert main(["demo", "--dataset", "whu_rs19", "--out", str(tmp_path / "d")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_choose_backbone_without_weights_trains_from_scratch(monkeypatch):
    import ahcl.models.backbones as backbones
    from ahcl.errors import AhclError

    def unavailable(*args, **kwargs):
        raise AhclError("no weights: offline")

    monkeypatch.setattr(backbones, "weights_available", lambda *a, **k: False)
    monkeypatch.setattr(backbones, "create_backbone", unavailable)
    said = []
    overrides, note = demo.choose_backbone(said.append)
    assert overrides["backbone"] == "tiny_cnn" and overrides["pretrained"] is False
    assert "from scratch" in said[0] and "from scratch" in note

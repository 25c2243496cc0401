"""Training runs end to end: CLI, run folder, determinism, resume, bad runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ahcl
from ahcl.cli import main
from ahcl.errors import AhclError, RunError

FAST = ["--backbone", "tiny_cnn", "--bits", "16", "--set", "outer_iters=3",
        "--set", "hidden=32"]


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), *FAST, *extra])


@pytest.fixture(scope="module")
def run_dir(synthetic_scenes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert _train(synthetic_scenes, out) == 0
    return out


def test_run_folder_and_load_run(run_dir, synthetic_scenes):
    names = {p.name for p in run_dir.iterdir()}
    assert {"run.json", "config.json", "split.json", "model.pt", "db_codes.npy", "db.json",
            "code_state.npz", "metrics.jsonl", "timings.json"} <= names
    assert "checkpoint.pt" not in names
    run = ahcl.load_run(run_dir)
    assert run.n_bits == 16 and run.classes[0] == "farmland" and len(run.classes) == 6
    assert run.db_codes.dtype == np.uint8 and run.db_codes.shape == (len(run.db_labels), 2)
    assert all(Path(p).is_file() for p in run.db_paths)
    assert len(run.db_labels) == 6 * (12 - 2)  # 20% of 12 rounds to 2 queries per class
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [0, 1, 2]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["hidden"] == 32 and config["backbone"] == "tiny_cnn"


def test_evaluate_cli_json_and_learning(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_queries"] == 12 and report["n_db"] == 60
    # 6 balanced classes: a random ranking scores about 1/6.
    assert report["map"] > 0.4
    assert set(report) >= {"map", "map_tie_aware", "map_at", "precision_at", "recall_at"}


def test_encode_and_search(run_dir, tmp_path, capsys):
    run = ahcl.load_run(run_dir)
    img = run.db_paths[0]
    out = tmp_path / "codes.npy"
    assert main(["encode", str(run_dir), img, "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    codes = np.load(out)
    assert codes.shape == (1, 2) and printed["codes"][0]["code"] == codes[0].tobytes().hex()
    np.testing.assert_array_equal(codes, run.encode([img]))
    assert main(["search", str(run_dir), img, "-k", "5", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["queries"][0]["hits"]
    assert len(hits) == 5
    dists = [h["distance"] for h in hits]
    assert dists == sorted(dists)
    # Ranked by (semantic distance, instance distance), ties broken by database row.
    for a, b in zip(hits, hits[1:]):
        assert (a["distance"], a["instance_distance"], a["id"]) < \
            (b["distance"], b["instance_distance"], b["id"])
    hits_api = run.search([img], k=5)[0]
    assert [h.id for h in hits_api] == [h["id"] for h in hits]
    assert [h.to_dict() for h in hits_api] == hits


def test_same_seed_same_bytes(run_dir, synthetic_scenes, tmp_path):
    assert _train(synthetic_scenes, tmp_path / "again") == 0
    for name in ("db_codes.npy", "split.json", "code_state.npz"):
        assert (tmp_path / "again" / name).read_bytes() == (run_dir / name).read_bytes(), name
    a = torch.load(run_dir / "model.pt", weights_only=True)["net"]
    b = torch.load(tmp_path / "again" / "model.pt", weights_only=True)["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_crash_equals_uninterrupted(synthetic_scenes, tmp_path, monkeypatch):
    from ahcl.methods import ahcl as method_module

    reference = tmp_path / "ref"
    assert _train(synthetic_scenes, reference, "--set", "outer_iters=5", "--set",
                  "dropout=0.3") == 0
    calls = {"n": 0}
    original = method_module.AHCL._save_checkpoint

    def crash_after_two(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stands in for a kill after the 2nd checkpoint

    monkeypatch.setattr(method_module.AHCL, "_save_checkpoint", crash_after_two)
    crashed = tmp_path / "crashed"
    assert _train(synthetic_scenes, crashed, "--set", "outer_iters=5", "--set",
                  "dropout=0.3") == 130
    assert (crashed / "checkpoint.pt").exists() and not (crashed / "run.json").exists()
    with pytest.raises(RunError, match="resume"):
        ahcl.load_run(crashed)
    monkeypatch.setattr(method_module.AHCL, "_save_checkpoint", original)
    # Without --resume the half-done folder is refused, with it training continues.
    assert _train(synthetic_scenes, crashed, "--set", "outer_iters=5", "--set",
                  "dropout=0.3") == 1
    assert _train(synthetic_scenes, crashed, "--set", "outer_iters=5", "--set", "dropout=0.3",
                  "--resume") == 0
    for name in ("db_codes.npy", "code_state.npz"):
        assert (crashed / name).read_bytes() == (reference / name).read_bytes(), name
    rows = (crashed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["iteration"] for r in rows] == list(range(5))


@pytest.mark.slow
def test_resume_after_kill_9(synthetic_scenes, tmp_path):
    """A real SIGKILL in the middle of training; --resume ends with the uninterrupted result."""
    args = ["--set", "outer_iters=20", "--set", "epochs=2"]
    reference = tmp_path / "ref"
    assert _train(synthetic_scenes, reference, *args) == 0
    out = tmp_path / "killed"
    env = {**os.environ, "AHCL_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "ahcl", "train", "--data",
                             str(synthetic_scenes), "--out", str(out), *FAST, *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert not (out / "run.json").exists()
    assert _train(synthetic_scenes, out, *args, "--resume") == 0
    assert (out / "db_codes.npy").read_bytes() == (reference / "db_codes.npy").read_bytes()


def test_adsh_is_ahcl_without_semantic_term(synthetic_scenes, tmp_path):
    assert _train(synthetic_scenes, tmp_path / "adsh", "--method", "adsh") == 0
    config = json.loads((tmp_path / "adsh" / "config.json").read_text())
    assert config["method"] == "adsh" and config["gamma"] == 0.0
    assert _train(synthetic_scenes, tmp_path / "bad", "--method", "adsh", "--set",
                  "gamma=5") == 1


def test_config_yaml_and_set_override(synthetic_scenes, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lam: 50\nhidden: 16\nseed: 3\n")
    out = tmp_path / "r"
    assert _train(synthetic_scenes, out, "--config", str(cfg), "--set", "lam=7") == 0
    config = json.loads((out / "config.json").read_text())
    # Flags and --set override the YAML; the YAML overrides the defaults.
    assert config["lam"] == 7 and config["seed"] == 3 and config["hidden"] == 32


@pytest.mark.parametrize("bad, message", [
    (["--set", "nope=1"], "unknown config key"),
    (["--bits", "12"], "multiple of 8"),
    (["--set", "similarity=odd"], "similarity"),
    (["--query-fraction", "1.5"], "query_fraction"),
])
def test_bad_config_one_line_error(synthetic_scenes, tmp_path, capsys, bad, message):
    assert _train(synthetic_scenes, tmp_path / "x", *bad) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_missing_data_folder_is_one_line_error(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_query_fraction_zero_and_query_folder(synthetic_scenes, tmp_path, capsys):
    out = tmp_path / "all"
    assert _train(synthetic_scenes, out, "--query-fraction", "0") == 0
    run = ahcl.load_run(out)
    assert len(run.db_labels) == 72
    assert main(["evaluate", str(out)]) == 1
    assert "no held-out queries" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--queries", str(synthetic_scenes), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_queries"] == 72


def test_unknown_query_classes_are_reported(run_dir, tmp_path, capsys):
    from PIL import Image

    for shade, cls in enumerate(("water", "volcano")):
        (tmp_path / "q" / cls).mkdir(parents=True)
        Image.new("RGB", (32, 32), (10, 20, 30 + shade)).save(tmp_path / "q" / cls / "a.png")
    assert main(["evaluate", str(run_dir), "--queries", str(tmp_path / "q")]) == 1
    assert "volcano" in capsys.readouterr().err


def test_broken_runs_give_clear_errors(run_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    (bad / "model.pt").unlink()
    with pytest.raises(RunError, match="missing model.pt"):
        ahcl.load_run(bad)
    shutil.rmtree(bad)
    shutil.copytree(run_dir, bad)
    codes = np.load(bad / "db_codes.npy")
    np.save(bad / "db_codes.npy", codes ^ 1)
    with pytest.raises(RunError, match="checksum"):
        ahcl.load_run(bad)
    shutil.rmtree(bad)
    shutil.copytree(run_dir, bad)
    info = json.loads((bad / "run.json").read_text())
    (bad / "run.json").write_text(json.dumps({**info, "version": 99}))
    with pytest.raises(RunError, match="version 99"):
        ahcl.load_run(bad)
    with pytest.raises(RunError, match="not found"):
        ahcl.load_run(tmp_path / "nowhere")


def test_non_image_query_is_named(run_dir, tmp_path, capsys):
    junk = tmp_path / "notes.jpg"
    junk.write_text("not an image")
    assert main(["search", str(run_dir), str(junk)]) == 1
    assert "notes.jpg" in capsys.readouterr().err


def test_other_size_and_mode_queries_are_converted(run_dir, tmp_path):
    from PIL import Image

    run = ahcl.load_run(run_dir)
    img = Image.open(run.db_paths[0])
    img.convert("L").resize((50, 70)).save(tmp_path / "grey.png")
    img.convert("RGBA").resize((90, 40)).save(tmp_path / "rgba.png")
    codes = run.encode([tmp_path / "grey.png", tmp_path / "rgba.png"])
    assert codes.shape == (2, 2)


def test_codes_for_labelled_items_land_near_their_class(run_dir):
    run = ahcl.load_run(run_dir)
    from ahcl.index.hamming import hamming_distances

    labels = np.arange(len(run.classes))
    cut = run.semantic_bits // 8
    codes = run.codes_for_labelled(run.db_paths[:len(labels)], labels)[:, :cut]
    dist = hamming_distances(codes, np.ascontiguousarray(run.db_codes[:, :cut])).astype(float)
    same = np.array([dist[i, run.db_labels == i].mean() for i in labels])
    other = np.array([dist[i, run.db_labels != i].mean() for i in labels])
    assert (same < other).all()
    with pytest.raises(AhclError):
        run.codes_for_labelled(run.db_paths[:1], np.array([99]))


def test_finetune_mode_end_to_end(synthetic_scenes, tmp_path, capsys):
    out = tmp_path / "ft"
    assert _train(synthetic_scenes, out, "--mode", "finetune", "--set", "outer_iters=2",
                  "--set", "epochs=1") == 0
    run = ahcl.load_run(out)
    saved = torch.load(out / "model.pt", weights_only=True)["net"]
    from ahcl.models.backbones import create_backbone

    fresh = create_backbone("tiny_cnn", seed=0).state_dict()
    trained = {k[len("backbone."):]: v for k, v in saved.items() if k.startswith("backbone.")}
    assert trained.keys() == fresh.keys()
    assert any(not torch.equal(trained[k], fresh[k]) for k in fresh)  # the backbone was trained
    np.testing.assert_array_equal(run.encode(run.db_paths[:3]).shape, (3, 2))
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["map"] <= 1


@pytest.mark.parametrize("method", ["dpsh", "csq"])
def test_symmetric_baselines_write_runs_too(synthetic_scenes, tmp_path, capsys, method):
    out = tmp_path / method
    assert main(["train", "--data", str(synthetic_scenes), "--out", str(out), "--method", method,
                 "--backbone", "tiny_cnn", "--bits", "16", "--set", "epochs=3",
                 "--set", "hidden=32"]) == 0
    run = ahcl.load_run(out)
    assert run.method == method and not (out / "code_state.npz").exists()
    # A symmetric method's database codes are the network's codes of the database images.
    np.testing.assert_array_equal(run.encode(run.db_paths), run.db_codes)
    with pytest.raises(RunError, match="no database-code step"):
        run.codes_for_labelled(run.db_paths[:1], np.array([0]))
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["map"] > 0.3


def test_untrainable_methods_point_to_the_benchmark(synthetic_scenes, tmp_path, capsys):
    assert _train(synthetic_scenes, tmp_path / "x", "--set", "method=lsh") == 1
    assert "ahcl benchmark" in capsys.readouterr().err
    # Keys of another method are refused by name.
    assert main(["train", "--data", str(synthetic_scenes), "--out", str(tmp_path / "y"),
                 "--method", "dpsh", "--set", "lam=3"]) == 1
    assert "unknown config key 'lam' for method dpsh" in capsys.readouterr().err


def test_labelled_additions_depend_on_the_label_only(run_dir):
    """The semantic code of a labelled addition depends on its label only; its instance code
    is the image's own (the same as an unlabelled addition's)."""
    run = ahcl.load_run(run_dir)
    cut = run.semantic_bits // 8
    paths = run.db_paths[:4]
    one = run.codes_for_labelled(paths[:1], np.array([2]))
    many = run.codes_for_labelled(paths, np.array([0, 2, 2, 1]))
    np.testing.assert_array_equal(many[1, :cut], one[0, :cut])
    np.testing.assert_array_equal(many[2, :cut], one[0, :cut])
    np.testing.assert_array_equal(many[:, cut:], run.encode(paths)[:, cut:])


def test_bad_data_or_backbone_leaves_no_run_folder(synthetic_scenes, tmp_path):
    out = tmp_path / "r"
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(out)]) == 1
    assert main(["train", "--data", str(synthetic_scenes), "--out", str(out),
                 "--backbone", "no_such_net"]) == 1
    assert not out.exists()
    assert _train(synthetic_scenes, out) == 0  # the retry needs no --resume


def test_finetune_augmented_resume_with_other_workers(synthetic_scenes, tmp_path, monkeypatch):
    """Augmented finetuning is seeded per item: a run crashed with 2 decoding workers and resumed
    with none ends byte-identical to an uninterrupted run (workers are a runtime setting)."""
    from ahcl.methods import ahcl as method_module

    args = ["--mode", "finetune", "--set", "outer_iters=3", "--set", "epochs=1",
            "--augment", "scene"]
    reference = tmp_path / "ref"
    assert _train(synthetic_scenes, reference, *args, "--workers", "0") == 0
    original = method_module.AHCL._save_checkpoint

    def crash_after_one(self, *a, **k):
        original(self, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(method_module.AHCL, "_save_checkpoint", crash_after_one)
    crashed = tmp_path / "crashed"
    assert _train(synthetic_scenes, crashed, *args, "--workers", "2") == 130
    monkeypatch.setattr(method_module.AHCL, "_save_checkpoint", original)
    assert _train(synthetic_scenes, crashed, *args, "--workers", "0", "--resume") == 0
    assert (crashed / "db_codes.npy").read_bytes() == (reference / "db_codes.npy").read_bytes()
    config = json.loads((crashed / "config.json").read_text())
    assert config["augment"] == "scene" and config["mode"] == "finetune"

"""The benchmark end to end on tiny synthetic scenes with ``tiny_cnn``: report, resume, errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ahcl.bench.markdown import verdict
from ahcl.bench.summary import summarise
from ahcl.bench.runner import BenchmarkConfig, cell_path, run_benchmark
from ahcl.cli import main
from ahcl.cli.benchmark import parse_budgets
from ahcl.errors import AhclError, InvalidValueError
from ahcl.methods.registry import METHODS


FAST = [
    "--set", "ahcl.outer_iters=2", "--set", "adsh.outer_iters=2",
    "--set", "ahcl.lr_milestones=[]", "--set", "adsh.lr_milestones=[]",
    "--set", "sdh.n_anchors=20",
    *[x for m in ("dpsh", "hashnet", "dsh", "csq", "classifier") for x in ("--set", f"{m}.epochs=2")],
]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    from ahcl.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "scenes", per_class=20,
                                   size=32, seed=0,
                                   classes=["water", "forest", "farmland", "desert"])


@pytest.fixture(scope="module", autouse=True)
def feature_cache(tmp_path_factory):
    """Keep tiny_cnn features out of the user's cache for every test of this module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AHCL_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def bench(scenes: Path, tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("bench") / "out"
    argv = ["benchmark", "--data", str(scenes), "--bits", "16,32", "--seeds", "0,1",
            "--backbone", "tiny_cnn", "--query-fraction", "0.25", *FAST, "--out", str(out)]
    assert main(argv) == 0
    return out, argv


def test_writes_every_cell_and_the_report(bench) -> None:
    out, _ = bench
    results = json.loads((out / "results.json").read_text())
    assert len(results["cells"]) == len(METHODS) * 2 * 2
    for name in METHODS:
        for b in (16, 32):
            for s in (0, 1):
                assert cell_path(out, name, b, s).exists()
        assert set(results["summary"][name]) == {"16", "32"}
        assert len(results["tuning"][name]["trials"]) >= 1
    assert results["data"]["n_db"] == 60 and results["data"]["n_query"] == 20
    assert results["data"]["n_train"] + results["data"]["n_val"] == 60
    assert results["versions"]["torch"] and results["machine"]["cpu_count"]
    assert results["command"].startswith("ahcl benchmark --data ")
    for key in ("map_vs_bits", "pr_curve", "precision_at_k"):
        assert (out / results["plots"][key]).stat().st_size > 1000
    md = (out / "results.md").read_text()
    for title in ("## mAP@all", "## mAP@100", "## P@10", "Hamming radius 2", "## Efficiency",
                  "## Model selection", "Does the paper's claim hold"):
        assert title in md
    # Asymmetric methods need no pass over the database; the others pay the backbone per image.
    cells = {(c["method"], c["n_bits"], c["seed"]): c for c in results["cells"]}
    assert cells[("ahcl", 32, 0)]["timings"]["db_codes_s"] == 0
    n_db = results["data"]["n_db"]
    dpsh = cells[("dpsh", 32, 0)]["timings"]
    assert dpsh["db_codes_s"] >= results["backbone_s_per_image"] * n_db


def test_near_duplicate_figures_per_cell_and_in_the_report(bench) -> None:
    out, _ = bench
    results = json.loads((out / "results.json").read_text())
    n_db = results["data"]["n_db"]  # 60 < the default 200: every database image is drawn once
    assert results["data"]["near_duplicates"] == {"n": n_db, "seed": 0,
                                                  "folder": "near_duplicates"}
    copies = sorted((out / "near_duplicates").iterdir())
    assert [p.name for p in copies] == sorted(f"{i}.png" for i in range(n_db))
    for cell in results["cells"]:
        near = cell["near_duplicates"]
        assert near["n"] == n_db
        assert set(near["recall_at"]) == {"1", "10", str(n_db)}  # 100 clipped to the database
        assert all(0 <= v <= 1 for v in near["recall_at"].values())
        assert near["recall_at"][str(n_db)] == 1.0 and 1 <= near["mean_rank"] <= n_db
        assert json.loads(cell_path(out, cell["method"], cell["n_bits"], cell["seed"])
                          .read_text())["near_duplicates"] == near
    for name in METHODS:
        for b in ("16", "32"):
            e = results["summary"][name][b]["near_duplicates"]
            group = [c["near_duplicates"] for c in results["cells"]
                     if c["method"] == name and str(c["n_bits"]) == b]
            r10 = [g["recall_at"]["10"] for g in group]
            assert e["recall_at"]["10"]["mean"] == pytest.approx(sum(r10) / 2)
            assert 0 <= e["recall_at"]["1"]["mean"] <= e["recall_at"]["10"]["mean"] <= 1
            assert e["mean_rank"]["mean"] == pytest.approx(
                sum(g["mean_rank"] for g in group) / 2)
    md = (out / "results.md").read_text()
    section = md[md.index("## Near-duplicate recall@10"):md.index("## Efficiency")]
    assert "The same protocol for every method" in section
    assert all(f"| {name} | " in section for name in METHODS)


def test_tuning_chooses_the_best_validation_setting(bench) -> None:
    out, _ = bench
    for name in METHODS:
        t = json.loads((out / "tuning" / f"{name}.json").read_text())
        best = max(t["trials"], key=lambda tr: tr["val_map"])
        assert t["chosen"] == best["setting"]
        cell = json.loads(cell_path(out, name, 16, 0).read_text())
        for key, value in t["chosen"].items():  # the chosen setting is what the cells used
            assert cell["config"][key] == value


def _same_config(argv: list[str]) -> BenchmarkConfig:
    """The library form of the ``bench`` fixture's command line."""
    return BenchmarkConfig(data=argv[2], bits=[16, 32], seeds=[0, 1], backbone="tiny_cnn",
                           query_fraction=0.25, budgets=parse_budgets(
                               [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]))


def _fresh_cells(config: BenchmarkConfig, out: Path) -> list[tuple[str, int, int]]:
    """Run ``config`` in ``out``; the cells it computed (not reused)."""
    seen: list[tuple[str, int, int]] = []
    run_benchmark(config, out, on_cell=lambda c, reused: None if reused else seen.append(
        (c["method"], c["n_bits"], c["seed"])))
    return seen


def test_resume_skips_finished_cells_and_recomputes_missing_ones(bench, monkeypatch) -> None:
    out, argv = bench
    old = json.loads(cell_path(out, "csq", 32, 1).read_text())
    cell_path(out, "csq", 32, 1).unlink()
    copies = {p: p.stat().st_mtime_ns for p in (out / "near_duplicates").iterdir()}

    def no_new_copies(*args, **kwargs):
        raise AssertionError("a resumed benchmark must reuse its altered copies")

    monkeypatch.setattr("ahcl.bench.runner.altered_copy", no_new_copies)
    assert _fresh_cells(_same_config(argv), out) == [("csq", 32, 1)]
    new = json.loads(cell_path(out, "csq", 32, 1).read_text())
    assert new["metrics"] == old["metrics"] and new["config"] == old["config"]  # seeded
    assert new["near_duplicates"] == old["near_duplicates"]
    assert {p: p.stat().st_mtime_ns for p in (out / "near_duplicates").iterdir()} == copies


def test_version_1_benchmark_is_upgraded_and_cells_without_near_duplicates_rerun(bench) -> None:
    out, argv = bench
    meta = out / "benchmark.json"
    saved = json.loads(meta.read_text())
    assert saved["version"] == 2 and saved["identity"]["near_duplicates"] == 200
    v1 = {**saved, "version": 1,
          "identity": {k: v for k, v in saved["identity"].items() if k != "near_duplicates"}}
    meta.write_text(json.dumps(v1))
    old = json.loads(cell_path(out, "lsh", 16, 0).read_text())
    cell_path(out, "lsh", 16, 0).write_text(json.dumps(
        {k: v for k, v in old.items() if k != "near_duplicates"}))  # a version-1 cell
    assert _fresh_cells(_same_config(argv), out) == [("lsh", 16, 0)]
    assert json.loads(meta.read_text()) == saved
    new = json.loads(cell_path(out, "lsh", 16, 0).read_text())
    assert new["near_duplicates"] == old["near_duplicates"] and new["metrics"] == old["metrics"]


def test_rerun_with_other_settings_is_refused(bench) -> None:
    out, argv = bench
    other = BenchmarkConfig(data=argv[2], methods=["lsh"], bits=[16], backbone="tiny_cnn",
                            query_fraction=0.5)
    with pytest.raises(AhclError, match="other settings"):
        run_benchmark(other, out)
    budget = BenchmarkConfig(data=argv[2], methods=["dpsh"], bits=[16], backbone="tiny_cnn",
                             query_fraction=0.25, tune_bits=32, budgets={"dpsh": {"epochs": 7}})
    with pytest.raises(AhclError, match="budget"):
        run_benchmark(budget, out)
    fewer = dataclasses.replace(_same_config(argv), near_duplicates=10)
    with pytest.raises(AhclError, match="other settings"):  # copies of other cells not mixed
        run_benchmark(fewer, out)


def test_near_duplicates_zero_disables_the_protocol(scenes, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["benchmark", "--data", str(scenes), "--methods", "lsh", "--bits", "16",
                 "--backbone", "tiny_cnn", "--near-duplicates", "0", "--out", str(out)]) == 0
    assert "near-duplicate" not in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert "--near-duplicates 0" in results["command"]
    assert results["data"]["near_duplicates"]["n"] == 0
    assert "near_duplicates" not in results["cells"][0]
    assert "near_duplicates" not in results["summary"]["lsh"]["16"]
    assert not (out / "near_duplicates").exists()
    assert "Near-duplicate" not in (out / "results.md").read_text()
    assert json.loads((out / "benchmark.json").read_text())["identity"]["near_duplicates"] == 0


def test_finetune_mode_feeds_the_altered_copies_as_images(scenes, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["benchmark", "--data", str(scenes), "--methods", "dpsh", "--bits", "16",
                 "--backbone", "tiny_cnn", "--mode", "finetune", "--near-duplicates", "7",
                 "--set", "dpsh.epochs=1", "--workers", "0", "--out", str(out)]) == 0
    assert "near-duplicate recall@10" in capsys.readouterr().out
    cell = json.loads(cell_path(out, "dpsh", 16, 0).read_text())
    assert cell["near_duplicates"]["n"] == 7 and len(list((out / "near_duplicates").iterdir())) == 7
    assert all(0 <= v <= 1 for v in cell["near_duplicates"]["recall_at"].values())


@pytest.mark.parametrize("value", [-1, 2.5, "3", True])
def test_bad_near_duplicates_is_refused(scenes, value) -> None:
    config = BenchmarkConfig(data=str(scenes), backbone="tiny_cnn", near_duplicates=value)
    with pytest.raises(InvalidValueError, match=r"near_duplicates must be an integer >= 0 "
                       r"\(0 disables the near-duplicate protocol\), got"):
        config.validate()


def test_cli_refuses_a_negative_near_duplicates(scenes, tmp_path, capsys) -> None:
    assert main(["benchmark", "--data", str(scenes), "--near-duplicates", "-1", "--out",
                 str(tmp_path / "o")]) == 1
    assert "near_duplicates must be an integer >= 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_user_errors(scenes, tmp_path, capsys) -> None:
    assert main(["benchmark", "--data", str(scenes), "--methods", "nope", "--out",
                 str(tmp_path / "o")]) == 1
    assert "unknown method" in capsys.readouterr().err
    assert main(["benchmark", "--data", str(scenes), "--bits", "12", "--out",
                 str(tmp_path / "o")]) == 1
    assert main(["benchmark", "--out", str(tmp_path / "o")]) == 2  # --data or --dataset


def test_parse_budgets() -> None:
    assert parse_budgets(["ahcl.outer_iters=3", "ahcl.lr_milestones=[1, 2]", "dsh.alpha=0.5"]) == {
        "ahcl": {"outer_iters": 3, "lr_milestones": [1, 2]}, "dsh": {"alpha": 0.5}}
    with pytest.raises(AhclError, match="METHOD.KEY"):
        parse_budgets(["epochs=3"])


def _cell(method: str, bits: int, seed: int, value: float, near: bool = False) -> dict:
    metrics = {"map": value, "map_tie_aware": value, "map_at": {"100": value},
               "precision_at": {"10": value}, "precision_at_radius": value}
    timings = {k: 1.0 for k in ("train_s", "db_codes_s", "db_codes_head_s",
                                "query_s_per_image", "query_head_s_per_image")}
    cell = {"method": method, "kind": "x", "n_bits": bits, "seed": seed, "metrics": metrics,
            "timings": timings, "memory": {"peak_rss_mib": 10.0, "extra_rss_mib": None}}
    if near:
        cell["near_duplicates"] = {"n": 5, "recall_at": {"1": value / 2, "10": value,
                                                         "100": 1.0},
                                   "mean_rank": 10 * value, "median_rank": 1.0}
    return cell


def test_summary_of_near_duplicates() -> None:
    cells = [_cell("a", 16, s, v, near=True) for s, v in enumerate((0.5, 0.7, 0.9))]
    e = summarise(cells, ["a"], [16])["a"]["16"]["near_duplicates"]
    assert e["n"] == 5 and set(e["recall_at"]) == {"1", "10", "100"}
    assert e["recall_at"]["10"]["mean"] == pytest.approx(0.7)
    assert e["recall_at"]["10"]["std"] == pytest.approx(0.2)
    assert e["recall_at"]["1"]["mean"] == pytest.approx(0.35)
    assert e["recall_at"]["100"] == {"mean": 1.0, "std": 0.0}
    assert e["mean_rank"]["mean"] == pytest.approx(7.0)
    assert "near_duplicates" not in summarise([_cell("a", 16, 0, 0.5)], ["a"], [16])["a"]["16"]


def test_summary_mean_and_sample_std() -> None:
    cells = [_cell("a", 16, 0, 0.5), _cell("a", 16, 1, 0.7), _cell("a", 16, 2, 0.9)]
    e = summarise(cells, ["a"], [16])["a"]["16"]
    assert e["map"]["mean"] == pytest.approx(0.7)
    assert e["map"]["std"] == pytest.approx(0.2)  # sqrt(((-.2)² + 0 + .2²) / (3 - 1))
    assert e["seeds"] == [0, 1, 2] and e["peak_rss_mib"] == 10.0 and e["extra_rss_mib"] is None
    one = summarise([_cell("a", 16, 0, 0.5)], ["a"], [16])["a"]["16"]
    assert one["map"]["std"] == 0.0


@pytest.mark.parametrize("ahcl_map, word", [(0.9, "the claim holds here."),
                                             (0.5, "the claim does not hold here.")])
def test_verdict_follows_the_numbers(ahcl_map: float, word: str) -> None:
    cells = [_cell("ahcl", b, 0, ahcl_map) for b in (16, 32)] + \
        [_cell("csq", b, 0, 0.7) for b in (16, 32)]
    summary = summarise(cells, ["ahcl", "csq"], [16, 32])
    results = {"summary": summary, "config": {"bits": [16, 32], "mode": "frozen"},
               "plot_bits": 32, "data": {"n_db": 10}, "backbone_s_per_image": 0.01}
    text = "\n".join(verdict(results))
    assert word in text
    assert f"difference {ahcl_map - 0.7:+.4f}" in text

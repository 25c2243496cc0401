"""The benchmark end to end on tiny synthetic scenes with ``tiny_cnn``: report, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ahcl.bench.markdown import verdict
from ahcl.bench.summary import summarise
from ahcl.bench.runner import BenchmarkConfig, cell_path, run_benchmark
from ahcl.cli import main
from ahcl.cli.benchmark import parse_budgets
from ahcl.errors import AhclError
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


def test_tuning_chooses_the_best_validation_setting(bench) -> None:
    out, _ = bench
    for name in METHODS:
        t = json.loads((out / "tuning" / f"{name}.json").read_text())
        best = max(t["trials"], key=lambda tr: tr["val_map"])
        assert t["chosen"] == best["setting"]
        cell = json.loads(cell_path(out, name, 16, 0).read_text())
        for key, value in t["chosen"].items():  # the chosen setting is what the cells used
            assert cell["config"][key] == value


def test_resume_skips_finished_cells_and_recomputes_missing_ones(bench) -> None:
    out, argv = bench
    old = json.loads(cell_path(out, "csq", 32, 1).read_text())
    cell_path(out, "csq", 32, 1).unlink()
    seen: list[tuple[str, int, int, bool]] = []
    from ahcl.cli.benchmark import parse_budgets as budgets

    config = BenchmarkConfig(data=argv[2], bits=[16, 32], seeds=[0, 1], backbone="tiny_cnn",
                             query_fraction=0.25, budgets=budgets(
                                 [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]))
    run_benchmark(config, out, on_cell=lambda c, reused: seen.append(
        (c["method"], c["n_bits"], c["seed"], reused)))
    fresh = [s for s in seen if not s[3]]
    assert fresh == [("csq", 32, 1, False)]
    new = json.loads(cell_path(out, "csq", 32, 1).read_text())
    assert new["metrics"] == old["metrics"] and new["config"] == old["config"]  # seeded


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


def _cell(method: str, bits: int, seed: int, value: float) -> dict:
    metrics = {"map": value, "map_tie_aware": value, "map_at": {"100": value},
               "precision_at": {"10": value}, "precision_at_radius": value}
    timings = {k: 1.0 for k in ("train_s", "db_codes_s", "db_codes_head_s",
                                "query_s_per_image", "query_head_s_per_image")}
    return {"method": method, "kind": "x", "n_bits": bits, "seed": seed, "metrics": metrics,
            "timings": timings, "memory": {"peak_rss_mib": 10.0, "extra_rss_mib": None}}


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

"""``results.md``: paper-style tables and a plain verdict on the paper's claims, from the numbers."""

from __future__ import annotations

import json
from typing import Any, Callable

from ahcl.bench.summary import ACCURACY, clipped_k
from ahcl.data.alter import BRIGHTNESS, CROP_FRACTION, JPEG_QUALITY
from ahcl.methods.registry import DEFAULT_METHOD, MAX_TRIALS, SPECS, methods_of_kind


def _table(results: dict[str, Any], read: Callable[[dict[str, Any]], dict[str, float] | None]
           ) -> list[str]:
    """Method × bits of ``read(summary entry)`` (``{"mean", "std"}``, or None: no figure), the
    highest mean of each column in bold."""
    summary, bits = results["summary"], [str(b) for b in results["config"]["bits"]]
    figures = {m: {b: read(by_bits[b]) if b in by_bits else None for b in bits}
               for m, by_bits in summary.items()}
    best = {b: max((f[b]["mean"] for f in figures.values() if f[b] is not None), default=None)
            for b in bits}
    lines = ["| method | " + " | ".join(f"{b} bits" for b in bits) + " |",
             "|---|" + "---|" * len(bits)]
    for m, by_bits in figures.items():
        row = []
        for b in bits:
            e = by_bits[b]
            if e is None:
                row.append("–")
                continue
            text = f"{e['mean']:.4f} ± {e['std']:.4f}"
            row.append(f"**{text}**" if e["mean"] == best[b] else text)
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return lines


def _near_duplicates(results: dict[str, Any]) -> list[str]:
    """The near-duplicate recall@10 table (none when the protocol was off)."""
    entries = [e["near_duplicates"] for by_bits in results["summary"].values()
               for e in by_bits.values() if "near_duplicates" in e]
    if not entries:
        return []
    k = clipped_k(10, results["data"]["n_db"])
    return [f"## Near-duplicate recall@{k}", "",
            "The same protocol for every method (that of `ahcl evaluate --near-duplicates`): "
            f"{entries[0]['n']} database images, drawn with the split seed, are each altered once "
            f"(crop to {CROP_FRACTION[0]:.0%}–{CROP_FRACTION[1]:.0%} of each side, rotation by "
            f"0, 90, 180 or 270°, brightness ×{BRIGHTNESS[0]}–{BRIGHTNESS[1]}, JPEG quality "
            f"{JPEG_QUALITY[0]}–{JPEG_QUALITY[1]}), encoded as queries and ranked against the "
            f"database codes like the queries above; recall@{k} is the share of copies whose "
            f"source image ranks in the first {k} (recall@1, @10 and @100, each cut-off clipped "
            "to the database size, and the mean rank are in results.json).", "",
            *_table(results, lambda e: e.get("near_duplicates", {}).get("recall_at", {}).get(k)),
            ""]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _efficiency(results: dict[str, Any]) -> list[str]:
    summary, bits = results["summary"], str(results["plot_bits"])
    lines = ["| method | training (s) | database codes (s) | of which head (s) | "
             "query encoding per image | of which head | peak RSS (MiB) | peak − start (MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for m, by_bits in summary.items():
        e = by_bits.get(bits)
        if e is None:
            continue
        db = "none (learned in training)" if e["db_codes_s"] == 0 and _kind(results, m) == \
            "asymmetric" else f"{e['db_codes_s']:.2f}"
        peak = "n/a" if e["peak_rss_mib"] is None else f"{e['peak_rss_mib']:.0f}"
        extra = "n/a" if e["extra_rss_mib"] is None else f"{e['extra_rss_mib']:.0f}"
        lines.append(f"| {m} | {e['train_s']:.2f} | {db} | {e['db_codes_head_s']:.4f} | "
                     f"{_ms(e['query_s_per_image'])} | {_ms(e['query_head_s_per_image'])} | "
                     f"{peak} | {extra} |")
    return lines


def _kind(results: dict[str, Any], method: str) -> str:
    return next(c["kind"] for c in results["cells"] if c["method"] == method)


def _tuning(results: dict[str, Any]) -> list[str]:
    lines = ["| method | fixed budget | trials: setting → validation mAP | chosen |",
             "|---|---|---|---|"]
    for m, t in results["tuning"].items():
        trials = "; ".join(f"{_kv(tr['setting']) or 'defaults'} → {tr['val_map']:.4f}"
                           for tr in t["trials"])
        lines.append(f"| {m} | {_kv(results['budgets'].get(m, {})) or '–'} | {trials} | "
                     f"{_kv(t['chosen']) or 'defaults'} |")
    return lines


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in d.items())


def verdict(results: dict[str, Any]) -> list[str]:
    """Sentences that state, from the numbers, whether AHCL beats the symmetric methods."""
    summary = results["summary"]
    main = DEFAULT_METHOD
    sym = [m for m in methods_of_kind("symmetric") if m in summary]
    if main not in summary or not sym:
        return [f"The verdict needs `{main}` and at least one symmetric deep method in --methods."]
    lines, wins, noisy, margins = [], 0, 0, []
    bits = [str(b) for b in results["config"]["bits"] if str(b) in summary[main]]
    for b in bits:
        a = summary[main][b]["map"]
        best = max(sym, key=lambda m: summary[m][b]["map"]["mean"])
        s = summary[best][b]["map"]
        diff = a["mean"] - s["mean"]
        wins += diff > 0
        # A difference smaller than the seeds' combined spread is not evidence either way.
        within = abs(diff) <= (a["std"] ** 2 + s["std"] ** 2) ** 0.5
        noisy += within
        margins.append(f"{b} bits: AHCL {a['mean']:.4f} vs best symmetric ({best}) "
                       f"{s['mean']:.4f}, difference {diff:+.4f} "
                       f"({diff / s['mean']:+.1%} relative)"
                       + (", within the seed spread" if within else ""))
    holds = ("holds here" if wins == len(bits) else
             ("does not hold here" if wins == 0 else "holds here only partly"))
    rel = [abs(summary[main][b]["map"]["mean"] / max(summary[m][b]["map"]["mean"]
                                                       for m in sym if b in summary[m]) - 1)
           for b in bits]
    if holds == "holds here" and max(rel) < 0.01:
        holds = "holds here, narrowly"
    size = ""
    if wins and noisy:
        size = (f" Margins within the spread over seeds (combined sample std): {noisy} of "
                f"{len(bits)}.")
    lines.append(f"- **Accuracy (mAP@all): the claim {holds}.** AHCL is above the best "
                 f"symmetric deep method at {wins} of {len(bits)} code lengths: " +
                 "; ".join(margins) + "." + size)
    tie = [summary[main][b]["map_tie_aware"]["mean"]
           - max(summary[m][b]["map_tie_aware"]["mean"] for m in sym if b in summary[m])
           for b in bits]
    lines.append("- With the tie-aware mAP (no credit from the order of tied items), AHCL − best "
                 "symmetric: " + ", ".join(f"{d:+.4f} ({b} bits)" for d, b in zip(tie, bits))
                 + ".")
    # Ablations of the main method (ADSH: AHCL without the semantic term), then the classifier.
    ablations = {name: spec.ablates[1] for name, spec in SPECS.items()
                 if spec.ablates and spec.ablates[0] == main}
    for other in [*ablations, *methods_of_kind("classifier")]:
        if other in summary:
            diffs = [summary[main][b]["map"]["mean"] - summary[other][b]["map"]["mean"]
                     for b in bits if b in summary[other]]
            lines.append(f"- AHCL − {other} mAP@all: " + ", ".join(
                f"{d:+.4f} ({b} bits)" for d, b in zip(diffs, bits)) + "."
                + (f" {other.upper()} is AHCL without {ablations[other]}, so a negative "
                   "difference means that term did not help here." if other in ablations else ""))
    best_all = []
    for b in bits:
        top = max((m for m in summary if b in summary[m]),
                  key=lambda m: summary[m][b]["map"]["mean"])
        best_all.append(f"{top} ({b} bits, {summary[top][b]['map']['mean']:.4f})")
    lines.append("- Best method overall by mean mAP@all: " + ", ".join(best_all) + ".")
    pb = str(results["plot_bits"])
    if pb in summary[main]:
        a = summary[main][pb]
        s_train = {m: summary[m][pb]["train_s"] for m in sym if pb in summary[m]}
        s_db = {m: summary[m][pb]["db_codes_s"] for m in sym if pb in summary[m]}
        mean_train = sum(s_train.values()) / len(s_train)
        mean_db = sum(s_db.values()) / len(s_db)
        n_db = results["data"]["n_db"]
        ratio = a["train_s"] / mean_train
        faster = "faster" if ratio < 1 else "slower"
        lines.append(
            f"- **Efficiency ({pb} bits): the claim holds for producing database codes, "
            f"{'and' if ratio < 1 else 'not'} for training time.** Training: AHCL "
            f"{a['train_s']:.1f} s vs {mean_train:.1f} s on average for the symmetric methods, "
            f"{max(ratio, 1 / ratio):.2f}× {faster} at equal passes over the data (see budgets). "
            f"Database codes: AHCL needs no pass over the database after training; the symmetric "
            f"methods need {mean_db:.1f} s for the {n_db} database images, almost all of it the "
            f"backbone ({results['backbone_s_per_image'] * 1e3:.1f} ms per image, measured on a "
            f"sample and extrapolated). Query encoding costs the same for every deep method "
            f"(same network).")
        if results["config"]["mode"] == "frozen":
            lines.append(
                "- Caveat (frozen mode): every method, AHCL included, needs the backbone features "
                "of the training images to train, so when the database is the training set the "
                "symmetric methods' extra cost is only the head pass over cached features "
                "(column 'of which head'); AHCL's saving is real for database images that are not "
                "in the cache and for finetune mode, where the backbone changes during training.")
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    """The whole ``results.md``."""
    cfg, data = results["config"], results["data"]
    seeds = ", ".join(map(str, cfg["seeds"]))
    out = [
        "# Benchmark: asymmetric vs symmetric hashing", "",
        f"Command: `{results['command'] or '(library call)'}`", "",
        f"Data: {data['root']} — {data['n_images']} images, {len(data['classes'])} classes; "
        f"{data['n_db']} database (= training) images, {data['n_query']} queries "
        f"(query fraction {cfg['query_fraction']}, split seed {cfg['split_seed']}). "
        f"Backbone {cfg['backbone']} (weights {data['backbone_weights']}), "
        f"mode {cfg['mode']}. Seeds {seeds}; tables give mean ± sample std over seeds. "
        "Relevant = same class; ties in Hamming distance ranked by database index "
        "(the tie-aware mAP is in the last table).", "",
        "## Does the paper's claim hold here?", "", *verdict(results), "",
    ]
    for key, title, _ in ACCURACY:
        out += [f"## {title}", "", *_table(results, lambda e, key=key: e[key]), ""]
    out += _near_duplicates(results)
    out += [f"## Efficiency ({results['plot_bits']} bits, mean over seeds)", "",
            f"Backbone time per image (decode + transform + forward, CPU, "
            f"{results['machine']['torch_threads']} torch threads): "
            f"{results['backbone_s_per_image'] * 1e3:.1f} ms, measured on a sample and "
            "multiplied by the number of images. Training time excludes feature extraction "
            f"(done once for all methods: {results['features_s']:.1f} s in this run, from the "
            "cache when warm). Database codes: AHCL/ADSH learn them in training (none extra); "
            "other methods need a forward pass per database image (backbone + head). Peak RSS "
            "is the whole process's peak during one fit + query encoding.", "",
            *_efficiency(results), ""]
    out += ["## Model selection (the same for every method)", "",
            f"Validation: {cfg['val_fraction']} of each database class "
            f"({data['n_val']} images) as queries against the other {data['n_train']}; "
            f"{cfg['tune_bits']} bits, seed {cfg['tune_seed']}; at most {MAX_TRIALS} settings "
            "per method, "
            "the best validation mAP@all is used for every code length and seed.", "",
            *_tuning(results), ""]
    plots = results["plots"]
    out += ["## Plots", ""] + [f"![{k}]({v})" for k, v in plots.items()] + [""]
    v, m = results["versions"], results["machine"]
    out += ["## Environment", "",
            f"ahcl {v['ahcl']}, Python {v['python']}, numpy {v['numpy']}, torch {v['torch']}, "
            f"torchvision {v['torchvision']}; {m['platform']}, {m['cpu_count']} CPUs.", ""]
    return "\n".join(out)

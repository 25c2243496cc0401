"""Misuse of the command line (issue #16), one row per way in, run in-process through
``main([...])``: the exit code, stderr one ``ahcl: error:`` line without a traceback (exit 1),
and a sha256 snapshot of every folder involved unchanged.

The ``item`` column is the issue's numbered item; ``pre`` marks misuse the issue found already
handled. Arguments name ``{data}`` (the synthetic scenes), ``{run}`` (the tiny run), ``{image}``
(one of its database images) and ``{tmp}`` (this test's folder, where a row's ``setup`` puts what
it needs); ``says`` is in the error line, or in stdout for a row that exits 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

import ahcl
from ahcl.cli import main
from ahcl.index import HammingIndex
from ahcl.run import sha256_file
from tests.misuse.snapshot import snapshot


@dataclass
class Ctx:
    """What a row's setup may use and make."""

    tmp: Path
    run: Path
    data: Path
    image: str
    bomb: bytes
    request: pytest.FixtureRequest
    stack: ExitStack
    extra: dict[str, str]


@dataclass(frozen=True)
class Case:
    item: str
    argv: tuple[str, ...]
    code: int
    says: str
    setup: Callable[[Ctx], None] | None = None
    #: checks the disk after the command instead of "nothing changed" (a kept checkpoint)
    after: Callable[[Ctx], None] | None = None
    #: checks stdout of a row that exits 0
    out: Callable[[str, Ctx], bool] | None = None


def train(*extra: str, out: str = "{tmp}/run") -> tuple[str, ...]:
    """``ahcl train`` of the tiny run's config (one outer iteration) into ``out``."""
    return ("train", "--data", "{data}", "--out", out, "--backbone", "tiny_cnn", "--bits", "16",
            "--set", "outer_iters=1", "--set", "hidden=16", "--workers", "0", *extra)


def setting(value: str) -> tuple[str, ...]:
    return train("--set", value)


# ------------------------------------------------------------------------- setups
def copy_run(ctx: Ctx, name: str = "run") -> Path:
    return Path(shutil.copytree(ctx.run, ctx.tmp / name))


def damaged(name: str, edit: Callable[[Path], None], rehash: bool = False
            ) -> Callable[[Ctx], None]:
    """A copy of the run at ``{tmp}/run`` whose file ``name`` ``edit`` changed; ``rehash``:
    with run.json's checksum made to match, so the check after the checksum is what answers."""
    def setup(ctx: Ctx) -> None:
        run = copy_run(ctx)
        edit(run / name)
        if rehash:
            info = json.loads((run / "run.json").read_text())
            info["files"][name] = sha256_file(run / name)
            (run / "run.json").write_text(json.dumps(info))
    return setup


def edit_json(change: Callable[[Any], Any]) -> Callable[[Path], None]:
    return lambda path: path.write_text(json.dumps(change(json.loads(path.read_text()))))


def flip_bytes(path: Path, at: int = 10, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    for i in range(at, min(at + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def without(key: str) -> Callable[[dict], dict]:
    return lambda obj: {k: v for k, v in obj.items() if k != key}


def first_label(value: int) -> Callable[[dict], dict]:
    return lambda db: {**db, "labels": [value] + db["labels"][1:]}


def first_query(value: int) -> Callable[[dict], dict]:
    return lambda split: {**split, "query": [value] + split["query"][1:]}


def data_with(bad: str) -> Callable[[Ctx], None]:
    """``{tmp}/data``: the synthetic scenes plus one bad file in a class folder: a symlink loop
    or a decompression bomb."""
    def setup(ctx: Ctx) -> None:
        data = Path(shutil.copytree(ctx.data, ctx.tmp / "data"))
        if bad == "loop":
            os.symlink("loop.png", data / "water" / "loop.png")
        else:
            (data / "forest" / "bomb.png").write_bytes(ctx.bomb)
    return setup


def bomb_file(ctx: Ctx) -> None:
    (ctx.tmp / "imgs").mkdir()
    (ctx.tmp / "imgs" / "bomb.png").write_bytes(ctx.bomb)
    shutil.copy(ctx.image, ctx.tmp / "imgs")


def index(ctx: Ctx) -> None:
    assert main(["index", "build", str(ctx.run), "--out", str(ctx.tmp / "a.index")]) == 0


def both(*setups: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        for s in setups:
            s(ctx)
    return setup


def a_file(name: str) -> Callable[[Ctx], None]:
    return lambda ctx: (ctx.tmp / name).write_text("x")


def config_file(ctx: Ctx) -> None:
    (ctx.tmp / "cfg.d").mkdir()
    (ctx.tmp / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")


def own_files(ctx: Ctx) -> None:
    (ctx.tmp / "run").mkdir()
    (ctx.tmp / "run" / "notes.txt").write_text("my own files")


def full_disk(pattern: str = "*", first: Callable[[Ctx], None] | None = None
              ) -> Callable[[Ctx], None]:
    """The disk fills (for files matching ``pattern``) once ``first`` has run."""
    def setup(ctx: Ctx) -> None:
        if first is not None:
            first(ctx)
        ctx.request.getfixturevalue("full_disk")(pattern)
    return setup


def read_only(ctx: Ctx) -> None:
    ctx.extra["ro"] = str(ctx.request.getfixturevalue("read_only"))


def busy_port(ctx: Ctx) -> None:
    s = ctx.stack.enter_context(socket.socket())
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    ctx.extra["port"] = str(s.getsockname()[1])


def one_class_queries(ctx: Ctx) -> None:
    (ctx.tmp / "q" / "water").mkdir(parents=True)
    shutil.copy(ctx.image, ctx.tmp / "q" / "water")


# ------------------------------------------------------------------- after checks
def kept_checkpoint(ctx: Ctx) -> None:
    """Training stopped late: the checkpoint is kept for inspection (and --resume), the run is
    not marked finished, no temporary file is left."""
    assert (ctx.tmp / "run" / "checkpoint.pt").is_file()
    not_finished(ctx)


def not_finished(ctx: Ctx) -> None:
    """Training stopped: the run is not marked finished and no temporary file is left. (Where
    lr=1e30 gives NaN depends on the CPU's floating-point kernels: at outer iteration 2 on an
    AVX-512 Xeon, with a checkpoint kept, at 1 on an AVX2 EPYC, before any checkpoint.)"""
    run = ctx.tmp / "run"
    assert not (run / "run.json").exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def all_hits(out: str, ctx: Ctx) -> bool:
    hits = json.loads(out)["queries"][0]["hits"]
    return len(hits) == len(ahcl.load_run(ctx.run).db_labels)


def class_names(out: str, ctx: Ctx) -> bool:
    names = set(ahcl.load_run(ctx.run).classes)
    rows = [line.split() for line in out.splitlines() if not line.startswith("#")]
    return bool(rows) and all(row[3] in names for row in rows)  # rank d= inst= CLASS path


CASES = [
    # 1. useless runs with exit 0: every value checked before anything is written
    Case("1", setting("lr=.inf"), 1, "lr must be a finite number > 0"),
    Case("1", setting("lam=.inf"), 1, "lam must be a finite number"),
    Case("1", setting("lam=.nan"), 1, "lam must be a finite number"),
    Case("1", setting("gamma=.nan"), 1, "gamma must be a finite number"),
    Case("1", setting("num_samples=0"), 1, "num_samples must be an integer >= 1"),
    Case("1", setting("code_sweeps=0"), 1, "code_sweeps must be an integer >= 1"),
    Case("1", train("--set", "lr=1e30", "--set", "outer_iters=3", "--set", "optimizer=sgd"), 1,
         "training diverged: the loss is nan at outer iteration ", after=not_finished),
    # 2. tracebacks and half-made run folders
    Case("2", setting("n_bits=16.0"), 1, "n_bits must be a positive multiple of 8"),
    Case("2", setting("outer_iters=1.5"), 1, "outer_iters must be an integer >= 1"),
    Case("2", setting("hidden=-5"), 1, "hidden must be an integer >= 0"),
    Case("2", setting("hidden=1000000000000"), 1, "hidden must be an integer >= 0 and <= 16384"),
    Case("2", setting("dropout=2"), 1, "dropout must be a finite number >= 0 and < 1"),
    Case("2", setting("num_samples=-5"), 1, "num_samples must be an integer >= 1"),
    Case("2", setting("batch_size_features=0"), 1, "batch_size_features must be an integer >= 1"),
    Case("2", setting("lr=.nan"), 1, "lr must be a finite number > 0"),
    Case("2", setting("lr=3e38"), 1, "at most 1e+30 in size"),
    Case("2", setting("weight_decay=.nan"), 1, "weight_decay must be a finite number >= 0"),
    Case("2", setting("weight_decay=1e308"), 1, "at most 1e+30 in size"),
    Case("2", train("--bits", "100000"), 1,
         "n_bits must be a positive multiple of 8, at most 4096"),
    Case("2", setting("seed=-1"), 1, "seed must be an integer >= 0"),
    Case("2", setting("lr_milestones=3"), 1, "lr_milestones must be a list of integers"),
    Case("2", setting("pretrained=maybe"), 1, "pretrained must be true or false"),
    Case("2", train("--config", "{tmp}/cfg.d"), 1, "is a folder: pass a YAML file", config_file),
    Case("2", train("--config", "{tmp}/bin.yaml"), 1, "cannot be read (not UTF-8 text)",
         config_file),
    # 3. --resume checks what it continues
    Case("3", train("--bits", "64", "--method", "adsh", "--resume"), 1,
         "holds a finished run made with another config", copy_run),
    Case("3", train("--resume"), 1, "not an ahcl run folder (no config.json)", own_files),
    Case("3", train("--resume"), 0, "trained ahcl (16 bits", copy_run),  # the same run: loaded
    # 4. k beyond the archive: the whole archive, nothing sized by k
    Case("4", ("search", "{tmp}/a.index", "{image}", "--run", "{run}", "-k", "1000000000",
               "--json"), 0, "", index, out=all_hits),
    Case("4", ("search", "{run}", "{image}", "-k", "1000000000", "--json"), 0, "", out=all_hits),
    # 8. one bad file: skipped with a count, or (--strict, or named alone) one line
    Case("8", ("datasets", "info", "{tmp}/data"), 0, "skipped 1 file(s)", data_with("loop")),
    Case("8", ("datasets", "info", "{tmp}/data", "--strict"), 1,
         "loop.png: cannot read: Too many levels of symbolic links", data_with("loop")),
    Case("8", ("train", "--data", "{tmp}/data", "--out", "{tmp}/run", "--backbone", "tiny_cnn",
               "--strict"), 1, "Too many levels of symbolic links (strict mode", data_with("loop")),
    Case("8", ("datasets", "info", "{tmp}/data"), 0, "forest/bomb.png: too large to decode safely",
         data_with("bomb")),
    Case("8", ("datasets", "info", "{tmp}/data", "--strict"), 1, "too large to decode safely",
         data_with("bomb")),
    Case("8", ("train", "--data", "{tmp}/data", "--out", "{tmp}/run", "--backbone", "tiny_cnn",
               "--strict"), 1, "bomb.png: too large to decode safely", data_with("bomb")),
    Case("8", ("search", "{run}", "{tmp}/imgs/bomb.png"), 1, "too large to decode safely",
         bomb_file),
    Case("8", ("encode", "{run}", "{tmp}/imgs/bomb.png"), 1, "too large to decode safely",
         bomb_file),
    Case("8", ("index", "add", "{tmp}/a.index", "{tmp}/imgs/bomb.png", "--run", "{run}"), 1,
         "too large to decode safely", both(bomb_file, index)),
    Case("8", ("index", "build", "{run}", "--images", "{tmp}/imgs", "--out", "{tmp}/b.index",
               "--strict"), 1, "too large to decode safely", bomb_file),
    # 9. one line instead of a traceback
    Case("9", train(out="{tmp}/afile"), 1, "is a file: choose a folder",
         a_file("afile")),
    Case("9", train(out="{ro}/run"), 1, "Read-only file system: {ro}/run", read_only),
    Case("9", ("encode", "{run}", "{image}", "--out", "{ro}/c.npy"), 1,
         "Read-only file system: {ro}/c.npy", read_only),
    Case("9", ("encode", "{run}", "{image}", "--out", "{tmp}"), 1, "is a folder: give a file name"),
    Case("9", ("encode", "{run}", "{image}", "--out", "{tmp}/f/c.npy"), 1,
         "is a file, not a folder", a_file("f")),
    Case("9", ("index", "build", "{run}", "--out", "{tmp}"), 1, "is a folder: give a file name"),
    Case("9", ("evaluate", "{run}", "--plots", "{tmp}/plots"), 1, "is a file: give a folder",
         a_file("plots")),
    Case("9", ("evaluate", "{tmp}/run"), 1, "run.json is not a JSON object",
         damaged("run.json", edit_json(lambda o: [o]))),
    Case("9", ("evaluate", "{tmp}/run"), 1, "lacks or garbles a field (KeyError('n_bits'))",
         damaged("run.json", edit_json(without("n_bits")))),
    Case("9", ("evaluate", "{tmp}/run"), 1, "lacks or garbles a field",
         damaged("run.json", edit_json(lambda o: {**o, "n_bits": "x"}))),
    Case("9", ("evaluate", "{tmp}/run"), 1, "names a file outside the run",
         damaged("run.json", edit_json(lambda o: {**o, "files": {"../x": "0"}}))),
    Case("9", ("search", "{tmp}/run", "{image}"), 1, "labels must be class ids in 0..5",
         damaged("db.json", edit_json(first_label(99)), rehash=True)),
    Case("9", ("search", "{tmp}/run", "{image}"), 1, "labels must be class ids in 0..5",
         damaged("db.json", edit_json(first_label(-1)), rehash=True)),
    Case("9", ("evaluate", "{tmp}/run"), 1, "split indices out of range",
         damaged("split.json", edit_json(first_query(10**6)), rehash=True)),
    Case("9", ("index", "add", "{tmp}/a.index", "{image}", "--run", "{tmp}/run", "--label",
               "water"), 1, "code_state.npz is unreadable",
         both(index, damaged("code_state.npz", lambda p: p.write_bytes(b"garbage"),
                             rehash=True))),
    Case("9", ("index", "add", "{tmp}/a.index", "{image}", "--run", "{run}"), 1,
         "no space left on the device", full_disk(first=index)),
    Case("9", ("index", "build", "{run}", "--out", "{tmp}/b.index"), 1,
         "cannot write {tmp}/b.index: no space left", full_disk()),
    Case("9", ("encode", "{run}", "{image}", "--out", "{tmp}/c.npy"), 1,
         "cannot write {tmp}/c.npy: no space left", full_disk()),
    Case("9", train(), 1, "cannot write {tmp}/run/config.json: no space left", full_disk()),
    Case("9", train(), 1, "cannot write {tmp}/run/model.pt: no space left",
         full_disk("model.pt"), after=kept_checkpoint),
    Case("9", ("serve", "{run}", "--port", "{port}"), 1, "cannot listen on 127.0.0.1:{port}",
         busy_port),
    Case("11", ("serve", "{run}", "--port", "0", "--torch-threads", "0"), 1,
         "--torch-threads must be an integer in [1, 1024], got 0"),
    # 10. every run file checksummed
    *[Case("10", ("evaluate", "{tmp}/run"), 1, f"{name} does not match its checksum",
           damaged(name, flip_bytes))
      for name in ("model.pt", "db.json", "code_state.npz", "split.json", "instance.npz")],
    Case("10", ("search", "{tmp}/run", "{image}"), 1, "model.pt does not match its checksum",
         damaged("model.pt", flip_bytes)),
    Case("10", ("serve", "{tmp}/run", "--port", "0"), 1, "model.pt does not match its checksum",
         damaged("model.pt", flip_bytes)),
    # 11. smaller ones
    Case("11", ("evaluate", "{run}", "--queries", "{tmp}/q"), 0, "queries 1  database",
         one_class_queries),
    Case("11", ("search", "{tmp}/a.index", "{image}", "--run", "{run}", "-k", "5"), 0, "",
         index, out=class_names),
    Case("11", ("search", "{run}", "{image}", "-k", "1.7"), 2, "argument -k: invalid int value"),
    Case("11", ("search", "{run}", "{image}", "-k", "0"), 1, "-k must be >= 1"),
    Case("11", ("search", "{tmp}/run", "{image}"), 1,
         "holds more than tensors (UnpicklingError); it is only ever loaded as tensors",
         damaged("model.pt", lambda p: p.write_bytes(b"not a torch file"), rehash=True)),
]

PROGRESS = re.compile(r"iteration \d+/\d+ ")


def _id(case: Case) -> str:
    return f"{case.item}:{' '.join(case.argv[:2])}:{case.says[:40] or case.argv[-1]}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_misuse_gets_one_line_and_changes_nothing(case: Case, tiny_run, synthetic_scenes, image,
                                                  bomb_png, tmp_path, capsys, request) -> None:
    with ExitStack() as stack:
        ctx = Ctx(tmp_path, tiny_run, synthetic_scenes, image, bomb_png, request, stack, {})
        if case.setup is not None:
            case.setup(ctx)
        words = {"data": str(synthetic_scenes), "run": str(tiny_run), "image": image,
                 "tmp": str(tmp_path), **ctx.extra}
        roots = (tmp_path, tiny_run, synthetic_scenes)
        before = [snapshot(r) for r in roots]
        capsys.readouterr()
        code = main([a.format(**words) for a in case.argv])
        out, err = capsys.readouterr()
    says = case.says.format(**words)
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert "Traceback" not in err
    assert code == case.code, err
    if code == 0:
        assert not lines, err
        assert says in out and (case.out is None or case.out(out, ctx)), out
    elif code == 1:
        assert len(lines) == 1 and lines[0].startswith("ahcl: error: "), err
        assert says in lines[0], lines[0]
    else:  # 2: a usage error, argparse's usage and its one error line
        assert says in lines[-1], err
    if case.after is None:
        assert [snapshot(r) for r in roots] == before
    else:
        case.after(ctx)


def test_index_build_images_skips_an_unreadable_image_with_a_count(tiny_run, image, bomb_png,
                                                                  tmp_path, capsys) -> None:
    """#16 item 8: without --strict, a bad file among the images is skipped, named and
    counted; the readable ones are indexed."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "bomb.png").write_bytes(bomb_png)
    shutil.copy(image, tmp_path / "imgs")
    out = tmp_path / "b.index"
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\): .*bomb.png"):
        assert main(["index", "build", str(tiny_run), "--images", str(tmp_path / "imgs"),
                     "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == 1 and report["skipped"] == 1
    index = HammingIndex.load(out)
    assert len(index) == 1 and index.meta_of(index.ids)[0]["path"].endswith(Path(image).name)

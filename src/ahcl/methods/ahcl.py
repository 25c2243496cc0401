"""AHCL (Song et al., IEEE TGRS 2022) and ADSH (Jiang & Li, AAAI 2018): asymmetric hashing.

Query codes come from the network, ``sign(u)``; database codes ``V`` are variables of the
objective (METHOD.md)::

    J(Θ, V) = Σ_{i∈Ω} Σ_{j∈Γ} (u_iᵀ v_j − c·S_ij)² + λ Σ_{i∈Ω} ‖v_i − u_i‖² + γ Σ_{i∈Ω} CE(W u_i + w0, y_i)

minimised alternately: a few epochs of the network step over a sampled Ω (V fixed), then the
bit-by-bit database-code step (Θ fixed). Both steps use the scalable forms of
:mod:`ahcl.methods.solver`. ADSH is the same method with γ = 0 and the ADSH paper's defaults.

As in the authors' code the first two terms are normalised by ``n·|B|`` per mini-batch and the
cross entropy is the batch mean times γ.

Under torchrun (:mod:`ahcl.distributed`) the same loop runs on every rank: each rank owns a
contiguous block of database rows (its rows of ``V`` and of Ω), takes a contiguous slice of each
mini-batch with DistributedDataParallel averaging the gradients (each rank's loss is scaled so that
the average is the gradient of the whole mini-batch's loss), and reads the mini-batch's rows of
``V`` from an all-reduce of the owners' rows. The statistics (``VᵀV``, ``P``, ``UᵀU``, ``R``) are all-reduced;
no rank holds all of ``V`` or an n×c float matrix. Rank 0 gathers the packed codes to write them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ahcl import distributed as dist
from ahcl._io import atomic_write
from ahcl.device import Placement
from ahcl.errors import AhclError, InvalidValueError
from ahcl.index.packing import pack_codes, unpack_codes
from ahcl._checks import (check_choice, check_float, check_hidden, check_int, check_n_bits,
                          check_seed, store_floats)
from ahcl.methods.base import (DEFAULT_HIDDEN, FitInputs, HashingMethod, Inputs, MethodSpec,
                               TrainingDivergedError, lr_dropout_grid)
from ahcl.methods.feeders import CPU, as_feeder, fork_rng
from ahcl.methods.solver import (code_step_from_stats, code_step_shard, database_stats,
                                 dissimilar_weight, pairwise_loss)
from ahcl.models.heads import HashNet

CHECKPOINT_VERSION = 1


@dataclass
class AHCLParams:
    """Hyper-parameters of AHCL (defaults chosen for frozen features; see README "Defaults").

    Attributes:
        n_bits: code length ``c`` (a multiple of 8).
        lam: λ, weight of ‖v_i − u_i‖² for the sampled rows.
        gamma: γ, weight of the classification (semantic) term; 0 gives ADSH.
        similarity: ``"soft"`` (authors' code: dissimilar pairs −r) or ``"hard"`` (−1).
        outer_iters: alternations of network step and code step.
        epochs: epochs of the network step over Ω per outer iteration.
        num_samples: m = |Ω| (``None`` or ≥ n: all database items, as the authors' demo).
        batch_size: mini-batch size of the network step.
        optimizer: ``"sgd"`` (momentum 0.9) or ``"adam"``.
        lr: learning rate; divided by 10 at each outer iteration in ``lr_milestones``.
        lr_milestones: outer iterations where the learning rate drops.
        weight_decay: L2 weight decay.
        hidden: width of an MLP layer before the hash layer (0: none).
        dropout: dropout on the features entering the hash head during the network step.
        code_sweeps: passes over all bits in each database-code step.
        seed: seeds V's initialisation, the network's initialisation, Ω and the shuffles.
    """

    n_bits: int = 32
    lam: float = 200.0
    gamma: float = 20.0
    similarity: str = "soft"
    outer_iters: int = 30
    epochs: int = 2
    num_samples: int | None = 2000
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_milestones: tuple[int, ...] = (10, 20)
    weight_decay: float = 5e-4
    hidden: int = DEFAULT_HIDDEN
    dropout: float = 0.5
    code_sweeps: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.lr_milestones, (str, bytes)) or not hasattr(self.lr_milestones,
                                                                           "__iter__"):
            raise InvalidValueError("lr_milestones", self.lr_milestones, "a list of integers")
        for m in self.lr_milestones:
            check_int("lr_milestones", m, 0)
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        check_n_bits(self.n_bits)
        check_choice("similarity", self.similarity, ("soft", "hard"))
        check_choice("optimizer", self.optimizer, ("sgd", "adam"))
        for name in ("lam", "gamma", "weight_decay"):
            check_float(name, getattr(self, name), lo=0)
        check_float("lr", self.lr, lo=0, lo_open=True)
        check_float("dropout", self.dropout, lo=0, hi=1, hi_open=True)
        for name in ("outer_iters", "epochs", "batch_size", "code_sweeps"):
            check_int(name, getattr(self, name), 1)
        check_int("num_samples", self.num_samples, 1, optional=True)
        check_hidden(self.hidden)
        check_seed(self.seed)
        store_floats(self)


@dataclass
class CodeState:
    """What the database-code step needs to code new labelled rows without retraining.

    Attributes:
        gram_u: float32 (c, c) ``M = UᵀU`` of the last Ω.
        class_sums_u: float32 (K, c) ``R[k] = Σ_{i∈Ω: y_i=k} u_i``.
        r: dissimilar weight of the last iteration.
        lam: λ.
    """

    gram_u: np.ndarray
    class_sums_u: np.ndarray
    r: float
    lam: float


@dataclass
class ADSHParams(AHCLParams):
    """ADSH's hyper-parameters: AHCL's with γ = 0 (no semantic term), which is checked."""

    gamma: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gamma:
            raise InvalidValueError("gamma", self.gamma,
                                    "0 for ADSH, which has no semantic term (use method ahcl)")


# Fixed benchmark budget of both asymmetric methods: outer_iters × epochs passes over Ω = all
# items, the same number of passes the mini-batch methods make (their `epochs`).
_ASYMMETRIC_BUDGET = {"outer_iters": 10, "epochs": 2, "num_samples": None, "lr_milestones": [6, 8],
                      "hidden": DEFAULT_HIDDEN}


class AHCL(HashingMethod):
    """Asymmetric hash code learning. scikit-learn style: ``fit`` returns ``self``.

    Fitted attributes: ``net_`` (:class:`HashNet`), ``V_`` int8 (n, c) ±1 database codes,
    ``db_codes_`` packed uint8 (n, c/8), ``history_`` (one dict per outer iteration),
    ``code_state_`` (:class:`CodeState`), ``n_classes_``, ``rows_`` (slice of the database rows
    in ``V_``). Under torchrun ``V_`` holds only this rank's ``rows_`` and ``db_codes_`` is set on
    rank 0 alone (``None`` elsewhere).
    """

    spec = MethodSpec("ahcl", "asymmetric", trainable=True,
                      grid=lr_dropout_grid("gamma", (20.0, 5.0)), budget=_ASYMMETRIC_BUDGET)
    Params = AHCLParams

    # ------------------------------------------------------------------ network
    def build_net(self, in_dim: int, n_classes: int, backbone: nn.Module | None = None) -> HashNet:
        """A freshly initialised :class:`HashNet` (initialisation seeded, global RNG restored)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.params.seed)
            return HashNet(in_dim, self.params.n_bits, n_classes, self.params.hidden, backbone,
                           self.params.dropout)

    def _optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        p = self.params
        if p.optimizer == "sgd":
            return torch.optim.SGD(net.parameters(), lr=p.lr, momentum=0.9,
                                   weight_decay=p.weight_decay)
        return torch.optim.Adam(net.parameters(), lr=p.lr, weight_decay=p.weight_decay)

    def _lr_at(self, iteration: int) -> float:
        drops = sum(iteration >= m for m in self.params.lr_milestones)
        return self.params.lr * 0.1 ** drops

    # ------------------------------------------------------------------ fit
    def _fit(self, data: FitInputs, *, checkpoint: str | Path | None,
             on_iteration: Callable[[dict[str, Any]], None] | None) -> None:
        """Learn the network and the database codes (see :meth:`HashingMethod.fit`).

        ``checkpoint``: file written atomically after every outer iteration; when it exists,
        training resumes from it and ends with the same result as an uninterrupted run.
        """
        p = self.params
        feeder, labels, K, place = data.feeder, data.labels, data.n_classes, data.placement
        n = len(labels)
        net = self.build_net(data.in_dim, K, data.backbone).to(place.device)
        if data.backbone is not None:  # image batches arrive channels_last (see the feeders)
            net.to(memory_format=torch.channels_last)
        opt = self._optimizer(net)
        # fp16 needs loss scaling; for fp32 and bf16 the scaler is a pass-through.
        scaler = torch.amp.GradScaler(place.device.type, enabled=place.precision == "fp16")
        world, me = dist.world_size(), dist.rank()
        reduce = dist.all_reduce_numpy if world > 1 else None
        rows = dist.shard_slice(n, me, world)  # this rank's database rows (all of them alone)
        V = initial_codes(n, p.n_bits, p.seed, rows)
        history: list[dict[str, Any]] = []
        start = 0
        state = None
        if checkpoint is not None and Path(checkpoint).exists():
            start, V, history, state = self._load_checkpoint(checkpoint, net, opt, n, rows)
        model: nn.Module = net
        if world > 1:
            # ADSH never uses the classifier: tell DDP not to wait for its gradients.
            ids = [place.device.index] if place.is_cuda else None
            model = nn.parallel.DistributedDataParallel(net, device_ids=ids,
                                                        find_unused_parameters=not p.gamma)
        m = n if p.num_samples is None else min(p.num_samples, n)
        counts = np.bincount(labels, minlength=K)
        for t in range(start, p.outer_iters):
            tic = time.perf_counter()
            rng = np.random.default_rng([p.seed, t])
            omega = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
            lo, hi = np.searchsorted(omega, [rows.start, rows.stop])  # Ω ∩ this rank's rows
            r = dissimilar_weight(labels[omega], counts, p.similarity)
            for group in opt.param_groups:
                group["lr"] = self._lr_at(t)
            with fork_rng(place):
                # Dropout draws from torch's global RNG: seed it per iteration (so a resumed run
                # draws the same masks) and restore the caller's state afterwards.
                torch.manual_seed(int(rng.integers(2**62)) + me)
                stats = database_stats(V, labels[rows], K, reduce=reduce)
                v_rows = _v_rows_of(V, rows, reduce)
                losses = self._network_step(model, opt, scaler, feeder, labels, v_rows, stats,
                                            omega, r, rng, place, world, me)
            _check_finite(losses["loss"], t, checkpoint)
            U = self._outputs(net, feeder, omega[lo:hi], place)
            V_before = V.copy()
            # On a GPU the bit updates run there too (the statistics stay float64 sums on the CPU).
            _, M, R = code_step_shard(V, rows.start, U, omega[lo:hi], labels[rows], K, r, p.lam,
                                      reduce, sweeps=p.code_sweeps,
                                      device=place.device if place.is_cuda else None)
            state = CodeState(M, R, r, p.lam)
            changed = np.array([np.count_nonzero(V != V_before)], np.int64)
            changed = int((reduce(changed) if reduce else changed)[0])
            record = {"iteration": t, "lr": self._lr_at(t), "r": r, **losses,
                      "bits_changed": changed / (n * p.n_bits),
                      "seconds": time.perf_counter() - tic}
            history.append(record)
            if checkpoint is not None:
                codes = dist.gather_numpy(pack_codes(V)) if world > 1 else V
                if me == 0:
                    self._save_checkpoint(checkpoint, t + 1, codes, net, opt, history, state)
            if on_iteration is not None and me == 0:
                on_iteration(record)
        net.eval()
        self.net_, self.V_, self.history_, self.n_classes_ = net, V, history, K
        self.code_state_, self.rows_ = state, rows
        self.db_codes_ = dist.gather_numpy(pack_codes(V)) if world > 1 else pack_codes(V)

    def _network_step(self, model: nn.Module, opt: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler, feeder, labels: np.ndarray,
                      v_rows: Callable[[np.ndarray], np.ndarray], stats: Any, omega: np.ndarray,
                      r: float, rng: np.random.Generator, place: Placement, world: int = 1,
                      me: int = 0) -> dict[str, float]:
        """Epochs over Ω with ``V`` fixed. With ``world > 1`` this rank takes its slice of each
        mini-batch; the loss of the slice is normalised by the whole mini-batch and scaled by
        ``world`` so DDP's gradient average equals the one-process gradient.

        The network runs under autocast (``place.precision``); the losses are computed from
        float32 copies of its outputs, because the pairwise term multiplies ``u`` by ``VᵀV``,
        whose entries reach ``n``."""
        p = self.params
        n = len(labels)
        model.train()
        sums = {"loss_pair": 0.0, "loss_quant": 0.0, "loss_ce": 0.0, "loss": 0.0}
        n_batches = 0
        for _ in range(p.epochs):
            order = omega[rng.permutation(len(omega))]  # reshuffled every epoch
            batches = [order[i:i + p.batch_size] for i in range(0, len(order), p.batch_size)]
            parts = [dist.shard_slice(len(b), me, world) for b in batches]
            mine = [b[part] for b, part in zip(batches, parts)]
            # Per-item augmentation seeds, drawn only when there is augmentation, so that frozen
            # features (and unaugmented images) draw exactly what they always did.
            # Drawn for whole batches and then shared out, so every rank count sees the same.
            seeds = ([rng.integers(2**62, size=len(b))[part] for b, part in zip(batches, parts)]
                     if feeder.augments else None)
            for full, part, idx, x in zip(batches, parts, mine,
                                          feeder.batches(mine, place, train=True, seeds=seeds)):
                y = place.to_device(torch.from_numpy(labels[idx]))
                with place.autocast():
                    u, logits = model(x)
                u, logits = u.float(), logits.float()
                v = place.to_device(torch.from_numpy(v_rows(full)[part].astype(np.float32)))
                pair = pairwise_loss(u, y, stats, r, p.n_bits) / (n * len(full))
                quant = p.lam * ((v - u) ** 2).sum() / (n * len(full))
                if not p.gamma:
                    ce = torch.zeros((), device=u.device)
                elif world == 1:
                    ce = F.cross_entropy(logits, y)
                else:
                    ce = F.cross_entropy(logits, y, reduction="sum") / len(full)
                loss = pair + quant + p.gamma * ce
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss * world if world > 1 else loss).backward()
                scaler.step(opt)
                scaler.update()
                for key, val in (("loss_pair", pair), ("loss_quant", quant), ("loss_ce", ce),
                                 ("loss", loss)):
                    sums[key] += float(val.detach())
                n_batches += 1
        if world > 1:  # each rank summed its slices' shares of the batch losses
            total = dist.all_reduce_numpy(np.array(list(sums.values()), np.float64))
            sums = dict(zip(sums, map(float, total)))
        return {k: v / max(n_batches, 1) for k, v in sums.items()}

    @torch.inference_mode()
    def _outputs(self, net: HashNet, feeder, rows: np.ndarray, place: Placement,
                 batch_size: int = 512) -> np.ndarray:
        """float32 (len(rows), c) outputs ``u`` of ``rows`` (eval mode, no augmentation)."""
        net.eval()
        batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        out = []
        for x in feeder.batches(batches, place):
            with place.autocast():
                u = net(x)[0]
            out.append(u.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.params.n_bits),
                                                                             np.float32)

    # ------------------------------------------------------------------ use
    def encode_u(self, inputs: Inputs, batch_size: int = 512) -> np.ndarray:
        """Network outputs ``u``: float32 (n, n_bits)."""
        feeder = as_feeder(inputs)
        return self._outputs(self.net_, feeder, np.arange(len(feeder)),
                             getattr(self, "placement_", CPU), batch_size)

    def encode(self, inputs: Inputs) -> np.ndarray:
        """Query codes ``sign(u)`` (sign(0) = +1), packed uint8 (n, n_bits/8)."""
        return pack_codes(self.encode_u(inputs))

    def codes_for_labels(self, labels: np.ndarray) -> np.ndarray:
        """Database codes for new labelled items: the code step for those rows alone.

        With Ū = 0 for rows outside Ω, a new row's code depends only on its label and the
        stored ``(M, R, r, λ)``: sweeps from ``sign(R[y])`` until a fixed point.

        Returns:
            packed uint8 (len(labels), n_bits/8).
        """
        return pack_codes(code_new_rows(self.code_state_, labels, self.params.n_bits))

    # ------------------------------------------------------------------ checkpoint
    def _save_checkpoint(self, path: str | Path, next_iter: int, V: np.ndarray, net: nn.Module,
                         opt: torch.optim.Optimizer, history: list[dict[str, Any]],
                         state: CodeState) -> None:
        # V: int8 (n, c) ±1, or packed uint8 (n, c/8) (what rank 0 gathers under torchrun).
        blob = {
            "version": CHECKPOINT_VERSION,
            "config": json.dumps(self.get_config(), sort_keys=True),
            "next_iter": next_iter,
            "V" if V.dtype == np.int8 else "V_packed": torch.from_numpy(V),
            "net": net.state_dict(),
            "opt": opt.state_dict(),
            "history": json.dumps(history),
            "code_state": {"gram_u": torch.from_numpy(state.gram_u),
                           "class_sums_u": torch.from_numpy(state.class_sums_u),
                           "r": state.r, "lam": state.lam},
        }
        with atomic_write(path) as f:
            torch.save(blob, f)

    def _load_checkpoint(self, path: str | Path, net: nn.Module, opt: torch.optim.Optimizer,
                         n: int, rows: slice) -> tuple[int, np.ndarray, list, CodeState]:
        """Resume state; ``V`` comes back as int8 rows ``rows`` (a checkpoint written by any
        number of processes resumes on any number)."""
        try:
            # mmap: a rank reads only its own rows of V from the file.
            blob = torch.load(path, map_location="cpu", weights_only=True,
                              mmap=rows != slice(0, n))
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is a user-facing error
            raise AhclError(f"cannot resume: checkpoint {path} is unreadable ({exc}); "
                            "delete it to start over") from None
        if blob.get("version") != CHECKPOINT_VERSION:
            raise AhclError(f"cannot resume: checkpoint {path} has version {blob.get('version')}, "
                            f"expected {CHECKPOINT_VERSION}")
        if blob["config"] != json.dumps(self.get_config(), sort_keys=True):
            raise AhclError(f"cannot resume: checkpoint {path} was made with other settings")
        stored = blob["V"] if "V" in blob else blob["V_packed"]
        if stored.shape[0] != n:
            raise AhclError(f"cannot resume: checkpoint {path} holds codes for {stored.shape[0]} "
                            f"items, the data has {n}")
        V = stored[rows].numpy().copy()
        if V.dtype == np.uint8:
            V = unpack_codes(V, self.params.n_bits)
        if V.shape[1] != self.params.n_bits:
            raise AhclError(f"cannot resume: checkpoint {path} holds codes of another length")
        net.load_state_dict(blob["net"])
        opt.load_state_dict(blob["opt"])
        cs = blob["code_state"]
        state = CodeState(cs["gram_u"].numpy(), cs["class_sums_u"].numpy(), float(cs["r"]),
                          float(cs["lam"]))
        return int(blob["next_iter"]), V, json.loads(blob["history"]), state


class ADSH(AHCL):
    """Asymmetric Deep Supervised Hashing (Jiang & Li, AAAI 2018): AHCL with γ = 0.

    Everything else (similarity variant, iteration budget, network) is shared with AHCL so the
    two compare at equal cost; ``similarity="hard"`` gives the ADSH paper's −1 for dissimilar pairs.
    """

    spec = MethodSpec("adsh", "asymmetric", trainable=True,
                      grid=lr_dropout_grid("lam", (200.0, 50.0)), budget=_ASYMMETRIC_BUDGET,
                      ablates=("ahcl", "the semantic (classification) term"))
    Params = ADSHParams


def _check_finite(loss: float, iteration: int, checkpoint: str | Path | None) -> None:
    """Stop at the first non-finite loss instead of writing useless codes."""
    if np.isfinite(loss):
        return
    kept = (f"; the checkpoint of the last good iteration is kept in {checkpoint}"
            if checkpoint is not None and Path(checkpoint).exists() else "")
    raise TrainingDivergedError(
        f"training diverged: the loss is {loss} at outer iteration {iteration + 1}{kept}; "
        "lower lr or the loss weights", iteration=iteration + 1, checkpoint=checkpoint)


def initial_codes(n: int, n_bits: int, seed: int, rows: slice | None = None,
                  chunk: int = 65536) -> np.ndarray:
    """The random ±1 start of ``V``: int8 (len(rows), n_bits), rows ``rows`` of the (n, n_bits)
    matrix drawn from ``default_rng([seed, 0xA11C]).random((n, n_bits)) < 0.5 → −1``.

    The generator is advanced past the rows before ``rows`` (one 64-bit draw per value), so a
    rank draws only its own rows and in chunks, yet every row is the same as in one process.
    (The authors' zeros give sign(0) codes that are not ±1.)
    """
    start, stop, _ = (rows or slice(0, n)).indices(n)
    bits = np.random.PCG64([seed, 0xA11C])
    bits.advance(start * n_bits)
    gen = np.random.Generator(bits)
    V = np.empty((stop - start, n_bits), np.int8)
    for lo in range(0, stop - start, chunk):
        block = gen.random((min(chunk, stop - start - lo), n_bits))
        V[lo:lo + len(block)] = np.where(block < 0.5, -1, 1)
    return V


def _v_rows_of(V: np.ndarray, rows: slice, reduce: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``idx -> V[idx]`` (int8 (len(idx), c)) for database rows ``idx``. Alone: a lookup. Under
    torchrun (a collective: every rank calls it with the same ``idx``): each rank fills the rows
    it owns into a zero array and the arrays are summed, so a rank receives only one mini-batch's
    rows (one non-zero contribution per entry: the sum is exact)."""
    if reduce is None:
        return lambda idx: V[idx]

    def gather(idx: np.ndarray) -> np.ndarray:
        own = np.zeros((len(idx), V.shape[1]), np.int32)
        mask = (idx >= rows.start) & (idx < rows.stop)
        own[mask] = V[idx[mask] - rows.start]
        return reduce(own).astype(np.int8)

    return gather


def code_new_rows(state: CodeState, labels: np.ndarray, n_bits: int,
                  max_sweeps: int = 10) -> np.ndarray:
    """The code step for rows outside Ω (Ū = 0), swept until no bit changes: int8 (len, n_bits).

    Each row starts from ``sign(R[y])``, the sign of its class's summed network outputs (the
    direction the step pulls towards), so the result depends on the label alone: items added
    with the same label get the same code, whatever order or batch they come in.
    """
    labels = np.asarray(labels, dtype=np.int64)
    K = state.class_sums_u.shape[0]
    if len(labels) and (labels.min() < 0 or labels.max() >= K):
        raise AhclError(f"labels must be class ids in 0..{K - 1}")
    V = np.where(state.class_sums_u[labels] >= 0, 1, -1).astype(np.int8).reshape(-1, n_bits)
    for _ in range(max_sweeps):
        before = V.copy()
        code_step_from_stats(V, labels, state.gram_u, state.class_sums_u, state.r, state.lam)
        if np.array_equal(before, V):
            break
    return V

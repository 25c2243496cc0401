"""Symmetric deep hashing baselines: DPSH, HashNet, DSH, CSQ on the same network as AHCL.

"Symmetric" means one network codes queries and database alike: training sees pairs (or class
centres) within mini-batches only, and the database codes are ``sign(u)`` of a forward pass over
every database item after training. Each method uses :class:`~ahcl.models.heads.HashNet`
(frozen-feature inputs, or a trainable backbone in finetune mode) exactly as AHCL does, and
differs only in its loss (:mod:`ahcl.methods.losses`).

Training: ``epochs`` passes over the database in seeded shuffled mini-batches (Adam or SGD).
The dropout masks and the network's initialisation draw from torch's global generator, so both
run inside :func:`torch.random.fork_rng` seeded from ``seed``: same seed, same bytes, and the
caller's random state is untouched.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from ahcl._checks import (check_choice, check_float, check_hidden, check_int, check_n_bits,
                          check_seed, store_floats)
from ahcl.index.packing import pack_codes
from ahcl.methods.base import (DEFAULT_HIDDEN, FitInputs, HashingMethod, Inputs, MethodSpec,
                               TrainingDivergedError, lr_dropout_grid)
from ahcl.methods.feeders import CPU, as_feeder, fork_rng
from ahcl.methods.losses import (class_centers, csq_loss, dpsh_loss, dsh_loss, hashnet_loss,
                                 similarity)
from ahcl.models.heads import HashNet

#: Fixed benchmark budget of the deep symmetric methods: `epochs` passes over the database (as
#: many as AHCL's outer_iters × epochs) and AHCL's hash head width.
DEEP_BUDGET = {"epochs": 20, "hidden": DEFAULT_HIDDEN}


@dataclass
class DeepParams:
    """Hyper-parameters shared by every mini-batch baseline.

    Attributes:
        n_bits: code length ``c`` (a multiple of 8).
        epochs: passes over the training items.
        batch_size: mini-batch size (pairwise losses use the pairs inside a batch).
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        lr: learning rate (constant).
        weight_decay: L2 weight decay.
        hidden: width of the MLP layer before the hash layer (0: none), as AHCL's ``hidden``.
        dropout: dropout on the features entering the head.
        seed: seeds the initialisation, the shuffles and the dropout masks.
    """

    n_bits: int = 32
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 5e-4
    hidden: int = DEFAULT_HIDDEN
    dropout: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_n_bits(self.n_bits)
        check_choice("optimizer", self.optimizer, ("sgd", "adam"))
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 2)
        check_float("lr", self.lr, lo=0, lo_open=True)
        check_float("weight_decay", self.weight_decay, lo=0)
        check_hidden(self.hidden)
        check_float("dropout", self.dropout, lo=0, hi=1, hi_open=True)
        check_seed(self.seed)
        # The subclasses' own weights: finite and >= 0.
        for f in dataclasses.fields(self):
            if f.name not in _SHARED and f.type in ("float", float):
                check_float(f.name, getattr(self, f.name), lo=0)
        store_floats(self)


_SHARED = {f.name for f in dataclasses.fields(DeepParams)}


class MiniBatchMethod(HashingMethod):
    """Base of the deep baselines: seeded mini-batch training, codes from a forward pass.

    A subclass sets ``spec`` and ``Params`` and writes :meth:`loss`; it may override
    :meth:`build_net`, :meth:`prepare` (per-fit state such as hash centres) and :meth:`real_codes`.
    Fitted attributes: ``net_``, ``db_codes_`` packed uint8 (n, c/8), ``history_`` (one dict per
    epoch), ``n_classes_``, ``timings_`` (``train_s``, ``db_codes_s``: the forward pass over the
    database inputs, i.e. over features in frozen mode).
    """

    Params: ClassVar[type[DeepParams]] = DeepParams

    # ---------------------------------------------------------------- subclass hooks
    def build_net(self, in_dim: int, n_classes: int, backbone: nn.Module | None) -> nn.Module:
        p = self.params
        return HashNet(in_dim, p.n_bits, n_classes, p.hidden, backbone, p.dropout)

    def prepare(self, labels: np.ndarray, n_classes: int) -> None:
        """Per-fit state computed before training (default: none)."""

    def loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        """The training loss of one mini-batch (``step`` counts batches from 0)."""
        raise NotImplementedError

    def real_codes(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """float (B, c) whose signs are the codes (default ``u``)."""
        return net(x)[0]

    # ---------------------------------------------------------------- fit / encode
    def _fit(self, data: FitInputs, *, checkpoint: Any,
             on_iteration: Callable[[dict[str, Any]], None] | None) -> None:
        """Train on the database items, then code them with a forward pass.

        ``checkpoint`` is accepted for interface compatibility with AHCL and ignored: these
        trainings are short and restart from scratch. ``on_iteration`` gets each epoch's metrics.
        """
        p = self.params
        feeder, labels, K, place = data.feeder, data.labels, data.n_classes, data.placement
        n = len(labels)
        tic = time.perf_counter()
        history: list[dict[str, Any]] = []
        with fork_rng(place):
            torch.manual_seed(p.seed)
            net = self.build_net(data.in_dim, K, data.backbone).to(place.device)
            if data.backbone is not None:  # image batches arrive channels_last
                net.to(memory_format=torch.channels_last)
            self.prepare(labels, K)
            scaler = torch.amp.GradScaler(place.device.type, enabled=place.precision == "fp16")
            opt = (torch.optim.SGD(net.parameters(), lr=p.lr, momentum=0.9,
                                   weight_decay=p.weight_decay) if p.optimizer == "sgd" else
                   torch.optim.Adam(net.parameters(), lr=p.lr, weight_decay=p.weight_decay))
            step = 0
            for epoch in range(p.epochs):
                rng = np.random.default_rng([p.seed, epoch])
                order = rng.permutation(n)
                # A last batch of one item has no pair: fold it into the previous batch.
                cuts = list(range(0, n, p.batch_size))
                if len(cuts) > 1 and n - cuts[-1] < 2:
                    cuts.pop()
                batches = [order[a:b] for a, b in zip(cuts, cuts[1:] + [n])]
                net.train()
                total = 0.0
                seeds = ([rng.integers(2**62, size=len(b)) for b in batches] if feeder.augments
                         else None)
                for idx, x in zip(batches, feeder.batches(batches, place, train=True,
                                                          seeds=seeds)):
                    y = place.to_device(torch.from_numpy(labels[idx]))
                    with place.autocast():  # autocast keeps the losses' reductions in float32
                        loss = self.loss(net, x, y, step)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    total += float(loss.detach())
                    step += 1
                if not np.isfinite(total):
                    raise TrainingDivergedError(
                        f"training diverged: the loss is {total} in epoch {epoch + 1}; lower lr "
                        "or the loss weights", iteration=epoch + 1, checkpoint=None)
                record = {"iteration": epoch, "loss": total / len(batches)}
                history.append(record)
                if on_iteration is not None:
                    on_iteration(record)
        net.eval()
        self.net_, self.history_, self.n_classes_ = net, history, K
        train_s = time.perf_counter() - tic
        tic = time.perf_counter()
        self.db_codes_ = self.encode(feeder)
        self.timings_ = {"train_s": train_s, "db_codes_s": time.perf_counter() - tic}

    @torch.inference_mode()
    def encode_real(self, inputs: Inputs, batch_size: int = 512) -> np.ndarray:
        """float32 (n, n_bits) real codes whose signs are the codes."""
        feeder = as_feeder(inputs)
        place = getattr(self, "placement_", CPU)
        rows = np.arange(len(feeder))
        batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        self.net_.eval()
        out = []
        for x in feeder.batches(batches, place):
            with place.autocast():
                real = self.real_codes(self.net_, x)
            out.append(real.float().cpu().numpy())
        return (np.concatenate(out).astype(np.float32) if out
                else np.zeros((0, self.params.n_bits), np.float32))

    def encode(self, inputs: Inputs) -> np.ndarray:
        """Codes ``sign(·)`` (sign(0) = +1), packed uint8 (n, n_bits/8)."""
        return pack_codes(self.encode_real(inputs))


# -------------------------------------------------------------------- the four methods
@dataclass
class DPSHParams(DeepParams):
    """DPSH: ``eta`` = η, weight of the quantisation term."""

    eta: float = 0.1


class DPSH(MiniBatchMethod):
    """Deep Pairwise-Supervised Hashing.

    Li, Wang & Kang, "Feature Learning based Deep Supervised Hashing with Pairwise Labels",
    IJCAI 2016. Loss over the pairs of a mini-batch (``Θ_ij = ½ u_iᵀu_j``, ``b = sign(u)``)::

        L = mean_{i≠j} [ log(1 + e^{Θ_ij}) − s_ij Θ_ij ] + η · mean_i ‖b_i − u_i‖²
    """

    spec = MethodSpec("dpsh", "symmetric", trainable=True,
                      grid=lr_dropout_grid("eta", (0.1, 0.01)), budget=DEEP_BUDGET)
    Params = DPSHParams

    def loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        return dpsh_loss(net(x)[0], similarity(y), self.params.eta)


@dataclass
class HashNetParams(DeepParams):
    """HashNet: ``alpha`` = α, the sigmoid's scale; continuation ``β_t = (1 + beta_gamma·t)^½``."""

    alpha: float = 0.1
    beta_gamma: float = 0.005


class HashNetMethod(MiniBatchMethod):
    """HashNet: deep learning to hash by continuation.

    Cao, Long, Wang & Yu, "HashNet: Deep Learning to Hash by Continuation", ICCV 2017. With
    ``u = tanh(β_t z)`` (``z`` the hash layer's pre-activation, ``β_t = (1 + 0.005 t)^½`` at
    batch ``t``, as the authors' code) and class-balance weights ``w_ij``::

        L = Σ_{i≠j} w_ij [ log(1 + e^{α u_iᵀu_j}) − α s_ij u_iᵀu_j ] / Σ_{i≠j} w_ij

    Codes are ``sign(z)``, which equals ``sign(tanh(β z))`` for every β.
    """

    spec = MethodSpec("hashnet", "symmetric", trainable=True,
                      grid=lr_dropout_grid("alpha", (0.1, 0.5)), budget=DEEP_BUDGET)
    Params = HashNetParams

    def loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        beta = (1.0 + self.params.beta_gamma * step) ** 0.5
        u = torch.tanh(beta * net.hash(net.forward_features(x)))
        return hashnet_loss(u, similarity(y), self.params.alpha)


@dataclass
class DSHParams(DeepParams):
    """DSH: margin ``m = margin_factor · c`` (paper: 2c) and regulariser weight ``alpha``."""

    margin_factor: float = 2.0
    alpha: float = 0.01


class DSH(MiniBatchMethod):
    """Deep Supervised Hashing.

    Liu, Wang, Shan & Chen, "Deep Supervised Hashing for Fast Image Retrieval", CVPR 2016.
    Contrastive loss with margin ``m = 2c`` and a regulariser towards ±1::

        L = mean_{i≠j} [ ½ s_ij ‖u_i − u_j‖² + ½ (1 − s_ij) max(m − ‖u_i − u_j‖², 0) ]
            + α · mean_i ‖ |u_i| − 1 ‖₁
    """

    spec = MethodSpec("dsh", "symmetric", trainable=True,
                      grid=lr_dropout_grid("alpha", (0.01, 0.1)), budget=DEEP_BUDGET)
    Params = DSHParams

    def loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        p = self.params
        return dsh_loss(net(x)[0], similarity(y), p.margin_factor * p.n_bits, p.alpha)


@dataclass
class CSQParams(DeepParams):
    """CSQ: ``lam`` = λ, weight of the quantisation term (authors' code: 1e-4)."""

    lam: float = 1e-4


class CSQ(MiniBatchMethod):
    """Central Similarity Quantization.

    Yuan, Wang, Li, Feng, Xu, Zheng & Feng, "Central Similarity Quantization for Efficient Image
    and Video Retrieval", CVPR 2020. Each class gets a hash centre ``c_y`` (Hadamard rows, or
    seeded Bernoulli codes: :func:`~ahcl.methods.losses.class_centers`); with ``h = (u+1)/2`` and
    ``t = (c_y+1)/2``::

        L = mean_{i,k} −[ t_ik log h_ik + (1 − t_ik) log(1 − h_ik) ] + λ · mean_{i,k} (|u_ik| − 1)²

    Fitted ``centers_``: int8 (K, c).
    """

    spec = MethodSpec("csq", "symmetric", trainable=True,
                      grid=lr_dropout_grid("lam", (1e-4, 1e-2)), budget=DEEP_BUDGET)
    Params = CSQParams

    def prepare(self, labels: np.ndarray, n_classes: int) -> None:
        self.centers_ = class_centers(n_classes, self.params.n_bits, self.params.seed)
        self._centers_t = torch.from_numpy(self.centers_.astype(np.float32))

    def loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        return csq_loss(net(x)[0], self._centers_t.to(y.device)[y], self.params.lam)


"""augment.generator cvae: a conditional variational autoencoder fitted on the train split, which makes new
training examples for each class, after a quality gate has scored it on a held-back slice of that split.

The model is Sohn, Lee & Yan 2015 ("Learning Structured Output Representation using Deep Conditional
Generative Models", NeurIPS), the conditional form of Kingma & Welling 2014's VAE: an encoder q(z | x, y)
and a decoder p(x | z, y), both given the class y as a one-hot vector, trained on the evidence lower bound
(reconstruction + beta * KL(q(z | x, y) || N(0, I))). New examples of class y are the decoder's mean at
z ~ N(0, I). Images (n, c, h, w) in [0, 1] get a convolutional pair and a Bernoulli decoder (binary cross-
entropy on logits); tables (n, features) an MLP pair and a Gaussian decoder (squared error).

The gate (score_generator) holds back `holdout_fraction` of each class before the fit and reports:
  recon_ratio     the held-back examples' reconstruction error (mean squared, decoded from the posterior
                  mean) over the error of predicting each by its class's mean: below 1, the generator has
                  learnt more than the class means; an untrained one is far above 1.
  mmd_ratio       per-class maximum mean discrepancy (Gretton et al. 2012) between generated and held-back
                  examples of a class, over that between the held-back examples and the other classes' real
                  ones (mmd_ratio's docstring): near 0, generated 3s look like real 3s; at 1, no more like
                  real 3s than real 5s are; an untrained generator is above 1.
Both must be within augment.cvae's max_recon_ratio and max_mmd_ratio for the examples to be used.

On CPU the fit, the gate and the examples are deterministic: the same seed gives the same arrays. Every
epoch ends with a checkpoint (train's Checkpointer): a killed run started again resumes after it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from components.errors import UserError
from components.params import Cvae

log = logging.getLogger(__name__)

GATE_SAMPLES = 50  # generated examples per class the gate compares with the held-back ones
# Batches of at most this many values (64 digits of 8x8: 4 096) fit on one CPU thread: the small network's
# steps gain nothing from more, and on a busy machine its threads waiting for each other made a fit 6x slower
# (200 steps: 3.3 s on 1 thread, 20.9 s on 2, 2-core VM with another job running; 2026-12-01).
SMALL_BATCH = 1 << 18
MMD_PER_CLASS = 200  # examples of a class per set in the gate's MMD (its kernel matrices stay small)
MMD_OTHER_CLASSES = 10  # other classes each class is compared with, at most


class ConvCvae(nn.Module):
    """Images (n, c, h, w) in [0, 1] and one-hot classes (n, k) -> decoder logits (n, c, h, w), mu, logvar (n, latent).
    Two stride-2 convolutions down to (2*width, ceil(h/4), ceil(w/4)) and two transposed ones back up; the class
    enters the encoder as k constant channels and the decoder beside z."""

    def __init__(self, shape: tuple[int, int, int], n_classes: int, latent: int, width: int):
        super().__init__()
        c, h, w = shape
        self.shape, self.latent, self.small = shape, latent, (2 * width, -(-h // 4), -(-w // 4))
        flat = int(np.prod(self.small))
        self.encoder = nn.Sequential(
            nn.Conv2d(c + n_classes, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(flat, 2 * latent),
        )
        self.expand = nn.Sequential(nn.Linear(latent + n_classes, flat), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, c, 3, padding=1),
        )

    def encode(self, x: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        planes = onehot[:, :, None, None].expand(-1, -1, *x.shape[2:])
        mu, logvar = self.encoder(torch.cat([x, planes], dim=1)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        hidden = self.expand(torch.cat([z, onehot], dim=1)).view(-1, *self.small)
        logits = self.decoder(hidden)
        return logits[:, :, : self.shape[1], : self.shape[2]]  # 4 * ceil(h/4) may exceed h: crop back

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def reconstruction_loss(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Bernoulli negative log-likelihood per example, summed over pixels: (n,)."""
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


class MlpCvae(nn.Module):
    """Table rows (n, d) of scaled features and one-hot classes (n, k) -> decoded means (n, d), mu, logvar."""

    def __init__(self, shape: tuple[int], n_classes: int, latent: int, width: int):
        super().__init__()
        (d,) = shape
        self.shape, self.latent = shape, latent
        self.encoder = nn.Sequential(
            nn.Linear(d + n_classes, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2 * latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent + n_classes, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, d)
        )
        self.log_sigma = nn.Parameter(torch.zeros(d))  # the decoder's standard deviation per feature, log

    def encode(self, x: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(torch.cat([x, onehot], dim=1)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, onehot], dim=1))

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def reconstruction_loss(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Gaussian negative log-likelihood with a learnt variance per feature, up to a constant, (n,). With a
        fixed unit variance the KL term outweighs the small within-class spread of scaled features and the
        latent code collapses to the class means (Rybkin et al. 2021, "Simple and Effective VAE Training with
        Calibrated Decoders", ICML)."""
        return (0.5 * (out - x).pow(2) * torch.exp(-2 * self.log_sigma) + self.log_sigma).sum(1)


def build_cvae(shape: tuple[int, ...], n_classes: int, cfg: Cvae) -> ConvCvae | MlpCvae:
    """The network for examples of `shape` (without n): (c, h, w) images or (d,) table rows."""
    if len(shape) == 3:
        return ConvCvae(shape, n_classes, cfg.latent_size, cfg.width)
    if len(shape) == 1:
        return MlpCvae(shape, n_classes, cfg.latent_size, cfg.width)
    raise UserError(f"augment.generator cvae: examples of shape {shape} are neither images nor table rows")


@dataclass
class Generated:
    """What fit_and_generate made: the generated examples (in the space it was given), their labels, and
    whether the gate let them through, with the scores."""

    x: np.ndarray  # float32 (m, ...), the decoder's means
    y: np.ndarray  # int64 (m,)
    used: bool
    report: dict = field(default_factory=dict)


def holdout_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the fit slice and of the held-back slice, stratified: round(fraction * n_c) of each class
    (at least 1) is held back, none of a class with a single example. Both sorted, int64."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) >= 2:
            take = min(len(members) - 1, max(1, round(fraction * len(members))))
            held.append(rng.choice(members, take, replace=False))
    holdout = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(y)), holdout), holdout


def counts_to_generate(present: np.ndarray, cfg: Cvae) -> np.ndarray:
    """Examples to generate per class, int64 (n_classes,), given the examples per class of the training set
    (present): per_class each, or with balance the shortfall of each class to the largest (absent classes
    get none)."""
    if cfg.balance:
        return np.where(present > 0, present.max() - present, 0)
    return np.where(present > 0, cfg.per_class, 0)


def fit_and_generate(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    cfg: Cvae,
    seed: int,
    device: str = "cpu",
    checkpoints: Path | None = None,
    balance_to: np.ndarray | None = None,
) -> Generated:
    """Fit the cVAE on the train split's examples x (float32 (n, c, h, w) in [0, 1], or (n, d)) with labels
    y (int64 (n,)) minus a held-back slice, score it on that slice (module docstring), then generate
    counts_to_generate examples. cfg.seed (or `seed`) seeds everything; on CPU the result is deterministic.
    checkpoints: a folder for the per-epoch checkpoint (None: none). balance_to: examples per class of the
    training set that cfg.balance fills up (default: of y; augment passes its counts after classical
    augmentation, oversampling included). Raises UserError when the gate rejects the generator and
    cfg.on_gate_failure is fail."""
    seed = cfg.seed if cfg.seed is not None else seed
    counts = counts_to_generate(np.bincount(y, minlength=n_classes) if balance_to is None else balance_to, cfg)
    if not counts.any():  # e.g. balance after oversampling: every class is already as large as the largest
        log.warning("augment.cvae: no examples to generate (per_class 0, or balance with no class short); no fit")
        empty = np.zeros((0, *x.shape[1:]), np.float32)
        return Generated(empty, np.zeros(0, np.int64), False, {"made": 0, "used": False, "reason": "nothing to make"})
    fit_rows, held_rows = holdout_split(y, cfg.holdout_fraction, seed)
    fit_x, fit_y, epochs = x[fit_rows], y[fit_rows], epochs_for(len(fit_rows), cfg)  # one copy of the fit slice
    started = time.perf_counter()
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(device == "cpu")  # CPU: same seed, same generator
    if device == "cpu" and cfg.batch_size * int(np.prod(x.shape[1:])) <= SMALL_BATCH:
        torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):  # seeded locally, leaves the caller's RNG alone
            torch.manual_seed(seed)
            net = build_cvae(x.shape[1:], n_classes, cfg).to(device)
            path = checkpoint_file(checkpoints, x, y, cfg, seed) if checkpoints else None
            final_loss = fit(net, fit_x, fit_y, n_classes, cfg, seed, device, path)
            gate = score_generator(net, fit_x, fit_y, x[held_rows], y[held_rows], n_classes, cfg, seed)
            samples, labels = sample(net, counts, n_classes, seed + 1)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
    if path is not None:
        from components.train import remove_checkpoint

        remove_checkpoint(path)
    seconds = time.perf_counter() - started
    used = gate["passed"] or cfg.on_gate_failure == "use"
    if not gate["passed"]:
        if cfg.on_gate_failure == "fail":
            raise UserError(f"augment.cvae quality gate: {gate['reason']}; see augment.cvae in params.yaml")
        action = "using them anyway (augment.cvae.on_gate_failure: use)" if used else "using no generated examples"
        log.warning("augment.cvae quality gate failed: %s; %s", gate["reason"], action)
    log.info(
        "cVAE: %d epochs on %d examples in %.1f s on %s; recon_ratio %s, mmd_ratio %s; %d generated%s",
        epochs,
        len(fit_rows),
        seconds,
        device,
        gate["recon_ratio"],
        gate["mmd_ratio"],
        len(labels),
        "" if used else " (not used)",
    )
    report = {
        "fit_examples": len(fit_rows),
        "holdout_examples": len(held_rows),
        "epochs": epochs,
        "final_loss": final_loss,
        "made": len(labels),  # generated, whether used or not
        "gate": gate,
        "used": used,
    }
    return Generated(samples, labels, used, report)


def epochs_for(n: int, cfg: Cvae) -> int:
    """The epochs a fit on n examples runs: cfg.epochs, or more when they would make fewer than cfg.min_steps
    optimiser steps (a small train split is a few batches an epoch); 0 stays 0 (an untrained generator)."""
    if cfg.epochs == 0 or n == 0:
        return 0
    return max(cfg.epochs, -(-cfg.min_steps // -(-n // cfg.batch_size)))


def batch_loss(net: ConvCvae | MlpCvae, x: torch.Tensor, onehot: torch.Tensor, beta: float) -> torch.Tensor:
    """The negative evidence lower bound per example, averaged over the batch (Kingma & Welling 2014, eq. 10)."""
    mu, logvar = net.encode(x, onehot)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # the reparameterisation trick
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return (net.reconstruction_loss(net.decode(z, onehot), x) + beta * kl).mean()


def fit(
    net: ConvCvae | MlpCvae,
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    cfg: Cvae,
    seed: int,
    device: str,
    checkpoint: Path | None,
) -> float | None:
    """Adam on the ELBO for epochs_for(n, cfg) epochs; returns the last epoch's mean loss (None after none)."""
    from components.train import Checkpointer, resume_from

    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    onehot = F.one_hot(torch.from_numpy(y), n_classes).float().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    order = torch.Generator().manual_seed(seed)
    state: dict = {"epoch": 0, "loss": None}
    if checkpoint is not None and cfg.resume and checkpoint.exists():
        state = resume_from(checkpoint, net, optimizer, order) or state
    checkpointer = Checkpointer(checkpoint)
    bar = tqdm(range(state["epoch"] + 1, epochs_for(len(data), cfg) + 1), desc="cvae", unit="epoch", disable=None)
    for epoch in bar:
        net.train()
        total = torch.zeros((), device=device)
        for batch in torch.randperm(len(data), generator=order).to(device).split(cfg.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(net, data[batch], onehot[batch], cfg.beta)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(batch)
        if not torch.isfinite(total):  # diverged: later epochs cannot recover, and the gate will reject it
            log.warning("augment.cvae: the loss became %s in epoch %d; lower augment.cvae.lr", float(total), epoch)
            state["loss"] = None
            break
        state = {"epoch": epoch, "loss": round(float(total) / len(data), 6)}
        bar.set_postfix(loss=state["loss"])
        checkpointer.save(state, net, optimizer, order)
    checkpointer.wait()
    return state["loss"]


@torch.no_grad()
def reconstruct(net: ConvCvae | MlpCvae, x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Decoded means of x's posterior means: float32, x's shape."""
    net.eval()
    device = next(net.parameters()).device
    out = []
    for start in range(0, len(x), 1024):  # a big held-back slice of big images, a batch at a time
        data = torch.from_numpy(np.ascontiguousarray(x[start : start + 1024], dtype=np.float32)).to(device)
        onehot = F.one_hot(torch.from_numpy(y[start : start + 1024]), n_classes).float().to(device)
        mu, _ = net.encode(data, onehot)
        out.append(net.mean(net.decode(mu, onehot)).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def sample(net: ConvCvae | MlpCvae, counts: np.ndarray, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """counts[c] new examples of each class c: the decoder's means at z ~ N(0, I), drawn from a generator
    seeded with `seed` on the CPU (the same draws on any device). Returns (float32 (m, ...), int64 (m,))."""
    net.eval()
    device = next(net.parameters()).device
    labels = np.repeat(np.arange(n_classes), counts).astype(np.int64)
    z = torch.randn(len(labels), net.latent, generator=torch.Generator().manual_seed(seed))
    onehot = F.one_hot(torch.from_numpy(labels), n_classes).float()
    pairs = zip(z.split(4096), onehot.split(4096), strict=True)
    out = [net.mean(net.decode(zs.to(device), hs.to(device))).cpu() for zs, hs in pairs]
    return (torch.cat(out).numpy() if out else np.zeros((0, *net.shape), np.float32)), labels


def score_generator(
    net: ConvCvae | MlpCvae,
    fit_x: np.ndarray,
    fit_y: np.ndarray,
    held_x: np.ndarray,
    held_y: np.ndarray,
    n_classes: int,
    cfg: Cvae,
    seed: int,
) -> dict:
    """The quality gate (module docstring) on the held-back slice: {recon_ratio, mmd_ratio, the two
    thresholds, passed, reason}. With fewer than 4 held-back examples it cannot score, and does not pass."""
    thresholds = {"max_recon_ratio": cfg.max_recon_ratio, "max_mmd_ratio": cfg.max_mmd_ratio}
    if len(held_y) < 4:
        reason = f"only {len(held_y)} held-back examples (need 4); raise augment.cvae.holdout_fraction"
        return {"recon_ratio": None, "mmd_ratio": None, **thresholds, "passed": False, "reason": reason}
    flat_held = held_x.reshape(len(held_x), -1).astype(np.float64)
    recon = reconstruct(net, held_x, held_y, n_classes).reshape(len(held_x), -1)
    flat_fit = fit_x.reshape(len(fit_x), -1)
    class_means = {c: flat_fit[fit_y == c].mean(0) for c in np.unique(held_y)}
    means = np.stack([class_means[c] for c in held_y])
    recon_ratio = float(((recon - flat_held) ** 2).mean() / max(((means - flat_held) ** 2).mean(), 1e-12))
    present = np.bincount(held_y, minlength=n_classes) > 0
    generated, generated_y = sample(net, np.where(present, GATE_SAMPLES, 0), n_classes, seed + 2)
    mmd = mmd_ratio(flat_fit, fit_y, flat_held, held_y, generated.reshape(len(generated), -1), generated_y)
    problems = []
    if not recon_ratio <= cfg.max_recon_ratio:  # written so that NaN fails
        problems.append(f"reconstruction error ratio {recon_ratio:.3f} > max_recon_ratio {cfg.max_recon_ratio}")
    if not mmd <= cfg.max_mmd_ratio:
        problems.append(f"per-class MMD ratio {mmd:.3f} > max_mmd_ratio {cfg.max_mmd_ratio}")
    return {
        "holdout_min_per_class": int(np.bincount(held_y)[np.unique(held_y)].min()),  # 1: a noisy MMD
        "recon_ratio": round(recon_ratio, 6) if np.isfinite(recon_ratio) else None,  # JSON has no NaN or inf
        "mmd_ratio": round(mmd, 6) if np.isfinite(mmd) else None,
        **thresholds,
        "passed": not problems,
        "reason": "; ".join(problems) or "passed",
    }


def mmd_ratio(
    fit_x: np.ndarray, fit_y: np.ndarray, held_x: np.ndarray, held_y: np.ndarray, gen_x: np.ndarray, gen_y: np.ndarray
) -> float:
    """Per-class MMD between generated and held-back real examples, relative to the MMD between the held-back
    examples of each class and the real (fit-slice) examples of the other classes; all (n, d) float arrays and
    int labels. Mean over classes of MMD^2(generated c, held c) / mean over classes of the mean over other classes
    c' of MMD^2(fit c', held c): below 1, a class's generated examples are closer to its real ones than other
    classes' real examples are. Biased MMD^2 estimate with a Gaussian kernel, bandwidth by the median heuristic
    (Gretton et al. 2012, "A Kernel Two-Sample Test", JMLR 13, eq. 5 and section 8); at most 200 examples of a
    class per set, and at most 10 other classes per class. Non-finite generated values give inf."""
    if not np.isfinite(gen_x).all():
        return float("inf")
    rng = np.random.default_rng(0)

    def members(x: np.ndarray, y: np.ndarray, c) -> np.ndarray:
        rows = np.flatnonzero(y == c)
        return x[rng.choice(rows, MMD_PER_CLASS, replace=False) if len(rows) > MMD_PER_CLASS else rows]

    def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # (len(a), len(b)), one matrix product
        return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0)

    fit_sets = {c: members(fit_x, fit_y, c).astype(np.float64) for c in np.unique(fit_y)}
    pooled = np.concatenate(list(fit_sets.values()))
    pooled = pooled[rng.choice(len(pooled), min(len(pooled), 500), replace=False)]
    scale = float(np.median(squared_distances(pooled, pooled)[np.triu_indices(len(pooled), 1)])) or 1.0

    def kernel_mean(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-squared_distances(a, b) / scale).mean())

    fit_self = {c: kernel_mean(s, s) for c, s in fit_sets.items()}
    near, far = [], []
    for c in [c for c in np.unique(held_y) if (gen_y == c).any()]:
        held, gen = members(held_x, held_y, c).astype(np.float64), members(gen_x, gen_y, c).astype(np.float64)
        held_self = kernel_mean(held, held)
        near.append(kernel_mean(gen, gen) + held_self - 2 * kernel_mean(gen, held))
        others = [o for o in fit_sets if o != c]
        if len(others) > MMD_OTHER_CLASSES:
            others = [others[i] for i in rng.choice(len(others), MMD_OTHER_CLASSES, replace=False)]
        if others:
            far.append(np.mean([fit_self[o] + held_self - 2 * kernel_mean(fit_sets[o], held) for o in others]))
    return float(np.mean(near) / max(np.mean(far), 1e-12)) if near and far else float("inf")


def checkpoint_file(directory: Path, x: np.ndarray, y: np.ndarray, cfg: Cvae, seed: int) -> Path:
    """One checkpoint file per (examples, cvae params but resume, seed): a run resumes only its own."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    digest.update(f"{cfg.model_dump_json(exclude={'resume'})} seed={seed}".encode())
    return directory / f"cvae-{digest.hexdigest()[:16]}.pt"

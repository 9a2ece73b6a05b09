"""Train throughput: the train component's `fit` against a bare PyTorch loop on the same model, data,
batch size, epochs and precision, in the same process; on CUDA also the GPU busy fraction of `fit`.

The bare loop is what a person would write by hand for the fastest run: data on the device, one
randperm per epoch, no validation, no checkpoint, no history. The component does all of those (a
checkpoint every epoch, as in the train stage), so the ratio is what they cost.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from components.model import build_model, model_config
from components.params import Params, Train
from components.train import Placement, fit

# What each device trains: the product's digits CNN on CPU; on a GPU a ResNet-18 on CIFAR-sized images.
SETUPS = {
    "cpu": {"arch": "cnn", "shape": (1, 8, 8), "n": 16384, "batch_size": 64, "epochs": 3},
    "cuda": {"arch": "resnet18", "shape": (3, 32, 32), "n": 50000, "batch_size": 256, "epochs": 3},
}


def synthetic(n: int, shape: tuple, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standardised images whose class shifts their mean, so training has something to learn."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.standard_normal((n, *shape), dtype=np.float32) + (y / classes).astype(np.float32)[:, None, None, None]
    return x, y


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(x: np.ndarray, y: np.ndarray, cfg: Train, device: torch.device, deterministic: bool = False) -> float:
    """Seconds for cfg.epochs epochs of the plainest fast loop: same model, optimiser, batch, precision
    and, when asked, the component's deterministic algorithms (which it uses on CPU)."""
    cuda = device.type == "cuda"
    torch.use_deterministic_algorithms(deterministic)
    torch.manual_seed(0)
    net = build_model(model_config(x, [str(c) for c in range(10)], Params(train=cfg)))
    net = net.to(device, memory_format=torch.channels_last if cuda else torch.preserve_format).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    precision = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    sync(device)
    start = time.perf_counter()
    xs, ys = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    if cuda:
        xs = xs.contiguous(memory_format=torch.channels_last)
    for _ in range(cfg.epochs):
        for batch in torch.randperm(len(xs), device=device).split(cfg.batch_size):
            with precision:
                loss = F.cross_entropy(net(xs[batch]), ys[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    sync(device)
    torch.use_deterministic_algorithms(False)
    return time.perf_counter() - start


def component(x, y, val_x, val_y, cfg: Train, device: torch.device) -> float:
    """Seconds for `fit` as the train stage runs it: validation and a checkpoint every epoch included."""
    with tempfile.TemporaryDirectory() as checkpoints:
        sync(device)
        start = time.perf_counter()
        fit(x, y, val_x, val_y, 10, cfg, seed=0, place=Placement(device), checkpoint=Path(checkpoints) / "ck.pt")
        sync(device)
        return time.perf_counter() - start


def gpu_busy_fraction(x, y, val_x, val_y, cfg: Train, device: torch.device) -> float:
    """Share of the wall time of one `fit` in which the GPU runs kernels or copies (torch profiler).
    The profiler's own CPU cost makes this a lower bound."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    one_epoch = cfg.model_copy(update={"epochs": 1, "patience": 1})  # enough steps, fewer profiler events
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        fit(x, y, val_x, val_y, 10, one_epoch, seed=0, place=Placement(device))
        sync(device)
        wall_us = (time.perf_counter() - start) * 1e6
    # Kernels and copies only, each once: CPU ops also carry their kernels' time, annotations span them.
    busy_us = sum(
        event.self_device_time_total
        for event in prof.key_averages()
        if event.device_type == DeviceType.CUDA and not event.is_user_annotation
    )
    return busy_us / wall_us


def run(device: str, quick: bool = False, repeats: int = 2) -> dict:
    setup = dict(SETUPS[device])
    if quick:
        setup.update(n=1024, epochs=1, arch="cnn", shape=(1, 8, 8))
    dev = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device(device)
    x, y = synthetic(setup["n"], setup["shape"])
    val_x, val_y = synthetic(max(256, setup["n"] // 20), setup["shape"], seed=1)
    cfg = Train(
        arch=setup["arch"],
        epochs=setup["epochs"],
        patience=setup["epochs"],
        batch_size=setup["batch_size"],
        device=device,
    )
    warm_up = setup["batch_size"] * 8  # CUDA context, cuDNN autotuning, lazy kernels
    bare_loop(x[:warm_up], y[:warm_up], cfg.model_copy(update={"epochs": 1}), dev)
    # Interleaved, best of `repeats` each: a slow moment on the machine does not pick the winner.
    # The baseline runs with the component's numerics (deterministic on CPU; bf16 + channels_last on CUDA),
    # so the ratio is the cost of the component's work around the loop; what determinism itself costs on
    # CPU is reported beside it, against the bare loop without it.
    deterministic = device == "cpu"
    bare_s, fit_s, free_s = [], [], []
    for _ in range(repeats):
        bare_s.append(bare_loop(x, y, cfg, dev, deterministic))
        fit_s.append(component(x, y, val_x, val_y, cfg, dev))
        if deterministic:
            free_s.append(bare_loop(x, y, cfg, dev))
    samples = setup["n"] * setup["epochs"]
    result = {
        "train_model": f"{setup['arch']} on {'x'.join(map(str, setup['shape']))} synthetic images, "
        f"batch {setup['batch_size']}, {setup['epochs']} epochs of {setup['n']}",
        "train_component_samples_per_s": round(samples / min(fit_s), 1),
        "train_bare_loop_samples_per_s": round(samples / min(bare_s), 1),
        "train_throughput_ratio": round(min(bare_s) / min(fit_s), 3),
        "train_bare_loop_nondeterministic_samples_per_s": round(samples / min(free_s), 1) if free_s else None,
        "gpu_busy_fraction": None,
    }
    if device == "cuda":
        result["gpu_busy_fraction"] = round(gpu_busy_fraction(x, y, val_x, val_y, cfg, dev), 3)
    return result

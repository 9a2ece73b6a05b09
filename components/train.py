"""train: a CNN (images) or MLP (tables), Adam and cross-entropy, early-stopped on validation macro-F1 with
ties broken by validation loss, or on validation loss when the validation split is too small for macro-F1
to tell epochs apart (train.monitor).

On a GPU the whole loop stays on the device: the data set is copied once (pinned, non-blocking) when it
fits, batches are cut on the device, bf16 autocast and channels_last run the convolutions on tensor
cores, and the only host syncs are once per epoch. On CPU the run is deterministic. `train.gpus > 1`
relaunches this module under torchrun: one process per GPU (or CPU processes with gloo), DDP. Started by
torchrun on several nodes (a Kubeflow Trainer TrainJob, pipelines/trainjob.py), it runs the same way
across all of them; global rank 0 writes the outputs and the checkpoint.

Every epoch ends with a checkpoint in --checkpoints; a killed run started again with the same inputs
and params (`train.resume: true`) continues after the last finished epoch and ends with the same model.

Needs no MLflow: the per-epoch history and the device go to files, and register logs them to the run,
so a tracking server that is down never costs a training run. What it writes for DVC is a function of
its inputs and params alone (on CPU, bit for bit); the wall-clock times go to --timing, which is not.

    python -m components.train --train outputs/augmented/train.npz --val outputs/split/val.npz \\
        --model outputs/model.pt --info outputs/train_info.json --history reports/plots/training.csv \\
        --checkpoints outputs/checkpoints --timing outputs/timing/train.json
"""

import argparse
import contextlib
import csv
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.metrics import f1_score
from tqdm import tqdm

from components import kinds
from components.errors import UserError, run_cli
from components.io import atomic_path, files_digest, load_arrays, write_json
from components.model import build_model, model_config, resolve_device, save_model, weights_hash
from components.params import Params, Train, load_params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where this process trains: its device, and its rank among `world` data-parallel processes."""

    device: torch.device
    rank: int = 0
    world: int = 1


def on_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """The whole array on the GPU when it takes under a quarter of the free memory (one pinned,
    non-blocking copy); otherwise in pinned host memory, copied batch by batch."""
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor
    free_bytes, _ = torch.cuda.mem_get_info(device)
    pinned = tensor.pin_memory()
    return pinned.to(device, non_blocking=True) if tensor.nbytes < free_bytes // 4 else pinned


def take(data: torch.Tensor, index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rows `index` of `data` on `device`; images in channels_last, the layout tensor cores want."""
    if data.device.type != device.type:  # a data set too big for the GPU: copy this batch only
        data = data[index.cpu()].pin_memory().to(device, non_blocking=True)
    else:
        data = data[index]
    return data.contiguous(memory_format=torch.channels_last) if data.ndim == 4 and device.type == "cuda" else data


@torch.no_grad()
def validate(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, precision, batch_size: int = 1024
) -> tuple[np.ndarray, float]:
    """Predicted classes (int64, (n,)) and mean cross-entropy (nats per example, computed in fp32) on a split."""
    net.eval()
    index = torch.arange(len(x), device=x.device)
    predicted, loss = [], torch.zeros((), device=device)
    with precision:
        for batch in index.split(batch_size):
            logits = net(take(x, batch, device))
            predicted.append(logits.argmax(dim=1))
            loss += F.cross_entropy(logits.float(), take(y, batch, device), reduction="sum")
    return torch.cat(predicted).cpu().numpy(), (loss / max(len(x), 1)).item()  # one host sync per call


MIN_VAL_PER_CLASS = 10  # train.monitor auto: fewer validation examples per class than this -> val_loss (our choice)


def resolve_monitor(monitor: str, n_val: int, n_classes: int) -> str:
    """train.monitor: 'auto' is val_loss when the validation split has fewer than MIN_VAL_PER_CLASS
    examples per class, else val_macro_f1. With k examples a class, one prediction moves its recall by
    1/k: on 9 rows macro-F1 takes a handful of values, reaches 1.0 by luck with near-uniform
    probabilities, and then no later epoch can beat it; the loss (a proper scoring rule) keeps ranking them."""
    if monitor != "auto":
        return monitor
    return "val_loss" if n_val < MIN_VAL_PER_CLASS * n_classes else "val_macro_f1"


def epoch_score(monitor: str, f1: float, loss: float) -> tuple[float, float]:
    """What ranks epochs, higher is better: macro-F1 with ties broken by a lower loss, or a lower loss
    with ties broken by macro-F1."""
    return (-loss, f1) if monitor == "val_loss" else (f1, -loss)


def fit(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    n_classes: int,
    cfg: Train,
    seed: int,
    place: Placement = Placement(torch.device("cpu")),
    checkpoint: Path | None = None,
    params: Params | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[torch.nn.Module, list[dict]]:
    """Train on model input (images float32 (n, c, h, w); table rows float32 (n, d); token ids int64 (n, L))
    the network of its data kind; return the net at its best validation score and the history. With a
    checkpoint path: save there every epoch, and start from it when cfg.resume says so. params: the other
    sections the network reads (text.*; default: the schema's), with cfg as its train section. on_epoch: called
    on rank 0 with each epoch's history row (epoch, train_loss, val_loss, val_macro_f1, time_ms); an exception
    it raises (a tuning trial pruned) ends training."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(place.device.type == "cpu")  # CPU: same seed, same model
    try:
        params = (params or Params.model_construct()).model_copy(update={"train": cfg})
        return _fit(train_x, train_y, val_x, val_y, n_classes, cfg, seed, place, checkpoint, params, on_epoch)
    finally:
        torch.use_deterministic_algorithms(deterministic)  # the caller's setting, as it was


def _fit(train_x, train_y, val_x, val_y, n_classes, cfg, seed, place, checkpoint, params, on_epoch=None):
    device, cuda = place.device, place.device.type == "cuda"
    torch.manual_seed(seed)
    config = model_config(train_x, [str(c) for c in range(n_classes)], params)
    # Module.to takes a device and a memory_format together; torch's stubs list them in separate overloads.
    net = build_model(config, params).to(device, memory_format=torch.channels_last if cuda else torch.preserve_format)  # type: ignore[call-overload]
    optimizer = make_optimizer(net, cfg)
    order = torch.Generator().manual_seed(seed)  # the shuffle, identical in every process
    state: dict[str, Any] = {
        "epoch": 0,
        "history": [],
        "best_f1": -1.0,
        "best_loss": float("inf"),
        "best_state": None,
        "stale_epochs": 0,
    }
    # Each process takes every world-th example of one shared shuffle: equal shares, disjoint, and
    # cfg.batch_size examples per optimiser step in total, whatever the number of processes.
    usable, local_batch = len(train_x) - len(train_x) % place.world, max(1, cfg.batch_size // place.world)
    sizes = kinds.for_model_input(train_x).example_lengths(train_x, config)
    lengths = sizes if cfg.bucket_by_length else None
    steps_per_epoch = -(-(usable // place.world) // local_batch)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch * cfg.epochs)
    if checkpoint is not None and cfg.resume and checkpoint.exists():
        state = resume_from(checkpoint, net, optimizer, order, scheduler) or state

    model = torch.nn.parallel.DistributedDataParallel(net) if place.world > 1 else net
    step_model = torch.compile(model) if cfg.compile else model
    # bf16 on GPUs that compute in it (Ampere and later); older ones would only emulate it, slowly.
    bf16 = cuda and cfg.mixed_precision == "bf16" and torch.cuda.is_bf16_supported(including_emulation=False)
    precision = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    x, y = on_device(train_x, device), on_device(train_y, device)
    val, val_labels = on_device(val_x, device), on_device(val_y, device)
    monitor = resolve_monitor(cfg.monitor, len(val_y), n_classes)
    # Examples of varying length (texts) validate at the training batch size: 1024 long texts would not fit.
    val_batch = 1024 if sizes is None else cfg.batch_size
    micro = max(1, (cfg.micro_batch_size or cfg.batch_size) // place.world)
    trainable = [p for p in net.parameters() if p.requires_grad]
    checkpointer = Checkpointer(checkpoint if place.rank == 0 else None)

    # A run killed after its early-stopping epoch was checkpointed has no epoch left to train.
    first_epoch = state["epoch"] + 1 if state["stale_epochs"] < cfg.patience else cfg.epochs + 1
    bar = tqdm(
        range(first_epoch, cfg.epochs + 1), desc="train", unit="epoch", disable=None if place.rank == 0 else True
    )  # None: only on a terminal
    for epoch in bar:
        net.train()
        loss_sum = torch.zeros((), device=device)  # accumulated on the device: no host sync per step
        shuffle = torch.randperm(len(x), generator=order)[place.rank : usable : place.world]
        for batch in batches(shuffle, local_batch, lengths if cfg.bucket_by_length else None, order, x.device):
            optimizer.zero_grad(set_to_none=True)
            for part in batch.split(micro):  # gradient accumulation: micro-batches add up to one step
                with precision:
                    loss = F.cross_entropy(step_model(take(x, part, device)), take(y, part, device))
                (loss * (len(part) / len(batch)) if len(part) < len(batch) else loss).backward()
                loss_sum += loss.detach().float() * len(part)
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()

        if place.world > 1:
            dist.all_reduce(loss_sum)
        # Rank 0 judges the epoch and tells the others, so every process stops at the same epoch.
        judged = torch.tensor([-1.0, 0.0], device=device)  # validation macro-F1, loss
        if place.rank == 0:
            val_pred, val_loss = validate(net, val, val_labels, device, precision, val_batch)
            judged[0], judged[1] = f1_score(val_y, val_pred, average="macro", zero_division=0), val_loss
        if place.world > 1:
            dist.broadcast(judged, src=0)
        val_f1, val_loss = judged.tolist()
        row = {
            "epoch": epoch,
            "train_loss": round((loss_sum / usable).item(), 6),
            "val_loss": round(val_loss, 6),
            "val_macro_f1": round(val_f1, 6),
            "time_ms": int(time.time() * 1000),
        }  # so MLflow's curves keep their wall-clock axis
        state["history"].append(row)
        bar.set_postfix(loss=row["train_loss"], val_f1=row["val_macro_f1"])

        state["epoch"] = epoch
        if epoch_score(monitor, row["val_macro_f1"], row["val_loss"]) > epoch_score(
            monitor, state["best_f1"], state.get("best_loss", float("inf"))
        ):
            state.update(
                best_f1=row["val_macro_f1"],
                best_loss=row["val_loss"],
                stale_epochs=0,
                best_state={k: v.detach().clone() for k, v in net.state_dict().items()},
            )
        else:
            state["stale_epochs"] += 1
        checkpointer.save(state, net, optimizer, order, scheduler)
        if on_epoch is not None and place.rank == 0:
            on_epoch(row)
        if state["stale_epochs"] >= cfg.patience:
            log.info("early stop after epoch %d: no better %s for %d epochs", epoch, monitor, cfg.patience)
            break
    checkpointer.wait()
    net.load_state_dict(state["best_state"])
    return net.eval(), state["history"]


def make_optimizer(net: torch.nn.Module, cfg: Train) -> torch.optim.Optimizer:
    """train.optimizer over the parameters that train (train.freeze_layers fixes some). AdamW decays the
    weight matrices only, not biases and LayerNorm weights (1-D), as BERT's fine-tuning code does."""
    trainable = [p for p in net.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        groups = [
            {"params": [p for p in trainable if p.ndim > 1], "weight_decay": cfg.weight_decay},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: Train, total_steps: int):
    """train.warmup_fraction of the steps with the lr rising linearly from 0, then (lr_decay: linear) falling
    linearly to 0 at the last step: transformers' get_linear_schedule_with_warmup. None: a constant lr."""
    warmup = int(cfg.warmup_fraction * total_steps)
    if warmup == 0 and cfg.lr_decay == "none":
        return None

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        if cfg.lr_decay == "none":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


MEGABATCH = 50  # batches sorted together by length: transformers' LengthGroupedSampler uses 50 too


def batches(
    shuffle: torch.Tensor, size: int, lengths: np.ndarray | None, order: torch.Generator, device: torch.device
) -> list[torch.Tensor]:
    """This epoch's batches of example indices. With lengths (texts): the shuffle is cut into runs of
    MEGABATCH batches, each run sorted by length so that a batch holds texts of similar lengths (little
    padding), and the batches are then put in random order; without, the shuffle cut in order."""
    if lengths is None:
        return list(shuffle.to(device, non_blocking=True).split(size))
    key = torch.from_numpy(np.asarray(lengths))
    cut = []
    for run in shuffle.split(size * MEGABATCH):
        ranked = run[torch.argsort(key[run], descending=True, stable=True)]
        cut += list(ranked.split(size))
    return [cut[i].to(device, non_blocking=True) for i in torch.randperm(len(cut), generator=order).tolist()]


class Checkpointer:
    """Writes each epoch's checkpoint in a background thread, so training does not wait for the disk
    (a ResNet-18 checkpoint is ~180 MB). The state is copied to host memory first, because the next
    epoch changes it in place; files are written atomically, one at a time. path None: saves nothing."""

    def __init__(self, path: Path | None):
        self.path = path
        self.pending: Future | None = None
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")

    def save(
        self,
        state: dict,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        order: torch.Generator,
        scheduler=None,
    ) -> None:
        """Everything the next epoch depends on, random number generators and the lr schedule included."""
        if self.path is None:
            return
        snapshot = to_host(
            {
                **state,
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "order_rng": order.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            }
        )
        self.wait()
        self.pending = self.writer.submit(self._write, snapshot)

    def _write(self, snapshot: dict) -> None:
        assert self.path is not None  # save() writes nothing without a path
        with atomic_path(self.path) as tmp, open(tmp, "wb") as fh:
            torch.save(snapshot, fh)
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the rename: a node crash leaves the old file or the new

    def wait(self) -> None:
        """Until the last checkpoint is on disk (re-raising its error, if writing it failed)."""
        if self.pending is not None:
            self.pending.result()
            self.pending = None


def to_host(obj):
    """A copy of obj (tensors in dicts and lists) in host memory, untouched by later in-place updates."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: to_host(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_host(value) for value in obj)
    return obj


def resume_from(
    path: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, order: torch.Generator, scheduler=None
) -> dict | None:
    """Restore a checkpoint into net, optimizer and the generators; None if it cannot be read.
    Bit-identical continuation is promised on CPU; on GPUs only rank 0's CUDA generator is saved."""
    try:
        # On the CPU: load_state_dict moves weights and optimiser state to the parameters' device but
        # leaves Adam's step counters where they are, and on a GPU they would cost a sync every step.
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint must not fail every retry
        log.warning("ignoring unreadable checkpoint %s (%s); training from epoch 1", path, exc.__class__.__name__)
        path.unlink(missing_ok=True)
        return None
    net.load_state_dict(saved.pop("model"))
    optimizer.load_state_dict(saved.pop("optimizer"))
    schedule = saved.pop("scheduler", {})
    if scheduler is not None and schedule:
        scheduler.load_state_dict(schedule)
    order.set_state(saved.pop("order_rng").cpu())
    torch.set_rng_state(saved.pop("torch_rng").cpu())
    cuda_rng = saved.pop("cuda_rng")
    if cuda_rng and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_rng)
    log.info("resuming after epoch %d from %s", saved["epoch"], path)
    return saved


def checkpoint_path(directory: Path, files: list[Path], params: Params, world: int) -> Path:
    """One checkpoint file per (inputs, train params, seed, processes): a run resumes only its own."""
    digest = files_digest(files)
    digest.update(params.train.model_dump_json(exclude={"resume", "compile"}).encode())
    digest.update(params.text.model_dump_json().encode())  # the text network's sizes
    digest.update(f"seed={params.seed} world={world}".encode())
    return directory / f"train-{digest.hexdigest()[:16]}.pt"


def remove_checkpoint(path: Path) -> None:
    """A finished run's checkpoint, and any temporary file a kill left beside it."""
    for leftover in [path, *path.parent.glob(f".{path.name}.*")]:
        leftover.unlink(missing_ok=True)


def write_history(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def placement(params: Params) -> Placement:
    """This process's device and rank; under torchrun, joins the process group first: LOCAL_RANK picks
    this node's GPU, the global rank and world span every node (a multi-node TrainJob's torchrun)."""
    device = resolve_device(params.train.device)
    if "LOCAL_RANK" not in os.environ:  # an indexed device: tensors report cuda:0, never plain cuda
        if device != "cuda":
            return Placement(torch.device(device))
        return Placement(torch.device(device, torch.cuda.current_device()))
    local_rank = int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"params.yaml: train.gpus is {os.environ['LOCAL_WORLD_SIZE']} but only "
                f"{torch.cuda.device_count()} GPU(s) are visible; lower train.gpus"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return Placement(
        torch.device(device, local_rank) if device == "cuda" else torch.device("cpu"),
        dist.get_rank(),
        dist.get_world_size(),
    )


def train_files(
    train_path: Path,
    val_path: Path,
    params: Params,
    model_path: Path,
    info_path: Path,
    history_path: Path,
    checkpoints: Path | None = None,
    timing_path: Path | None = None,
) -> dict | None:
    """Train on the augmented set; rank 0 writes the model, the per-epoch history and what register
    logs about it, and removes the checkpoint (other ranks return None). Clock times (when training
    started, when each epoch ended, in ms since the epoch) go to timing_path only, keyed by the weights
    hash, so that the files DVC tracks stay the same bytes for the same inputs."""
    started_ms = int(time.time() * 1000)
    place = placement(params)
    try:
        train, val = load_inputs(train_path, ("x", "y", "classes")), load_inputs(val_path, ("x", "y"))
        if train["x"].shape[1:] != val["x"].shape[1:]:
            raise UserError(
                f"{val_path}: examples of shape {val['x'].shape[1:]}, but {train_path} holds "
                f"{train['x'].shape[1:]}; rerun the stages before train (dvc repro)"
            )
        classes = train["classes"].tolist()
        checkpoint = checkpoint_path(checkpoints, [train_path, val_path], params, place.world) if checkpoints else None
        net, history = fit(
            train["x"],
            train["y"],
            val["x"],
            val["y"],
            len(classes),
            params.train,
            params.seed,
            place,
            checkpoint,
            params,
        )
    finally:
        if place.world > 1:
            dist.destroy_process_group()
    if place.rank != 0:
        return None
    monitor = resolve_monitor(params.train.monitor, len(val["y"]), len(classes))
    best = max(history, key=lambda row: epoch_score(monitor, row["val_macro_f1"], row["val_loss"]))  # what fit kept
    save_model(model_path, net.cpu(), model_config(train["x"], classes, params))
    write_history(history_path, [{k: v for k, v in row.items() if k != "time_ms"} for row in history])
    info = {
        "device": torch.cuda.get_device_name() if place.device.type == "cuda" else "cpu",
        "processes": place.world,
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "best_val_macro_f1": best["val_macro_f1"],
        "best_val_loss": best["val_loss"],
        "monitor": monitor,
        "weights_hash": weights_hash(model_path),
    }
    write_json(info_path, info)
    if timing_path is not None:
        write_json(
            timing_path,
            {
                "weights_hash": info["weights_hash"],
                "started_ms": started_ms,
                "epoch_end_ms": [row["time_ms"] for row in history],
            },
        )
    if checkpoint is not None:
        remove_checkpoint(checkpoint)
    log.info(
        "best epoch by %s: %d of %d, validation macro-F1 %.4f, loss %.4f (%d x %s)",
        monitor,
        best["epoch"],
        len(history),
        best["val_macro_f1"],
        best["val_loss"],
        place.world,
        info["device"],
    )
    return info


def load_inputs(path: Path, keys: tuple[str, ...], arrays: bool = True) -> dict[str, np.ndarray]:
    """An input .npz with `keys` (only checked when arrays=False). Raises UserError naming the file."""
    loaded: dict
    try:
        if arrays:
            loaded = load_arrays(path)
        else:
            with np.load(path, allow_pickle=False) as npz:
                loaded = dict.fromkeys(npz.files)  # the keys only
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run the stages before train (dvc repro)") from None
    except Exception as exc:  # noqa: BLE001 - numpy and zipfile raise many types for a damaged file
        raise UserError(
            f"{path}: not a readable .npz file ({exc.__class__.__name__}); rerun the stage that writes it (dvc repro)"
        ) from None
    missing = [key for key in keys if key not in loaded]
    if missing:
        raise UserError(f"{path}: has no {', '.join(missing)} array; rerun the stage that writes it (dvc repro)")
    return loaded


def launch_distributed(processes: int, argv: list[str]) -> None:
    """Run this module again in `processes` workers on this machine, one per GPU (or CPU process), with
    torchrun's own launcher (what `torchrun --standalone` calls), so a failure is ours to report."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    log.info("train.gpus = %d: starting %d data-parallel processes with torchrun", processes, processes)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # we report failures in one line
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))  # no oversubscription
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "components.train", *argv)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()  # any worker may be the first to fail
        if isinstance(failure.message, str) and failure.message.startswith("error"):  # its own one-line error
            raise UserError(f"train: torchrun worker {rank} failed: {failure.message}") from None
        how = f"killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exit {failure.exitcode}"
        raise UserError(
            f"train: torchrun worker {rank} failed ({how}); if it was killed (out of memory, a preempted "
            "node), rerun and training resumes from the last epoch checkpoint"
        ) from None


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Train the classifier.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", type=Path, required=True, help="augmented training set (.npz)")
    parser.add_argument("--val", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--info", type=Path, required=True, help="device and best epoch, for register")
    parser.add_argument("--history", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, help="folder for the per-epoch checkpoint (none if omitted)")
    parser.add_argument("--timing", type=Path, help="clock times for register (not a DVC output: they differ per run)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if params.train.gpus > 1 and "LOCAL_RANK" not in os.environ:
        visible = torch.cuda.device_count()
        if resolve_device(params.train.device) == "cuda" and visible < params.train.gpus:
            raise UserError(
                f"{args.params}: train.gpus is {params.train.gpus} but {visible} GPU(s) are visible; lower train.gpus"
            )
        # Bad input is found here, once, rather than by every worker at the same moment.
        load_inputs(args.train, ("x", "y", "classes"), arrays=False)
        load_inputs(args.val, ("x", "y"), arrays=False)
        launch_distributed(params.train.gpus, argv)
    else:
        train_files(args.train, args.val, params, args.model, args.info, args.history, args.checkpoints, args.timing)


if __name__ == "__main__":
    run_cli(main)

"""train: a small CNN (images) or MLP (tables), Adam and cross-entropy, early-stopped on validation macro-F1.

Needs no MLflow: the per-epoch history and the device go to files, and register logs them to the run,
so a tracking server that is down never costs a training run.

    python -m components.train --train outputs/augmented/train.npz --val outputs/split/val.npz \
        --model outputs/model.pt --info outputs/train_info.json --history reports/plots/training.csv
"""

import argparse
import copy
import csv
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from tqdm import tqdm

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.errors import run_cli
from components.io import atomic_path, load_arrays, write_json
from components.model import build_model, model_config, predict_proba, resolve_device, save_model
from components.params import Params, Train, load_params

log = logging.getLogger(__name__)


def fit(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, n_classes: int,
        cfg: Train, seed: int, device: str) -> tuple[torch.nn.Module, list[dict]]:
    """Train on preprocessed inputs (images (n, c, h, w): a CNN; table rows (n, d): an MLP);
    return the net at its best validation macro-F1 and the history."""
    torch.manual_seed(seed)
    if device == "cpu":
        torch.use_deterministic_algorithms(True)      # same seed, same model, on CPU
    net = build_model(model_config(train_x, [str(c) for c in range(n_classes)], cfg.width, cfg.hidden)).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    x, y = torch.from_numpy(train_x).to(device), torch.from_numpy(train_y).to(device)
    order = torch.Generator().manual_seed(seed)

    history: list[dict] = []
    best_f1, best_state, epochs_without_gain = -1.0, None, 0
    bar = tqdm(range(1, cfg.epochs + 1), desc="train", unit="epoch", disable=None)  # None: only on a terminal
    for epoch in bar:
        net.train()
        loss_sum = torch.zeros((), device=device)    # accumulated on the device: no host sync per step
        for batch in torch.randperm(len(x), generator=order).split(cfg.batch_size):
            batch = batch.to(device)
            loss = F.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(batch)

        val_pred = predict_proba(net, val_x, device=device).argmax(axis=1)
        row = {"epoch": epoch, "train_loss": round((loss_sum / len(x)).item(), 6),
               "val_macro_f1": round(float(f1_score(val_y, val_pred, average="macro", zero_division=0)), 6),
               "time_ms": int(time.time() * 1000)}    # so MLflow's curves keep their wall-clock axis
        history.append(row)
        bar.set_postfix(loss=row["train_loss"], val_f1=row["val_macro_f1"])

        if row["val_macro_f1"] > best_f1:
            best_f1, best_state, epochs_without_gain = row["val_macro_f1"], copy.deepcopy(net.state_dict()), 0
        else:
            epochs_without_gain += 1
            if epochs_without_gain >= cfg.patience:
                log.info("early stop after epoch %d: no better validation macro-F1 for %d epochs", epoch, cfg.patience)
                break
    net.load_state_dict(best_state)
    return net.eval(), history


def write_history(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def train_files(train_path: Path, val_path: Path, params: Params, model_path: Path, info_path: Path,
                history_path: Path) -> dict:
    """Train on the augmented set; write the model, the per-epoch history and what register logs about it."""
    started_ms = int(time.time() * 1000)
    device = resolve_device(params.train.device)
    train, val = load_arrays(train_path), load_arrays(val_path)
    classes = train["classes"].tolist()
    net, history = fit(train["x"], train["y"], val["x"], val["y"], len(classes), params.train, params.seed, device)
    best = max(history, key=lambda row: row["val_macro_f1"])

    save_model(model_path, net.cpu(), model_config(train["x"], classes, params.train.width, params.train.hidden))
    write_history(history_path, history)
    info = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "started_ms": started_ms,
            "epochs_run": len(history),
            "best_epoch": best["epoch"], "best_val_macro_f1": best["val_macro_f1"]}
    write_json(info_path, info)
    log.info("best validation macro-F1 %.4f at epoch %d of %d (device %s)", best["val_macro_f1"], best["epoch"],
             len(history), info["device"])
    return info


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Train the classifier.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", type=Path, required=True, help="augmented training set (.npz)")
    parser.add_argument("--val", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--info", type=Path, required=True, help="device and best epoch, for register")
    parser.add_argument("--history", type=Path, required=True)
    args = parser.parse_args(argv)
    train_files(args.train, args.val, load_params(args.params), args.model, args.info, args.history)


def train_step(augmented: Input[Dataset], splits: Input[Dataset], seed: int, train: dict,
               model: Output[Model], train_info: Output[Artifact], history: Output[Artifact]):
    """Kubeflow: the GPU task. It needs no MLflow credentials: register logs the run."""
    from pathlib import Path
    from components.params import Params
    from components.train import train_files
    params = Params.model_validate({"seed": seed, "train": train})
    train_files(Path(augmented.path), Path(splits.path) / "val.npz", params, Path(model.path), Path(train_info.path),
                Path(history.path))


if __name__ == "__main__":
    run_cli(main)

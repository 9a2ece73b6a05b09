"""train: a small CNN (images) or MLP (tables), Adam and cross-entropy, early-stopped on validation macro-F1.

Starts the pipeline execution's MLflow run; evaluate and register continue it (outputs/train_run.json).

    python -m components.train --train outputs/augmented/train.npz --val outputs/split/val.npz \
        --clean-report reports/clean.json --model outputs/model.pt --run-info outputs/train_run.json \
        --history reports/plots/training.csv
"""

import argparse
import copy
import csv
import logging
from pathlib import Path
from typing import Callable

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
        cfg: Train, seed: int, device: str,
        on_epoch: Callable[[dict], None] = lambda row: None) -> tuple[torch.nn.Module, list[dict]]:
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
               "val_macro_f1": round(float(f1_score(val_y, val_pred, average="macro", zero_division=0)), 6)}
        history.append(row)
        on_epoch(row)
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


def train_files(train_path: Path, val_path: Path, params: Params, model_path: Path, run_info_path: Path,
                history_path: Path, clean_report: Path | None = None, engine: str = "dvc") -> dict:
    """Train on the augmented set inside a new MLflow run; write the model, run info and history."""
    from components import tracking     # mlflow is slow to import; only stages that log pay for it
    import mlflow

    device = resolve_device(params.train.device)
    train, val = load_arrays(train_path), load_arrays(val_path)
    classes = train["classes"].tolist()
    with mlflow.start_run(experiment_id=tracking.experiment_id(params.mlflow.experiment)) as run:
        mlflow.set_tags(tracking.lineage_tags(torch.cuda.get_device_name() if device == "cuda" else "cpu", engine))
        # register.* goes on the run as tags by register (it may rerun alone); kubeflow.* is deployment only
        mlflow.log_params(tracking.flatten("", params.model_dump(mode="json", exclude={"register", "kubeflow"})))
        if clean_report is not None:
            mlflow.log_artifact(str(clean_report), artifact_path="reports")

        def log_epoch(row: dict) -> None:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

        net, history = fit(train["x"], train["y"], val["x"], val["y"], len(classes), params.train, params.seed,
                           device, on_epoch=log_epoch)
        best = max(history, key=lambda row: row["val_macro_f1"])
        mlflow.log_metrics({"best_val_macro_f1": best["val_macro_f1"], "epochs_run": len(history)})

    save_model(model_path, net.cpu(), model_config(train["x"], classes, params.train.width, params.train.hidden))
    write_history(history_path, history)
    run_info = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                "tracking_uri": tracking.tracking_uri(), "device": device,
                "best_epoch": best["epoch"], "best_val_macro_f1": best["val_macro_f1"]}
    write_json(run_info_path, run_info)
    log.info("best validation macro-F1 %.4f at epoch %d of %d (device %s)", best["val_macro_f1"], best["epoch"],
             len(history), device)
    return run_info


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Train the classifier and start the MLflow run.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", type=Path, required=True, help="augmented training set (.npz)")
    parser.add_argument("--val", type=Path, required=True)
    parser.add_argument("--clean-report", type=Path, help="logged to the run so it sits beside the model")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--run-info", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True)
    args = parser.parse_args(argv)
    train_files(args.train, args.val, load_params(args.params), args.model, args.run_info, args.history,
                args.clean_report)


def train_step(augmented: Input[Dataset], splits: Input[Dataset], clean_report: Input[Artifact], seed: int,
               data: dict, clean_cfg: dict, split: dict, normalise: dict, augment: dict, train: dict, mlflow: dict,
               model: Output[Model], run_info: Output[Artifact], history: Output[Artifact]):
    """Kubeflow: takes every params section the run logs, as the DVC run does.
    MLflow's address and credentials come from the environment (a Kubernetes Secret)."""
    from pathlib import Path
    from components.params import Params
    from components.train import train_files
    params = Params.model_validate({"seed": seed, "data": data, "clean": clean_cfg, "split": split,
                                    "normalise": normalise, "augment": augment, "train": train, "mlflow": mlflow})
    train_files(Path(augmented.path), Path(splits.path) / "val.npz", params, Path(model.path), Path(run_info.path),
                Path(history.path), Path(clean_report.path), engine="kubeflow")


if __name__ == "__main__":
    run_cli(main)

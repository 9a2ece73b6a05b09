"""evaluate: test-split metrics with scikit-learn, a confusion matrix and precision-recall curves for
`dvc plots` (register logs the same files to MLflow). metrics.json keeps the headline scores, so that
`dvc metrics show` and `dvc exp show` fit a terminal; the per-class scores are plots/per_class.json.
errors.csv lists the test split's most confident mistakes (evaluate.n_errors), with their raw table row when
the split has one (test_raw.parquet beside test.npz).

    python -m components.evaluate --model outputs/model.pt --test outputs/split/test.npz \
        --metrics reports/metrics.json --predictions reports/predictions.csv --plots reports/plots \
        --errors reports/errors.csv
"""

import argparse
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from components.errors import run_cli
from components.io import BadFile, atomic_path, load_arrays, read_parquet, write_json
from components.model import load_model, predict_proba
from components.params import Evaluate, load_params

log = logging.getLogger(__name__)
CELL_CHARS = 200  # errors.csv: longer text in a raw table cell is cut to this many characters, "..." included


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """The keys of reports/metrics.json, and "per_class" ({class: {precision, recall, f1, support}}, written
    apart as per_class_records), all from scikit-learn; classes absent from the test split score 0."""
    labels = list(range(len(classes)))
    macro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    weighted = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    per_class = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_precision": float(macro[0]),
        "macro_recall": float(macro[1]),
        "macro_f1": float(macro[2]),
        "weighted_precision": float(weighted[0]),
        "weighted_recall": float(weighted[1]),
        "weighted_f1": float(weighted[2]),
        "n_test": int(len(y_true)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, *per_class, strict=True)
        },
    }


def metric_safe(name: str) -> str:
    """MLflow metric names allow letters, digits and _-. :/ (no empty or relative path parts); class names
    may hold anything, so keep only letters, digits and _-. and space."""
    return re.sub(r"[^\w\-. ]", "_", name)


def metric_names(classes: list[str]) -> dict[str, str]:
    """A distinct metric-safe name per class: '<50K' and '>50K' both become '_50K', so names that collide
    get the class's position appended ('_50K_0', '_50K_1') rather than overwrite each other in MLflow."""
    safe = {name: metric_safe(name) for name in classes}
    taken = Counter(safe.values())
    names = {name: s if taken[s] == 1 else f"{s}_{i}" for i, (name, s) in enumerate(safe.items())}
    if len(set(names.values())) < len(names):  # an appended name met a real class name: number them all
        names = {name: f"{i}_{s}" for i, (name, s) in enumerate(safe.items())}
    return names


def per_class_records(metrics: dict) -> list[dict]:
    """One {class, precision, recall, f1, support} row per class: a table for people, a bar chart for
    `dvc plots` (template bar_horizontal_sorted)."""
    return [{"class": name, **scores} for name, scores in metrics["per_class"].items()]


def confusion_records(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> list[dict]:
    """One {actual, predicted} row per test example: the layout of DVC's `confusion` plot template."""
    return [{"actual": classes[t], "predicted": classes[p]} for t, p in zip(y_true, y_pred, strict=True)]


def shorten_cells(table: pd.DataFrame, limit: int = CELL_CHARS) -> pd.DataFrame:
    """The table with every text cell longer than `limit` characters cut to `limit`, ending in "..."; other
    cells (numbers, missing values) as they are."""

    def shorten(column: pd.Series) -> pd.Series:
        if isinstance(column.dtype, pd.CategoricalDtype):
            column = column.astype(object)
        # an object column of text with missing values is text too (pandas 2 calls it no string dtype)
        if not (pd.api.types.is_string_dtype(column) or pd.api.types.infer_dtype(column, skipna=True) == "string"):
            return column
        return column.mask(column.str.len() > limit, column.str[: limit - 3] + "...")

    return table.apply(shorten)


def errors_frame(
    ids: np.ndarray, y_true: np.ndarray, proba: np.ndarray, classes: list[str], n: int, raw: pd.DataFrame | None
) -> pd.DataFrame:
    """The misclassified examples, the most confident first (ties by id), at most n: id, true, predicted,
    probability (of the predicted class, 6 decimals), then the columns of raw (the raw test table, one row per
    example in the order of ids; None for none), their cells shortened by shorten_cells."""
    y_pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    errors = pd.DataFrame(
        {
            "id": ids[wrong].astype(str),
            "true": [classes[i] for i in y_true[wrong]],
            "predicted": [classes[i] for i in y_pred[wrong]],
            "probability": proba[wrong].max(axis=1).astype(np.float64).round(6),
        }
    )
    errors = errors.sort_values(["probability", "id"], ascending=[False, True]).head(n)
    if raw is None:
        return errors.reset_index(drop=True)
    rows = shorten_cells(raw.iloc[wrong[errors.index]].reset_index(drop=True))
    return pd.concat([errors.reset_index(drop=True), rows], axis=1)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(matrix: np.ndarray, classes: list[str]):
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = _pyplot().subplots(figsize=(1.2 + 0.5 * len(classes), 1 + 0.5 * len(classes)), dpi=120)
    ConfusionMatrixDisplay(matrix, display_labels=classes).plot(ax=ax, colorbar=False, cmap="Blues")
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    return fig


def precision_recall_figure(y_true: np.ndarray, proba: np.ndarray, classes: list[str]):
    """One-vs-rest precision-recall curve per class, with its average precision, on the test split."""
    from sklearn.metrics import PrecisionRecallDisplay

    fig, ax = _pyplot().subplots(figsize=(7, 5), dpi=120)
    for i, name in enumerate(classes):
        if (y_true == i).any():
            PrecisionRecallDisplay.from_predictions(y_true == i, proba[:, i], name=name, ax=ax, plot_chance_level=False)
    ax.set(title="Precision-recall per class (test split, one-vs-rest)", xlabel="Recall", ylabel="Precision")
    ax.legend(fontsize="small", loc="lower left", ncol=2)
    fig.tight_layout()
    return fig


def evaluate_files(
    model_path: Path,
    test_path: Path,
    metrics_path: Path,
    predictions_path: Path,
    plots_dir: Path,
    errors_path: Path,
    cfg: Evaluate,
) -> tuple[dict, np.ndarray, list[str]]:
    """Score the model on test.npz, write metrics/predictions/plots and the most confident mistakes, with their
    raw rows when test_raw.parquet lies beside test.npz. Returns (metrics, confusion matrix, class names)."""
    net, config = load_model(model_path)
    classes = config["classes"]
    test = load_arrays(test_path)
    proba = predict_proba(net, test["x"])
    y_true, y_pred = test["y"], proba.argmax(axis=1)

    metrics = classification_metrics(y_true, y_pred, classes)
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
    predictions = pd.DataFrame(
        {
            "id": test["ids"],
            "actual": [classes[i] for i in y_true],
            "predicted": [classes[i] for i in y_pred],
            "confidence": proba.max(axis=1).round(6),
        }
    )
    raw_table = test_path.with_name(f"{test_path.stem}_raw.parquet")
    raw = read_parquet(raw_table) if raw_table.exists() else None
    if raw is not None and len(raw) != len(y_true):
        raise BadFile(f"{raw_table}: {len(raw)} rows for {len(y_true)} examples in {test_path}; rerun normalise")
    errors = errors_frame(test["ids"], y_true, proba, classes, cfg.n_errors, raw)
    figure = confusion_figure(matrix, classes)
    pr_figure = precision_recall_figure(y_true, proba, classes)

    write_json(metrics_path, {key: value for key, value in metrics.items() if key != "per_class"})
    write_json(plots_dir / "per_class.json", per_class_records(metrics))
    with atomic_path(predictions_path) as tmp:
        predictions.to_csv(tmp, index=False)
    with atomic_path(errors_path) as tmp:
        errors.to_csv(tmp, index=False)
    write_json(plots_dir / "confusion_matrix.json", confusion_records(y_true, y_pred, classes))
    # the same matrix as one table with its labels, for people (MLflow shows it beside the PNG)
    write_json(
        plots_dir / "confusion_matrix_table.json", {"labels": classes, "rows_actual_columns_predicted": matrix.tolist()}
    )
    with atomic_path(plots_dir / "confusion_matrix.png") as tmp:
        figure.savefig(tmp, format="png")
    with atomic_path(plots_dir / "precision_recall.png") as tmp:
        pr_figure.savefig(tmp, format="png")

    log.info(
        "test macro-F1 %.4f, accuracy %.4f on %d test examples", metrics["macro_f1"], metrics["accuracy"], len(y_true)
    )
    return metrics, matrix, classes


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Score the trained model on the test split.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, required=True)
    parser.add_argument(
        "--plots",
        type=Path,
        required=True,
        help="folder for confusion_matrix.json/.png, per_class.json and precision_recall.png",
    )
    parser.add_argument(
        "--errors", type=Path, required=True, help="CSV of the most confident mistakes (evaluate.n_errors)"
    )
    args = parser.parse_args(argv)
    cfg = load_params(args.params).evaluate
    evaluate_files(args.model, args.test, args.metrics, args.predictions, args.plots, args.errors, cfg)


if __name__ == "__main__":
    run_cli(main)

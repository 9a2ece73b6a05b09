"""The augment stage's picture, reports/plots/augmented.png: what augmentation added beside what was there.

Images: per class, a row of training examples and a row of added ones (generated, or classical copies).
Tables: per feature (the first 8), the distribution of the training rows and of the added rows.
Texts (token ids): examples per class, original and added.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.io import atomic_path

PER_ROW = 8  # images per class and kind of example
MAX_FEATURES = 8


def plot_augmented(
    path: Path,
    original: np.ndarray,
    original_y: np.ndarray,
    added: np.ndarray,
    added_y: np.ndarray,
    classes: list[str],
    title: str,
    feature_names: list[str] | None = None,
) -> None:
    """Write the PNG. original, added: model input, first axis n ((n, c, h, w) float images, (n, features)
    float rows, or int token ids); *_y: int64 labels; title names what `added` is (e.g. "generated (cVAE)")."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    if original.ndim == 4:
        figure = image_grid(plt, original, original_y, added, added_y, classes, title)
    elif np.issubdtype(original.dtype, np.floating):
        figure = distributions(plt, original, added, title, feature_names)
    else:
        figure = class_counts(plt, original_y, added_y, classes, title)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def image_grid(plt, original, original_y, added, added_y, classes, title):
    rows = [(c, which) for c in range(len(classes)) for which in ("train", "added")]
    fig, axes = plt.subplots(len(rows), PER_ROW, figsize=(PER_ROW * 0.8, len(rows) * 0.8 + 0.6), dpi=100, squeeze=False)
    low, high = np.percentile(original, [0.5, 99.5]) if len(original) else (0.0, 1.0)
    for row, (c, which) in zip(axes, rows, strict=True):
        x, y = (original, original_y) if which == "train" else (added, added_y)
        shown = x[y == c][:PER_ROW]
        for i, ax in enumerate(row):
            ax.set_axis_off()
            if i < len(shown):
                image = shown[i].transpose(1, 2, 0)
                image = image[..., 0] if image.shape[-1] == 1 else np.clip((image - low) / (high - low + 1e-12), 0, 1)
                ax.imshow(image, cmap="gray_r", vmin=low, vmax=high, interpolation="nearest")
        row[0].text(-0.3, 0.5, f"{classes[c]}\n{which}", transform=row[0].transAxes, ha="right", va="center", size=7)
    fig.suptitle(f"train split (upper rows) and {title} (lower rows), per class", size=9)
    fig.tight_layout(rect=(0.08, 0, 1, 1))
    return fig


def distributions(plt, original, added, title, feature_names):
    n = min(MAX_FEATURES, original.shape[1])
    cols = min(4, n)
    fig, axes = plt.subplots(-(-n // cols), cols, figsize=(3 * cols, 2.4 * -(-n // cols)), dpi=100, squeeze=False)
    for j, ax in enumerate(axes.flat):
        if j >= n:
            ax.set_axis_off()
            continue
        values = np.concatenate([original[:, j], added[:, j]])
        bins = np.histogram_bin_edges(values, bins=30) if len(values) else 10
        ax.hist(original[:, j], bins=bins, density=True, alpha=0.5, label="train split")
        if len(added):
            ax.hist(added[:, j], bins=bins, density=True, alpha=0.5, label=title)
        ax.set_title(feature_names[j] if feature_names else f"feature {j}", size=8)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"scaled features: train split and {title}", size=9)
    fig.tight_layout()
    return fig


def class_counts(plt, original_y, added_y, classes, title):
    k = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * k + 2), 3), dpi=100)
    positions = np.arange(k)
    ax.bar(positions - 0.2, np.bincount(original_y, minlength=k), 0.4, label="train split")
    ax.bar(positions + 0.2, np.bincount(added_y, minlength=k), 0.4, label=title)
    ax.set_xticks(positions, classes, rotation=45, ha="right", size=8)
    ax.set_ylabel("examples")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

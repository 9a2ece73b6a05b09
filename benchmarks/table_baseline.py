"""The plain script that benchmark #4 measures clean + normalise against: the same work on a numeric table
with a class target, written quickly with pandas, numpy and scikit-learn's stratified split, as a competent
person would without a pipeline around it. Drop rows without a target and duplicate rows, split
train/val/test stratified, impute NaNs with the train medians, standard-scale with the train mean/std and
write each split as float32.

    python -m benchmarks.table_baseline DATA.parquet OUT_DIR --target label [--val 0.15 --test 0.2 --seed 42]
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--target", required=True)
    parser.add_argument("--val", type=float, default=0.15)
    parser.add_argument("--test", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    df = pd.read_parquet(args.data)
    df = df[df[args.target].notna()].drop_duplicates()
    y, classes = pd.factorize(df.pop(args.target), sort=True)
    ids = df.index.to_numpy()  # row number in the file
    rest, test = train_test_split(np.arange(len(y)), test_size=args.test, stratify=y, random_state=args.seed)
    train, val = train_test_split(rest, test_size=args.val / (1 - args.test), stratify=y[rest], random_state=args.seed)

    median = df.iloc[train].median()
    train_x = df.iloc[train].fillna(median)
    mean, std = train_x.mean(), train_x.std(ddof=0).replace(0, 1)
    del train_x
    args.out.mkdir(parents=True, exist_ok=True)
    for name, idx in (("train", train), ("val", val), ("test", test)):
        x = ((df.iloc[idx].fillna(median) - mean) / std).to_numpy(np.float32)
        np.savez(args.out / f"{name}.npz", x=x, y=y[idx], ids=ids[idx], classes=np.asarray(classes, dtype=str))


if __name__ == "__main__":
    main()

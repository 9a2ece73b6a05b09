"""The preprocessing of a table (data.kind tabular), all scikit-learn: a pandera schema of the feature columns,
median / most-frequent imputation, optional IQR clipping, standard/min-max/robust scaling and one-hot
categories (unknown ones ignored); saved as data (JSON and skops, never pickle) and loaded back."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler

from components.errors import UserError, shorten
from components.io import read_json
from components.table_files import as_labels

SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
CHUNK_VALUES = 1 << 24  # tables are transformed this many values at a time: scikit-learn's copies stay small
# Saved transformers (skops) name the classes below by module and class: they were defined in
# components.normalise, which still exports them, so that a preprocessing saved before this module existed
# loads, and the same fit gives the same bytes.
SAVED_AS = "components.normalise"
# The only types a saved table transformer may hold beyond skops' own allow-list (scikit-learn's estimators,
# numpy arrays, builtins): loading never imports or runs anything else, unlike pickle or joblib.
TRUSTED_TYPES = [f"{SAVED_AS}.IQRClipper", f"{SAVED_AS}.MedianImputer", "numpy.dtype"]


class IQRClipper(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Clip each column to [Q1 - k*IQR, Q3 + k*IQR], the quartiles learnt on train."""

    __module__ = SAVED_AS

    def __init__(self, factor: float = 1.5):
        self.factor = factor

    def fit(self, x, y=None):
        x = np.asarray(x, dtype=float)
        self.n_features_in_ = x.shape[1]
        q1, q3 = np.nanpercentile(x, [25, 75], axis=0)
        self.low_, self.high_ = q1 - self.factor * (q3 - q1), q3 + self.factor * (q3 - q1)
        return self

    def transform(self, x):
        return np.clip(x, self.low_, self.high_)


class MedianImputer(SimpleImputer):
    """SimpleImputer(strategy="median") that finds the train medians by partitioning each column
    (np.nanmedian) instead of sorting a masked copy of the whole array: the same medians, in a fraction
    of the time and memory on millions of rows. Everything else, transform included, is SimpleImputer's."""

    __module__ = SAVED_AS

    def _dense_fit(self, X, strategy, missing_values, fill_value):
        if (
            strategy != "median"
            or self.add_indicator
            or not (isinstance(missing_values, float) and np.isnan(missing_values))
        ):
            return super()._dense_fit(X, strategy, missing_values, fill_value)
        self._fit_indicator(None)  # add_indicator is off: records that there is no indicator
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: NaN, as SimpleImputer
            median = np.nanmedian(X, axis=0)
        median[np.isnan(median)] = 0 if self.keep_empty_features else np.nan
        return median


def require_columns(needed: list[str], present: list[str], source: str) -> None:
    """Raises UserError naming the columns of `needed` that `present` lacks, and any the file has in
    another letter case."""
    absent = [column for column in needed if column not in present]
    if absent:
        by_case = {str(c).lower(): c for c in present}
        other_case = [f"{by_case[c.lower()]!r}" for c in absent if c.lower() in by_case]
        hint = f" (the file has {', '.join(other_case)}: names are case-sensitive)" if other_case else ""
        raise UserError(
            f"{source}: column{'s' if len(absent) > 1 else ''} {', '.join(map(repr, absent))} "
            f"{'are' if len(absent) > 1 else 'is'} missing{hint}; the model needs columns "
            f"{', '.join(needed)}"
        )


def check_schema(schema, table: pd.DataFrame, source: str, inplace: bool = False, where=None) -> pd.DataFrame:
    """Validate (and coerce) a table with a pandera schema; the first failure becomes one line naming
    the column and the row (where(row) -> 'file line N' when given, else 'row N'). Used in training and,
    from the schema saved with the model, at prediction time. Raises UserError; a column the schema
    needs and the table lacks is named as missing.
    inplace: coerce the columns of `table` itself rather than of a copy of it."""
    import pandera.pandas as pa

    require_columns(list(schema.columns), list(table.columns), source)
    try:
        return schema.validate(table, lazy=True, inplace=inplace)
    except pa.errors.SchemaErrors as exc:
        case = exc.failure_cases.iloc[0]
        if case["column"] is None or case["index"] is None or pd.isna(case["index"]):
            raise UserError(
                f"{source}: {case['failure_case']}; the model needs columns {', '.join(schema.columns)}"
            ) from None
        expected = "a number" if "float" in str(schema.columns[case["column"]].dtype) else "text"
        place = where(int(case["index"])) if where else f"{source} row {case['index']}"
        raise UserError(
            f"{place}: column {shorten(case['column'])} holds {shorten(case['failure_case'])}, "
            f"which does not fit the model's schema (expected {expected})"
        ) from None


class TablePreprocessor:
    """Schema check, imputation, clipping, scaling and one-hot encoding of the feature columns."""

    def __init__(
        self, numeric: list[str], categorical: list[str], scaling: str = "standard", clip_factor: float | None = None
    ):
        self.numeric, self.categorical = numeric, categorical
        self.scaling, self.clip_factor = scaling, clip_factor
        steps = ([IQRClipper(clip_factor)] if clip_factor else []) + [SCALERS[scaling]()]
        # the step names make_pipeline gives, "simpleimputer" included, as before MedianImputer
        numeric_steps = Pipeline(
            [("simpleimputer", MedianImputer(strategy="median"))]
            + [(type(step).__name__.lower(), step) for step in steps]
        )
        self.transformer = ColumnTransformer(
            [
                ("numeric", numeric_steps, numeric),
                (
                    "categorical",
                    make_pipeline(
                        SimpleImputer(strategy="most_frequent"),
                        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                    ),
                    categorical,
                ),
            ]
        )
        import pandera.pandas as pa

        self.schema = pa.DataFrameSchema(
            {c: pa.Column(float, nullable=True, coerce=True) for c in numeric}
            | {c: pa.Column(str, nullable=True, coerce=True) for c in categorical},
            strict=False,
        )

    def settings(self) -> dict:
        """What rebuilds this preprocessor around its fitted transformer (see from_settings), as JSON."""
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "scaling": self.scaling,
            "clip_factor": self.clip_factor,
        }

    @classmethod
    def from_settings(cls, settings: dict, transformer) -> TablePreprocessor:
        """settings(): the columns and options; transformer: the fitted ColumnTransformer."""
        preprocessor = cls(
            list(settings["numeric"]), list(settings["categorical"]), settings["scaling"], settings["clip_factor"]
        )
        preprocessor.transformer = transformer
        return preprocessor

    def validate(self, table: pd.DataFrame, source: str = "input") -> pd.DataFrame:
        """Apply the saved schema; categories are written as in training (3, 3.0, "3" -> "3") and
        scikit-learn gets object columns with NaN for missing ones."""
        table = table.copy(deep=False)  # columns are replaced below, never written into
        # Float64 columns come through the schema unchanged but split into one block each, which scikit-learn
        # would then copy whole at every step: the frame gets them as they came, in one block, instead.
        # (.copy(deep=False): a frame of its own, so pandas 2 does not warn of writes into a slice of table)
        frame = table[[c for c in self.numeric if c in table and table[c].dtype == np.float64]].copy(deep=False)
        for column in self.categorical:
            if column in table:
                table[column] = pd.Series(as_labels(table[column]), index=table.index).astype(object)
        checked = check_schema(self.schema, table, source, inplace=True)
        for column in self.numeric + self.categorical:
            if column not in frame:
                frame[column] = checked[column]
        for column in self.categorical:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), np.nan)
        return frame[self.numeric + self.categorical]

    def fit(self, table: pd.DataFrame) -> TablePreprocessor:
        self.transformer.fit(self.validate(table, "train split"))
        return self

    def transform(self, table: pd.DataFrame, source: str = "input") -> np.ndarray:
        """Validate the whole table, then transform it in chunks of rows into one float32 array: every
        step works row by row, so the result is the same, without float64 copies of a big table."""
        frame = self.validate(table, source)
        x = np.empty((len(frame), len(self.feature_names())), dtype=np.float32)
        rows = max(1, CHUNK_VALUES // max(1, *x.shape[1:], frame.shape[1]))
        for start in range(0, max(len(frame), 1), rows):  # an empty table fails in scikit-learn, as before
            x[start : start + rows] = self.transformer.transform(frame.iloc[start : start + rows])
        if not np.isfinite(x).all():
            row, col = np.argwhere(~np.isfinite(x))[0]
            raise UserError(
                f"{source}: row {row}: feature {self.feature_names()[col]!r} is NaN or infinite after "
                "preprocessing; clean that value"
            )
        return x

    def feature_names(self) -> list[str]:
        return self.transformer.get_feature_names_out().tolist()

    def numeric_mask(self) -> np.ndarray:
        return np.array([name.startswith("numeric__") for name in self.feature_names()])

    def onehot_groups(self) -> list[slice]:
        """Where each categorical column's one-hot columns lie among the features (after the numeric ones)."""
        if not self.categorical:
            return []
        encoder = self.transformer.named_transformers_["categorical"][-1]
        start, groups = int(self.numeric_mask().sum()), []
        for categories in encoder.categories_:
            groups.append(slice(start, start + len(categories)))
            start += len(categories)
        return groups


def skops_bytes(estimator) -> bytes:
    """skops.io.dumps(estimator), made a function of the fitted transformer alone (DVC hashes it): skops dates
    every zip entry now, and numbers objects (schema.json's "__id__", the arrays' N.npy file names) by their
    memory address, id(). Entries are dated 1980-01-01 and the addresses renumbered 1, 2, ... in order of
    first appearance in schema.json; the loader only matches equal numbers, so what it rebuilds is the same."""
    import io
    import re
    import zipfile

    import skops.io

    source, out = zipfile.ZipFile(io.BytesIO(skops.io.dumps(estimator))), io.BytesIO()
    schema = source.read("schema.json").decode()
    numbers: dict[str, str] = {}
    arrays = set(source.namelist())

    def renumber(match: re.Match) -> str:
        if match[1] is None and f"{match[2]}.npy" not in arrays:  # a string that only looks like an array's name
            return match[0]
        old = match[1] or match[2]
        new = numbers.setdefault(old, str(len(numbers) + 1))
        return f'"__id__": {new}' if match[1] else f'"{new}.npy"'

    schema = re.sub(r'"__id__": (\d+)|"(\d+)\.npy"', renumber, schema)

    def renamed(name: str) -> str:
        stem = name.removesuffix(".npy")
        return f"{numbers[stem]}.npy" if name.endswith(".npy") and stem in numbers else name

    entries = sorted((renamed(name), name) for name in source.namelist() if name != "schema.json")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for new_name, name in entries:  # in the order of the new names: the old ones are addresses
            target.writestr(zipfile.ZipInfo(new_name, (1980, 1, 1, 0, 0, 0)), source.read(name))
        target.writestr(zipfile.ZipInfo("schema.json", (1980, 1, 1, 0, 0, 0)), schema)
    return out.getvalue()


def load_transformer(path: Path) -> TablePreprocessor:
    """The preprocessor saved in path (columns.json and transformer.skops), loaded as data: skops restricted
    to its allow-list plus TRUSTED_TYPES. Nothing is unpickled, so a crafted file cannot run code.
    Raises UserError naming the file when it is missing, in an older pickled form, or holds other types."""
    if not (path / "transformer.skops").exists():
        old = (
            " (transformer.joblib is a pickle, which is never loaded: rerun normalise, or re-register the model)"
            if (path / "transformer.joblib").exists()
            else ""
        )
        raise UserError(f"{path / 'transformer.skops'}: not found{old}")
    import skops.io

    try:
        transformer = skops.io.load(path / "transformer.skops", trusted=TRUSTED_TYPES)
    except skops.io.exceptions.UntrustedTypesFoundException as exc:
        raise UserError(
            f"{path / 'transformer.skops'}: holds types outside the allow-list "
            f"({str(exc).split(':')[-1].strip()[:80]}); refusing to load it"
        ) from None
    except Exception as exc:  # noqa: BLE001 -- not a skops file: a zip, JSON or numpy error, whatever it is
        raise UserError(
            f"{path / 'transformer.skops'}: not a readable skops file ({type(exc).__name__}); rerun normalise"
        ) from None
    return TablePreprocessor.from_settings(read_json(path / "columns.json"), transformer)


def train_outliers(train: pd.DataFrame, numeric: list[str], threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the train split with |z| > threshold in any numeric column, z from the train split's own
    mean and (population) standard deviation, missing values ignored. Returns (outlier mask, bool (n,);
    the index into `numeric` of the first column each row is beyond, int (n,), meaningful where the mask is)."""
    if not numeric or train.empty:
        return np.zeros(len(train), dtype=bool), np.zeros(len(train), dtype=np.int64)
    values = train[numeric].to_numpy(dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: no outliers in it
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    std[~(std > 0)] = 1.0
    beyond = np.abs(values - mean) / std > threshold  # NaN compares False: never an outlier
    return beyond.any(axis=1), beyond.argmax(axis=1)

"""The one typed schema for params.yaml. Unknown keys are errors, so a typo never goes unnoticed."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.errors import UserError, shorten

# Pillow's own decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS (1024 * 1024 * 1024 // 4 // 3 pixels).
MAX_IMAGE_PIXELS = 89_478_485
MAX_IMAGE_SIDE = 16_384  # data.image_size: pixels per side
# register.model_name: MLflow registered model names, kept to characters that need no quoting anywhere
# (a search filter, a models:/ URI, a URL path, a file name).
MODEL_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
# Kubernetes quantities: CPU in cores or millicores, memory in bytes with an optional (binary) suffix.
CPU_QUANTITY = r"(\d+(\.\d+)?|\d+m)"
MEMORY_QUANTITY = r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def single_character(value: str | None, key: str) -> str | None:
    if value is not None and len(value) != 1:
        raise ValueError(f"{key} must be one character, got {value!r}")
    return value


class Csv(Section):
    """How CSV (and TSV) files are read; null means detect, and what was detected is written to
    reports/clean.json (`read`) so it can be pinned here. The settings travel with the model, so batch
    prediction reads new files the same way. Names and meanings are pandas.read_csv's."""

    sep: str | None = None  # null: sniffed among , ; tab |
    decimal: str | None = None  # null: in a ;-separated file "," unless fractions are only written 1.5; else "."
    thousands: str | None = None  # null: detected per numeric column (1,234 / 1.234 / 1 234 / 1'234); "" = none
    encoding: str | None = None  # null: UTF-8, with or without a BOM (UTF-16 when the file starts with its BOM)
    na_values: list[str] = []  # extra markers of a missing feature value (never of the target)
    keep_default_na: bool = True  # the default markers (components/table_files.py DEFAULT_NA_VALUES) apply too
    quotechar: str = '"'
    comment: str | None = None  # lines starting with this character are skipped

    @model_validator(mode="after")
    def consistent(self) -> Csv:
        for key in ("sep", "decimal", "quotechar", "comment"):
            single_character(getattr(self, key), f"data.csv.{key}")
        if self.thousands:
            single_character(self.thousands, "data.csv.thousands")
        if self.decimal is not None and self.decimal in (self.sep, self.thousands):
            raise ValueError(f"data.csv.decimal {self.decimal!r} is also the separator or the thousands separator")
        if self.encoding is not None:
            import codecs

            try:
                text = codecs.lookup(self.encoding)._is_text_encoding  # rot13, hex, zlib are codecs, not encodings
            except LookupError:
                text = False
            if not text:
                raise ValueError(
                    f"data.csv.encoding {self.encoding!r} is not a text encoding Python knows "
                    "(e.g. utf-8, cp1252, latin-1, utf-16)"
                )
        return self


class Data(Section):
    kind: Literal["image_folder", "tabular", "text"] = "image_folder"
    path: str = "data/raw"
    # image_folder
    image_size: tuple[int, int] | None = None  # [height, width], each 1..MAX_IMAGE_SIDE
    channels: Literal[1, 3] = 1
    background: str = "white"  # transparent pixels are composited on this colour (a name, or quoted '#rrggbb')
    # tabular
    format: Literal["csv", "parquet", "jsonl"] | None = None  # None: from the file extension
    target: str | None = None
    features: list[str] | None = None  # None: every column but the target
    categorical: list[str] = []  # force these columns to be categories
    numeric: list[str] = []  # force these columns to be numbers
    csv: Csv = Csv()
    # text: the column(s) holding the text of a table; several are joined with text_separator (subject + body)
    text: str | list[str] = "text"
    text_separator: str = "\n\n"

    @model_validator(mode="after")
    def table_has_target(self) -> Data:
        if self.kind == "tabular" and not self.target:
            raise ValueError("data.kind tabular needs data.target, the column holding the class labels")
        if set(self.categorical) & set(self.numeric):
            raise ValueError(
                f"columns {sorted(set(self.categorical) & set(self.numeric))} are both categorical and numeric"
            )
        return self

    @field_validator("image_size")
    @classmethod
    def image_size_in_pixels(cls, value):
        if value is not None and not all(1 <= side <= MAX_IMAGE_SIDE for side in value):
            raise ValueError(
                f"must be [height, width] in pixels, each from 1 to {MAX_IMAGE_SIDE}, got {list(value)}; "
                "or null to keep the images' own size"
            )
        return value

    @field_validator("background", mode="before")
    @classmethod
    def background_given(cls, value):
        if value is None:  # `background: #ff0000` unquoted: YAML reads everything from # as a comment
            raise ValueError("data.background is empty; write a colour name, or quote a hex colour: '#ff0000'")
        return value

    @model_validator(mode="after")
    def background_is_a_colour(self) -> Data:
        from PIL import ImageColor

        try:
            ImageColor.getrgb(self.background)
        except ValueError:
            raise ValueError(
                f"data.background {self.background!r} is not a colour; use a name (white, black) or #rrggbb"
            ) from None
        return self


class Clean(Section):
    on_bad_file: Literal["drop", "fail"] = "drop"  # unreadable / non-image files in an image folder
    # Symbolic links in an image folder that lead outside it are skipped and reported unless this is true.
    follow_symlinks: bool = False
    # Images with more pixels are bad files (a decompression bomb decodes a few KB into gigabytes); null = no limit.
    max_image_pixels: int | None = Field(MAX_IMAGE_PIXELS, ge=1)
    missing: Literal["impute", "drop", "fail"] = "impute"  # tables: impute = train median / most frequent
    missing_by_column: dict[str, Literal["impute", "drop", "fail"]] = {}
    outliers: Literal["none", "iqr_clip", "zscore_drop"] = "none"
    iqr_factor: float = Field(1.5, gt=0)  # iqr_clip: clip to [Q1 - f*IQR, Q3 + f*IQR] of train
    zscore: float = Field(4.0, ge=1)  # zscore_drop: drop train rows beyond this many train std devs
    small_classes: Literal["drop", "fail"] = "drop"  # classes too small for the stratified split
    min_chars: int = Field(1, ge=1, le=1_000_000)  # text: shorter texts (after stripping) are dropped
    max_chars: int = Field(20_000, ge=1, le=100_000_000)  # text: longer texts are cut to this many characters


class Normalise(Section):
    numeric: Literal["standard", "minmax", "robust"] = "standard"  # tables; images: per-channel standard


class Split(Section):
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def leaves_training_data(self) -> Split:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must stay below 0.9 to leave data to train on")
        return self


class Text(Section):
    """data.kind text: the tokenizer train.arch bilstm fits on the train split, and the BiLSTM's size.
    max_length also truncates the pretrained checkpoint's tokens for train.arch transformer."""

    vocab_size: int = Field(8000, ge=100, le=1_000_000)  # WordPiece vocabulary, special tokens included
    min_frequency: int = Field(2, ge=1, le=1_000_000)  # a subword must occur this often in train to be kept
    lowercase: bool = True
    max_length: int = Field(256, ge=8, le=8192)  # tokens per text; longer texts are truncated
    embedding_dim: int = Field(128, ge=8, le=4096)
    hidden_size: int = Field(128, ge=8, le=4096)  # per LSTM direction
    dropout: float = Field(0.3, ge=0, lt=1)


class Cvae(Section):
    """augment.cvae: the conditional VAE of augment.generator cvae (components/generative.py)."""

    latent_size: int = Field(16, ge=1, le=1024)
    width: int = Field(32, ge=1, le=1024)  # images: channels of the first conv block; tables: the MLP's hidden size
    epochs: int = Field(100, ge=0, le=10_000)  # 0 gives an untrained generator, which the quality gate rejects
    min_steps: int = Field(1500, ge=0, le=10_000_000)  # more epochs when `epochs` would make fewer optimiser steps
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(0.002, gt=0, le=1)
    beta: float = Field(1.0, gt=0, le=100)  # weight of the KL term (1 = the plain VAE's evidence lower bound)
    per_class: int = Field(100, ge=0, le=1_000_000)  # generated examples per class (unless balance)
    balance: bool = False  # instead: fill every class up to the largest class of the train split
    holdout_fraction: float = Field(0.2, gt=0, lt=1)  # of the train split, held back from the fit to score it
    max_recon_ratio: float = Field(0.9, gt=0)  # gate: held-back reconstruction error / the class means' error
    max_mmd_ratio: float = Field(0.5, gt=0)  # gate: per-class MMD to real examples / other classes' MMD to them
    on_gate_failure: Literal["drop", "use", "fail"] = "drop"  # drop the generated examples (warn), use them, fail
    seed: int | None = Field(None, ge=0, le=2**32 - 1)  # null: the top-level seed
    resume: bool = True  # a killed run restarts from its last epoch checkpoint (outputs/checkpoints/)


class Augment(Section):
    copies: int = Field(2, ge=0, le=100)
    rotation_degrees: float = Field(12, ge=0, le=180)
    scale: tuple[float, float] = (0.9, 1.1)  # [low, high] zoom factors, 1 = unchanged
    translate: float = Field(0.1, ge=0, le=0.5)
    hflip: bool = False
    jitter: float = Field(0.0, ge=0, le=1)  # tables: std of Gaussian noise on scaled numeric features in copies
    oversample: bool = False  # tables: repeat rows of smaller classes up to the largest class
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where image transforms and the generator's fit run
    token_deletion: float = Field(0.1, ge=0, lt=1)  # text: each token of a copy is deleted with this probability
    token_swap: float = Field(0.1, ge=0, le=1)  # text: swaps of two random tokens per copy, as a share of its length
    generator: Literal["none", "cvae"] = "none"  # images, tables: a conditional VAE adds new training examples
    cvae: Cvae = Cvae()

    @field_validator("scale")
    @classmethod
    def scale_keeps_the_image(cls, value):
        low, high = value
        if not 0.25 <= low <= high <= 4:
            raise ValueError(
                f"must be [low, high] with 0.25 <= low <= high <= 4 (1 = unchanged size), got "
                f"{list(value)}; a factor near 0 shrinks the copies to blank images"
            )
        return value


class Train(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    epochs: int = Field(25, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(0.003, gt=0, le=1)
    patience: int = Field(5, ge=1, le=10_000)
    # Which validation score picks the best epoch and stops training: val_macro_f1 (ties broken by the loss),
    # val_loss, or auto: val_loss when the validation split has fewer than 10 examples per class.
    monitor: Literal["auto", "val_macro_f1", "val_loss"] = "auto"
    # images: cnn (small) | resnet18 (torchvision's, CIFAR stem); text: bilstm | transformer; tables: the MLP
    arch: Literal["cnn", "resnet18", "bilstm", "transformer"] = "cnn"
    pretrained: str | None = None  # transformer: a checkpoint folder (config.json, weights, tokenizer) or a hub id
    freeze_layers: int = Field(0, ge=0, le=1000)  # transformer: embeddings and the first N layers stay fixed
    width: int = Field(32, ge=1, le=1024)
    hidden: list[int] = Field([64, 64], max_length=32)  # tables: the MLP's hidden layer sizes
    # Processes, one per GPU: > 1 trains data-parallel (DDP through torchrun), with the nccl backend on
    # GPUs, or gloo on CPU when train.device resolves to cpu. Kubeflow's train task requests this many GPUs.
    gpus: int = Field(1, ge=0, le=64)
    mixed_precision: Literal["bf16", "none"] = "bf16"  # CUDA only: bf16 autocast; CPU always trains in fp32
    compile: bool = False  # torch.compile the model (minutes of compiling, then faster steps)
    resume: bool = True  # continue from the last epoch checkpoint of an identical, killed run
    # The optimiser and its schedule. Unset, they follow the arch: for transformer (fine-tuning) AdamW, lr 2e-5,
    # weight decay 0.01, 10 % linear warm-up then linear decay to 0, gradients clipped to norm 1.0, as BERT
    # was fine-tuned (Devlin et al. 2019, appendix A.3; Hugging Face's Trainer defaults); else Adam, constant lr.
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = Field(0.0, ge=0, le=1)
    warmup_fraction: float = Field(0.0, ge=0, lt=1)  # share of all optimiser steps with a linearly rising lr
    lr_decay: Literal["none", "linear"] = "none"  # linear: to 0 at the last step of train.epochs
    max_grad_norm: float | None = Field(None, gt=0)  # clip the gradients' global L2 norm; null = no clipping
    # Examples per forward/backward pass; batch_size / micro_batch_size passes accumulate into one optimiser step
    # when a batch does not fit in memory. null = batch_size (no accumulation).
    micro_batch_size: int | None = Field(None, ge=1, le=65_536)
    bucket_by_length: bool = True  # text: batches of similar lengths (less padding); the batch order stays random

    @model_validator(mode="before")
    @classmethod
    def fine_tuning_defaults(cls, values):
        if isinstance(values, dict) and values.get("arch") == "transformer":
            for key, value in TRANSFORMER_DEFAULTS.items():
                values.setdefault(key, value)
        return values

    @model_validator(mode="after")
    def micro_batches_divide_the_batch(self) -> Train:
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"train.micro_batch_size {self.micro_batch_size} must divide train.batch_size {self.batch_size}"
            )
        return self

    @field_validator("hidden")
    @classmethod
    def layer_sizes(cls, value):
        if not all(1 <= size <= 65_536 for size in value):
            raise ValueError(f"layer sizes must each be from 1 to 65536, got {shorten(value)}")
        return value


TRANSFORMER_DEFAULTS = {
    "lr": 2e-5,
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "warmup_fraction": 0.1,
    "lr_decay": "linear",
    "max_grad_norm": 1.0,
}


class Register(Section):
    model_name: str = "classifier"  # letters, digits, - _ . (at most 100), starting with a letter or digit
    min_macro_f1: float = Field(0.9, ge=0, le=1)
    require_significance: bool = True
    confidence: float = Field(0.95, gt=0, lt=1)
    bootstrap_resamples: int = Field(1000, ge=100, le=1_000_000)
    lock_timeout_s: int = Field(300, ge=30, le=86_400)  # champion lock lease: silent this long = dead; wait 2x at most

    @field_validator("model_name")
    @classmethod
    def model_name_needs_no_quoting(cls, value):
        import re

        if not re.fullmatch(MODEL_NAME, value):
            raise ValueError(
                f"{shorten(value)} is not a model name this project registers: use 1 to 100 letters, "
                "digits, '-', '_' or '.', starting with a letter or digit"
            )
        return value


class Evaluate(Section):
    # reports/errors.csv: at most this many misclassified test examples, the most confident first (0 = none).
    n_errors: int = Field(20, ge=0, le=10_000)


class Mlflow(Section):
    experiment: str = "twinline"  # 1 to 500 characters (MLflow's limit), no space at either end
    # A tracking server that is down or answers 5xx: each request is retried with exponential backoff
    # (backoff_s * 2**n seconds), then register stops with one line; rerunning it resumes the same run.
    http_retries: int = Field(3, ge=0, le=20)
    http_backoff_s: int = Field(1, ge=0, le=300)
    http_timeout_s: int = Field(30, ge=1, le=3600)

    @field_validator("experiment")
    @classmethod
    def experiment_name_mlflow_takes(cls, value):
        if not value.strip() or value != value.strip() or len(value) > 500:
            raise ValueError(
                f"{shorten(value)} is not an experiment name: use 1 to 500 characters, no space at either end"
            )
        return value


class Resources(Section):
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "4Gi"

    @field_validator("cpu_request", "cpu_limit", "memory_request", "memory_limit")
    @classmethod
    def positive_quantity(cls, value, info):
        import re

        cpu = info.field_name.startswith("cpu")
        if not re.fullmatch(CPU_QUANTITY if cpu else MEMORY_QUANTITY, value) or quantity(value) <= 0:
            raise ValueError(
                f"{shorten(value)} is not a positive Kubernetes quantity (e.g. "
                f"{'500m or 2' if cpu else '512Mi or 4Gi'})"
            )
        return value

    @model_validator(mode="after")
    def request_within_limit(self) -> Resources:
        for kind in ("cpu", "memory"):
            request, limit = getattr(self, f"{kind}_request"), getattr(self, f"{kind}_limit")
            if quantity(request) > quantity(limit):
                raise ValueError(
                    f"{kind}_request {request!r} is more than {kind}_limit {limit!r}; a pod cannot "
                    "request more than its limit"
                )
        return self


def quantity(text: str) -> float:
    """A Kubernetes quantity already checked against CPU_QUANTITY / MEMORY_QUANTITY, as a number (cores, bytes)."""
    import re

    match = re.fullmatch(r"([\d.]+)(\w*)", text)
    assert match, text  # the field validators accepted only such quantities
    number, suffix = match.groups()
    scale = {
        "": 1,
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "P": 1e15,
        "E": 1e18,
        **{f"{p}i": 1024 ** (i + 1) for i, p in enumerate("KMGTPE")},
    }[suffix]
    return float(number) * scale


class Toleration(Section):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


# A container image reference as the OCI distribution spec (github.com/distribution/reference) writes it:
# [host[:port]/]path[:tag][@algorithm:hex].
IMAGE_REFERENCE = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)


def check_image(reference: str) -> str:
    """reference, if it is a container image reference (IMAGE_REFERENCE); else ValueError saying what one is."""
    import re

    if not re.fullmatch(IMAGE_REFERENCE, reference):
        raise ValueError(
            f"{reference[:80]!r} is not a container image reference; write REGISTRY/NAME:TAG or "
            "REGISTRY/NAME@sha256:DIGEST (lower-case name)"
        )
    return reference


class Kubeflow(Section):
    """How the pipeline runs on a cluster; read when compiling, not by the stages themselves."""

    image: Annotated[str, AfterValidator(check_image)] = "ghcr.io/example/twinline:latest"
    mlflow_secret: str = "mlflow-credentials"
    resources: Resources = Resources()
    train_resources: Resources = Resources(cpu_request="2", cpu_limit="8", memory_request="4Gi", memory_limit="16Gi")
    gpu_node_selector: dict[str, str] = {}
    gpu_tolerations: list[Toleration] = [Toleration(key="nvidia.com/gpu", effect="NoSchedule")]
    # A PersistentVolumeClaim for train's per-epoch checkpoints: a retried or preempted train task resumes
    # from it instead of starting over ("" = no volume; a retry then starts from epoch 1).
    checkpoint_pvc: str = ""
    train_retries: int = Field(2, ge=0, le=20)
    # More than 1: the train task runs train on this many nodes (train.gpus GPUs each) as a Kubeflow Trainer
    # TrainJob (pipelines/trainjob.py), which needs checkpoint_pvc: a ReadWriteMany volume every node mounts.
    train_nodes: int = Field(1, ge=1, le=1000)
    training_runtime: str = "torch-distributed"  # the ClusterTrainingRuntime (or TrainingRuntime) the TrainJob names
    trainjob_timeout_s: int = Field(86_400, ge=60, le=30 * 86_400)  # the train task fails when not done by then
    # fetch reads a local path (file:// or plain) only under this folder, e.g. a data volume mounted there;
    # anything else the pod can read (/var/run/secrets/...) must never become an artifact others can read.
    data_root: str = "/mnt/data"

    @field_validator("checkpoint_pvc", "training_runtime")
    @classmethod
    def object_name(cls, value: str, info):
        import re

        # Kubernetes object names are DNS-1123 subdomains (RFC 1123: lower-case letters, digits, - and .)
        if (
            (value or info.field_name != "checkpoint_pvc")
            and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", value)
            or len(value) > 253
        ):
            raise ValueError(
                f"{shorten(value)} is not a Kubernetes object name (lower-case letters, digits, - and ., at most 253)"
            )
        return value

    @model_validator(mode="after")
    def nodes_share_a_volume(self) -> Kubeflow:
        if self.train_nodes > 1 and not self.checkpoint_pvc:
            raise ValueError(
                f"kubeflow.train_nodes {self.train_nodes} needs kubeflow.checkpoint_pvc: a ReadWriteMany "
                "PersistentVolumeClaim the train task and every node mount (inputs, checkpoints, the model)"
            )
        return self


class Serve(Section):
    """The online model server (`make serve`, components/serve.py) and the Kubeflow deploy step
    (pipelines/deploy.py) that rolls a promoted champion out as a KServe InferenceService."""

    max_request_bytes: int = Field(8 * 2**20, ge=1024, le=2**31)  # larger request bodies are refused (413)
    namespace: str = "twinline-serving"  # where deploy applies the InferenceService (k8s/base/serving)
    # traffic share of a new champion while the InferenceService still serves the previous one; 0 = replace at once
    canary_percent: int = Field(0, ge=0, le=100)
    ready_timeout_s: int = Field(600, ge=10, le=86_400)  # deploy fails when not Ready after this long
    resources: Resources = Resources(cpu_request="1", cpu_limit="2", memory_request="2Gi", memory_limit="4Gi")
    min_replicas: int = Field(1, ge=0, le=1000)
    max_replicas: int = Field(1, ge=1, le=1000)

    @model_validator(mode="after")
    def replicas_in_order(self) -> Serve:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"serve.min_replicas {self.min_replicas} is above serve.max_replicas {self.max_replicas}")
        return self

    @field_validator("namespace")
    @classmethod
    def namespace_name(cls, value):
        import re

        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
            raise ValueError(f"{shorten(value)} is not a Kubernetes namespace name (lower-case letters, digits, -)")
        return value


class Dimension(Section):
    """One axis of tune.space, exactly one of: choice (a list of values), uniform / loguniform ([low, high]
    floats, loguniform with low > 0) or int ([low, high], both included); Optuna's suggest_* names them."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    choice: list[Any] | None = Field(None, min_length=1)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    integer: tuple[int, int] | None = Field(None, alias="int")

    @model_validator(mode="after")
    def one_distribution(self) -> Dimension:
        given = [name for name in ("choice", "uniform", "loguniform", "integer") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of choice, uniform, loguniform, int")
        low_high = self.uniform or self.loguniform or self.integer
        if low_high is not None and not low_high[0] <= low_high[1]:
            raise ValueError(f"[low, high] must have low <= high, got {list(low_high)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {list(self.loguniform)}")
        return self


# What a trial may change: keys read by train alone. Keys of earlier stages (data, clean, split, normalise,
# augment, the tokenizer's text keys, seed) would need the splits prepared again per trial: refused.
TUNABLE_TEXT_KEYS = ("embedding_dim", "hidden_size", "dropout")  # the BiLSTM's sizes, read by train only
UNTUNABLE_TRAIN_KEYS = ("arch", "pretrained", "device", "gpus", "resume")  # normalise reads arch/pretrained


class Tune(Section):
    """`python -m pipelines.tune` (and the Kubeflow tuning pipeline): a search over train's params on the
    prepared splits, maximising validation macro-F1, with Optuna (TPE sampler, median pruner)."""

    # dotted params key -> distribution; the default: the learning rate, the CNN's width and the batch size
    space: dict[str, Dimension] = Field(
        default_factory=lambda: {
            "train.lr": Dimension(loguniform=(0.0003, 0.03)),
            "train.width": Dimension(choice=[16, 32, 64]),
            "train.batch_size": Dimension(choice=[32, 64, 128]),
        }
    )
    n_trials: int = Field(20, ge=1, le=10_000)
    parallelism: int = Field(1, ge=1, le=256)  # trials at a time (local: processes, each cores/parallelism threads)
    objective: Literal["val_macro_f1"] = "val_macro_f1"  # maximised: the best epoch's, as train keeps it
    seed: int = Field(42, ge=0, le=2**32 - 1)  # the sampler's
    pruning: bool = True  # stop a trial whose val macro-F1 at an epoch is below the median of earlier trials'
    pruning_startup_trials: int = Field(3, ge=0, le=10_000)  # trials that finish before any is pruned
    pruning_warmup_epochs: int = Field(2, ge=0, le=10_000)  # epochs of a trial before it may be pruned
    # Optuna's study: an SQLAlchemy URL; null = optuna.db beside the MLflow sqlite store (mlflow/optuna.db), or
    # in the project's mlflow/ folder when MLFLOW_TRACKING_URI is a server (a study is one user's search).
    storage: str | None = None

    @field_validator("space")
    @classmethod
    def keys_train_reads(cls, value):
        for key in value:
            check_tunable(key)
        return value


def check_tunable(key: str) -> None:
    """A ValueError naming `key` unless it is a params key that only train reads (see TUNABLE_TEXT_KEYS)."""
    import difflib

    section, _, name = key.partition(".")
    model = Params.model_fields.get(section)
    nested = model is not None and isinstance(model.annotation, type) and issubclass(model.annotation, BaseModel)
    fields = model.annotation.model_fields if nested else {}  # type: ignore[union-attr]
    top_level = model is not None and not nested and not name  # `seed`: a key of its own, read by every stage
    if not top_level and (name not in fields or "." in name):
        known = [
            f"{s}.{k}"
            for s, f in Params.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
            for k in f.annotation.model_fields
        ]
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "use a dotted key such as train.lr"
        raise ValueError(f"{key} is not a params key ({hint})")
    if section == "train" and name not in UNTUNABLE_TRAIN_KEYS or section == "text" and name in TUNABLE_TEXT_KEYS:
        return
    raise ValueError(
        f"{key} is read before train (or is not a model setting); the search trains on the prepared splits, so "
        f"it tunes train.* (but {', '.join(UNTUNABLE_TRAIN_KEYS)}) and text.{{{','.join(TUNABLE_TEXT_KEYS)}}}: "
        "remove it, or set it in params.yaml and rerun dvc repro augment first"
    )


# `register` is also a method of ABCMeta (pydantic's metaclass base); shadowing it on instances is harmless.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Params(Section):
    seed: int = Field(42, ge=0, le=2**32 - 1)  # numpy's legacy seeding takes at most 32 bits
    data: Data = Data()
    clean: Clean = Clean()
    split: Split = Split()
    normalise: Normalise = Normalise()
    augment: Augment = Augment()
    text: Text = Text()
    train: Train = Train()
    evaluate: Evaluate = Evaluate()
    register: Register = Register()
    mlflow: Mlflow = Mlflow()
    kubeflow: Kubeflow = Kubeflow()
    serve: Serve = Serve()
    tune: Tune = Tune()

    @model_validator(mode="after")
    def arch_fits_the_kind(self) -> Params:
        text_archs = ("bilstm", "transformer")
        if self.data.kind == "text" and self.train.arch not in text_archs:
            raise ValueError(
                f"train.arch {self.train.arch!r} (the default, when not set) is not a text network; for data.kind "
                "text set train.arch: bilstm or transformer"
            )
        if self.data.kind != "text" and self.train.arch in text_archs:
            raise ValueError(f"train.arch {self.train.arch} is for data.kind text, not {self.data.kind}")
        if self.data.kind == "text" and self.augment.generator != "none":
            raise ValueError(
                f"augment.generator {self.augment.generator} is for images and tables, not data.kind text; "
                "set augment.generator: none"
            )
        if self.train.arch == "transformer" and not self.train.pretrained:
            raise ValueError(
                "train.arch transformer needs train.pretrained: a checkpoint folder (e.g. "
                "models/all-MiniLM-L6-v2, which `make setup-text` exports) or a Hugging Face hub id"
            )
        return self


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; any problem becomes a one-line error naming the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run from the project root or pass --params") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise UserError(
            f"{path}{where}: not valid YAML ({exc.problem or exc.__class__.__name__}); fix the syntax"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid YAML ({exc.__class__.__name__}); fix the syntax") from None
    return validate_params(raw, str(path))


def validate_params(raw: dict, source: str) -> Params:
    """Validate a params mapping; the first problem becomes a one-line error naming `source` and the key.
    Raises UserError; an unknown key is named as such, with the closest known key of its section."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        if first["type"] == "extra_forbidden":
            raise UserError(f"{source}: {key}: unknown key ({closest_key(first['loc'])}); fix or remove it") from None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] != "value_error" and not isinstance(first.get("input"), dict):
            message += f" (got {shorten(first.get('input'))})"  # a custom check's message quotes it itself
        where = f"{key}: " if first["loc"] else ""  # a check across sections names its keys itself
        raise UserError(f"{source}: {where}{message}; fix this value") from None


def closest_key(loc: tuple) -> str:
    """ "did you mean 'train.epochs'?" for the loc ("train", "epoch"); the section's known keys when none is close."""
    import difflib

    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return "not in the schema"
        model = annotation
    match = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    if match:
        return f"did you mean {'.'.join([*map(str, loc[:-1]), match[0]])!r}?"
    return "known keys here: " + ", ".join(model.model_fields)

"""The Kubeflow tasks: one typed wrapper per stage, calling the same core function as the stage's DVC CLI.

pipelines/pipeline.py turns each into a lightweight component (`dsl.component`), which ships the function's
source alone to the container: a wrapper imports what it needs inside its body, from the project the image
has installed. Parameter and output names are the task's inputs and outputs in the compiled spec.
The components/ cores never import kfp: a DVC stage and the registered model run without it.
"""

from typing import NamedTuple

from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output


def fetch_step(
    raw: Output[Dataset],
    data_uri: str = "",
    dvc_repo: str = "",
    dvc_rev: str = "",
    dvc_path: str = "data/raw",
    data_root: str = "/mnt/data",
):
    """Kubeflow: the pipeline's first task; `raw` is the image folder, or a folder holding the table file,
    that the clean task reads. `data_root` is fixed when compiling (kubeflow.data_root), not a run parameter."""
    from pathlib import Path

    from components.fetch import fetch

    fetch(Path(raw.path), data_uri, dvc_repo, dvc_rev, dvc_path, data_root)


def clean_step(
    raw: Input[Dataset], data: dict, clean_cfg: dict, split: dict, clean: Output[Dataset], report: Output[Artifact]
):
    """Kubeflow: the same stage on the fetched data (a folder, or a folder holding the table file)."""
    from pathlib import Path

    from components.clean import clean_dataset
    from components.params import Clean, Data, Split

    # The sections clean reads, each validated alone: Params would check data.kind against a train.arch this
    # task is not given (the schema's default, cnn, is refused for data.kind text).
    data_cfg, cfg, split_cfg = Data.model_validate(data), Clean.model_validate(clean_cfg), Split.model_validate(split)
    clean_dataset(data_cfg, cfg, split_cfg, Path(clean.path), Path(report.path), Path(raw.path))


def normalise_step(
    clean: Input[Dataset],
    seed: int,
    data: dict,
    split: dict,
    normalise: dict,
    clean_cfg: dict,
    text: dict,
    train: dict,
    splits: Output[Dataset],
    preprocess: Output[Artifact],
    report: Output[Artifact],
):
    """Kubeflow: `splits` is a folder holding train/val/test; `preprocess` travels with the model. data and
    train: which kind, and for text which tokenizer (train.arch, train.pretrained)."""
    from pathlib import Path

    from components.normalise import normalise_files
    from components.params import Params

    sections = {"data": data, "split": split, "normalise": normalise, "clean": clean_cfg, "text": text, "train": train}
    params = Params.model_validate({"seed": seed, **sections})
    normalise_files(Path(clean.path), params, Path(splits.path), Path(preprocess.path), Path(report.path))


def augment_step(
    splits: Input[Dataset],
    preprocess: Input[Artifact],
    seed: int,
    augment: dict,
    checkpoint_dir: str,
    augmented: Output[Dataset],
    report: Output[Artifact],
    plot: Output[Artifact],
):
    """Kubeflow: augments the train split only; with augment.generator cvae it fits the generator, on a GPU when
    the task has one. checkpoint_dir: a mounted volume that outlives the pod, so a retried task resumes the
    generator's fit; "" = none. report: the counts and the gate (JSON); plot: what was added (PNG)."""
    from pathlib import Path

    from components.augment import augment_file
    from components.errors import UserError
    from components.params import Augment

    try:
        augment_file(
            Path(splits.path),
            Path(preprocess.path),
            Augment.model_validate(augment),
            seed,
            Path(augmented.path),
            Path(report.path),
            Path(plot.path),
            Path(checkpoint_dir) if checkpoint_dir else None,
        )
    except UserError as exc:  # the task's log ends with one line saying what to fix, as the CLI's would
        raise SystemExit(f"error: {exc}") from None


def train_step(
    augmented: Input[Dataset],
    splits: Input[Dataset],
    seed: int,
    data: dict,
    text: dict,
    train: dict,
    checkpoint_dir: str,
    trainjob: dict,
    model: Output[Model],
    train_info: Output[Artifact],
    history: Output[Artifact],
    timing: Output[Artifact],
):
    """Kubeflow: the GPU task, through the same CLI (so train.gpus > 1 runs torchrun here too).
    checkpoint_dir: a mounted volume that outlives the pod, so a retried task resumes; "" = none.
    trainjob: the kubeflow section (and image), fixed when compiling, when kubeflow.train_nodes > 1: then
    this task trains nowhere itself but through a Kubeflow Trainer TrainJob on that many nodes
    (pipelines/trainjob.py), the volume at checkpoint_dir shared with them. It needs no MLflow credentials:
    register logs the run."""
    import tempfile
    from pathlib import Path

    import yaml

    from components.train import main

    if trainjob:
        from components.errors import UserError
        from components.params import Params
        from pipelines.trainjob import run_trainjob

        params = Params.model_validate({"seed": seed, "data": data, "text": text, "train": train, "kubeflow": trainjob})
        outputs = {"model.pt": model, "train_info.json": train_info, "history.csv": history, "timing.json": timing}
        try:
            run_trainjob(
                params,
                Path(augmented.path),
                Path(splits.path) / "val.npz",
                {file: Path(artifact.path) for file, artifact in outputs.items()},
                shared=Path(checkpoint_dir),
            )
        except UserError as exc:  # the task's log ends with one line naming the failed node, as a CLI's would
            raise SystemExit(f"error: {exc}") from None
        return
    with tempfile.TemporaryDirectory() as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(yaml.safe_dump({"seed": seed, "data": data, "text": text, "train": train}))
        main(
            [
                "--params",
                str(params_file),
                "--train",
                augmented.path,
                "--val",
                str(Path(splits.path) / "val.npz"),
                "--model",
                model.path,
                "--info",
                train_info.path,
                "--history",
                history.path,
                "--timing",
                timing.path,
            ]
            + (["--checkpoints", checkpoint_dir] if checkpoint_dir else [])
        )


def evaluate_step(
    model: Input[Model],
    splits: Input[Dataset],
    evaluate: dict,
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    metrics_json: Output[Artifact],
    predictions: Output[Dataset],
    errors: Output[Dataset],
    plots: Output[Artifact],
):
    """Kubeflow: the same files, plus Metrics and ClassificationMetrics so the KFP UI shows them."""
    from pathlib import Path

    from components.evaluate import evaluate_files
    from components.params import Evaluate

    scores, matrix, classes = evaluate_files(
        Path(model.path),
        Path(splits.path) / "test.npz",
        Path(metrics_json.path),
        Path(predictions.path),
        Path(plots.path),
        Path(errors.path),
        Evaluate.model_validate(evaluate),
    )
    for key, value in scores.items():
        if key != "per_class":
            metrics.log_metric(key, value)
    confusion.log_confusion_matrix(classes, matrix.tolist())


def register_step(
    model: Input[Model],
    preprocess: Input[Artifact],
    splits: Input[Dataset],
    predictions: Input[Dataset],
    errors: Input[Dataset],
    metrics_json: Input[Artifact],
    plots: Input[Artifact],
    train_info: Input[Artifact],
    history: Input[Artifact],
    timing: Input[Artifact],
    clean_report: Input[Artifact],
    split_report: Input[Artifact],
    augment_report: Input[Artifact],
    augment_plot: Input[Artifact],
    seed: int,
    data: dict,
    clean_cfg: dict,
    split: dict,
    normalise: dict,
    augment: dict,
    text: dict,
    train: dict,
    register: dict,
    mlflow: dict,
    registration: Output[Artifact],
    report: Output[Markdown],
) -> NamedTuple("RegisterOutputs", [("promoted", bool), ("version", str)]):  # type: ignore[valid-type]
    """Kubeflow: takes every params section the run logs, as the DVC stage does. Never cached, since it reads
    and moves the registry's champion. MLflow's address and credentials come from a Kubernetes Secret.

    Returns the output parameters the pipeline's deploy condition reads: `version`, the registered version,
    and `promoted`, whether that version is the champion because of this registration and still is. A model
    registered before (a rerun of an older pipeline, its tasks cached) reports the decision made then; if
    the alias has moved on since, `promoted` is False, so the rerun cannot roll the served model back."""
    from collections import namedtuple
    from pathlib import Path

    from mlflow import MlflowClient

    from components.errors import unwind_on_sigterm
    from components.params import Params
    from components.register import ALIAS, StageFiles, register_files, summary_markdown

    unwind_on_sigterm()  # a deleted pod ends the MLflow run as FAILED
    params = Params.model_validate(
        {
            "seed": seed,
            "data": data,
            "clean": clean_cfg,
            "split": split,
            "normalise": normalise,
            "augment": augment,
            "text": text,
            "train": train,
            "register": register,
            "mlflow": mlflow,
        }
    )
    files = StageFiles(
        *(
            Path(a.path)
            for a in (
                model,
                preprocess,
                splits,
                predictions,
                errors,
                metrics_json,
                plots,
                train_info,
                history,
                clean_report,
                split_report,
                timing,
                augment_report,
                augment_plot,
            )
        )
    )
    result = register_files(params, files, Path(registration.path), engine="kubeflow")
    Path(report.path).write_text(summary_markdown(result))
    version = str(result["version"])
    promoted = bool(result["promoted"])
    if promoted:  # register_files pointed the client at the store; the alias may have moved since then
        champion = MlflowClient().get_model_version_by_alias(params.register.model_name, ALIAS).version
        promoted = str(champion) == version
    RegisterOutputs = namedtuple("RegisterOutputs", ["promoted", "version"])  # kfp reads the field names
    return RegisterOutputs(promoted, version)


def deploy_step(
    register: dict, version: str, serve: dict, image: str, mlflow_secret: str, inference_service: Output[Artifact]
):
    """Kubeflow: rolls `version` of register.model_name out to KServe (pipelines/deploy.py) and waits until
    it is Ready (serve.ready_timeout_s); the pipeline runs it only for a version register promoted. `image`
    (the server's) and `mlflow_secret` (the Secret of the serving namespace the server reads) are fixed when
    compiling. Talks to the Kubernetes API as the run's service account, never to MLflow.
    inference_service: the applied object, as YAML."""
    from pathlib import Path

    import yaml

    from components.params import Register, Serve
    from pipelines.deploy import deploy

    model_name = Register.model_validate(register).model_name
    result = deploy(model_name, version, Serve.model_validate(serve), image, mlflow_secret)
    Path(inference_service.path).write_text(yaml.safe_dump(result["manifest"], sort_keys=False))


def predict_step(data: Input[Dataset], model_uri: str, output_format: str, predictions: Output[Dataset]):
    """Kubeflow (the batch-scoring pipeline): the predictions of the registered model `model_uri` on the fetched
    data (a folder of images or texts, or a folder holding one table file), by the same function as `python -m
    components.predict`: an `id` column, `label`, one `prob_<class>` per class. output_format: csv or parquet.
    MLflow's address and credentials come from a Kubernetes Secret."""
    import shutil
    import tempfile
    from pathlib import Path

    from components.errors import UserError
    from components.predict import fetched_input, predict

    if output_format not in ("csv", "parquet"):
        raise UserError(f"output_format {output_format!r}: write csv or parquet")
    with tempfile.TemporaryDirectory() as tmp:
        written = Path(tmp) / f"predictions.{output_format}"  # predict writes the format its output's suffix names
        try:
            predict(model_uri, fetched_input(Path(data.path)), written)
        except UserError as exc:  # the task's log ends with one line saying what to fix, as the CLI's would
            raise SystemExit(f"error: {exc}") from None
        shutil.move(written, predictions.path)
    predictions.metadata.update({"format": output_format, "model_uri": model_uri})


def sample_trials_step(tune: dict, train: dict, text: dict) -> list:
    """Kubeflow (the tuning pipeline): tune.n_trials configurations of tune.space, sampled up front by Optuna's
    RandomSampler seeded with tune.seed (the trials run in parallel, so no trial can learn from another's
    score); each {"trial": i, "values": {dotted key: value}}."""
    from components.params import Tune
    from pipelines.tune import sample_up_front

    return sample_up_front(Tune.model_validate(tune))


def trial_step(
    augmented: Input[Dataset],
    splits: Input[Dataset],
    seed: int,
    data: dict,
    text: dict,
    train: dict,
    trial: dict,
    model: Output[Model],
    train_info: Output[Artifact],
    history: Output[Artifact],
    timing: Output[Artifact],
    result: Output[Artifact],
) -> float:
    """Kubeflow (the tuning pipeline): one trial, train with trial["values"] set; returns its validation
    macro-F1 (what train keeps), or -1.0 for a trial that failed: its error is in `result`, and the run goes on.
    result: JSON {trial, values, score, error, weights_hash}."""
    from pathlib import Path

    from pipelines.tune import run_trial_files

    return run_trial_files(
        Path(augmented.path),
        Path(splits.path) / "val.npz",
        {"seed": seed, "data": data, "text": text, "train": train},
        trial,
        {
            "model": Path(model.path),
            "info": Path(train_info.path),
            "history": Path(history.path),
            "timing": Path(timing.path),
            "result": Path(result.path),
        },
    )


def pick_best_step(
    results: Input[list[Artifact]],
    models: Input[list[Model]],
    train_infos: Input[list[Artifact]],
    histories: Input[list[Artifact]],
    timings: Input[list[Artifact]],
    text: dict,
    train: dict,
    model: Output[Model],
    train_info: Output[Artifact],
    history: Output[Artifact],
    timing: Output[Artifact],
    best: Output[Artifact],
) -> NamedTuple("BestTrial", [("train", dict), ("text", dict), ("score", float)]):  # type: ignore[valid-type]
    """Kubeflow (the tuning pipeline): the trial with the highest validation macro-F1 (the first on a tie); its
    model and train files, and the train and text sections it trained with (register logs those).
    best: JSON of every trial's result and the pick. Raises UserError when no trial finished."""
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from pipelines.tune import pick_best

    chosen, sections, score = pick_best(
        [Path(r.path) for r in results],
        [Path(i.path) for i in train_infos],
        {"text": text, "train": train},
        Path(best.path),
    )
    for inputs, output in ((models, model), (train_infos, train_info), (histories, history), (timings, timing)):
        shutil.copyfile(inputs[chosen].path, output.path)
    BestTrial = namedtuple("BestTrial", ["train", "text", "score"])  # kfp reads the field names
    return BestTrial(sections["train"], sections["text"], score)

"""The stage cores run without Kubeflow: kfp is needed by pipelines/ alone, never by a DVC stage or the served model."""

import subprocess
import sys

import pytest

from conftest import REPO

CORES = ["fetch", "clean", "normalise", "augment", "train", "evaluate", "register", "predict", "scoring", "serving"]


@pytest.mark.parametrize("core", CORES)
def test_importing_a_stage_core_loads_no_kfp(core):
    # A fresh interpreter: this test process may have imported kfp already (pipeline tests).
    probe = f"import sys, components.{core}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'kfp'))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"components.{core} imports kfp: {result.stdout.strip()[:200]}..."


def test_the_registered_model_does_not_require_kfp():
    from components import serving

    pins = serving.pinned_requirements()
    assert not [pin for pin in pins if pin.lower().startswith("kfp")], pins
    assert any(pin.startswith("torch==") for pin in pins) and any(pin.startswith("mlflow==") for pin in pins)


def test_batch_prediction_loads_neither_the_pyfunc_nor_scikit_learn():
    """predict and the loader it shares with a model server start in seconds: MLflow's pyfunc, scikit-learn (only a
    table model's own preprocessing needs it) and the training-only libraries stay unloaded until asked for."""
    heavy = ("mlflow.pyfunc", "sklearn", "matplotlib", "kornia", "pandera", "components.normalise")
    probe = (
        "import sys, components.predict, components.scoring, components.kinds, components.model, components.tracking; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", result.stdout

"""Pipeline components: clean -> normalise -> augment -> train -> evaluate -> register.

Each module holds a pure core function and a thin CLI used by DVC (``python -m components.<stage>``);
none imports kfp: the Kubeflow wrappers that call the same cores are in pipelines/steps.py.
"""

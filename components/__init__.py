"""Pipeline components: clean -> normalise -> augment -> train -> evaluate -> register.

Each module holds a pure core function, a thin CLI used by DVC (``python -m components.<stage>``)
and, from the Kubeflow issue on, a thin Kubeflow wrapper.
"""

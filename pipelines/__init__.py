"""Kubeflow pipeline definitions. The kfp v2 pipeline that runs the components/ stages on a
cluster is built in the Kubeflow issue; the DVC pipeline (dvc.yaml) is the one that runs today."""

"""The Kubeflow pipeline: pipeline.py defines it from the same components/ code that dvc.yaml runs;
compile, run_local (kfp.local, no cluster) and submit are its command-line entry points."""

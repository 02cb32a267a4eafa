"""The pipeline for Kubeflow Pipelines: its compiled YAML (the IR), which `kdflow submit` and `kdflow schedule`
upload.

    kdflow compile --output distillation.yaml
    kdflow compile --image-registry REGISTRY --gcp-key-secret SECRET --teacher-shards 4 --output distillation.yaml
"""

from kfp import compiler

from ..distillation import build_pipeline
from ..platform import Platform


def compile_pipeline(platform: Platform, output: str) -> None:
    """Writes the pipeline built for `platform` to `output` as KFP YAML."""
    compiler.Compiler().compile(build_pipeline(platform), package_path=output)

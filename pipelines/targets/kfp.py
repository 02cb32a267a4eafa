"""The pipeline for Kubeflow Pipelines: its compiled YAML (the IR), which `kdflow submit` and `kdflow schedule`
upload.

    kdflow compile --output distillation.yaml
    kdflow compile --image-registry REGISTRY --gcp-key-secret SECRET --teacher-shards 4 --output distillation.yaml
    kdflow compile --gpu-type nvidia-tesla-a100 --gpu-toleration nvidia.com/gpu=present:NoSchedule \\
        --gpu-step-requests cpu=8,memory=48Gi --cpu-step-limits cpu=2,memory=8Gi --output distillation.yaml

Node selectors, tolerations and secrets go into the pipeline's kfp-kubernetes platform spec, CPU and memory requests
and limits into the IR (see kdflow.pipelines.platform).
"""

from kfp import compiler

from ..distillation import build_pipeline
from ..platform import Platform


def compile_pipeline(platform: Platform, output: str) -> None:
    """Writes the pipeline built for `platform` to `output` as KFP YAML."""
    compiler.Compiler().compile(build_pipeline(platform), package_path=output)

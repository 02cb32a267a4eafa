"""Where the pipeline runs: compiled for Kubeflow Pipelines or Argo Workflows, run here with kfp.local, and the
container images those runs use."""

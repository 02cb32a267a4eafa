"""The kdflow pipeline (the DAG, its presets and platform), its targets, the Kubeflow Pipelines client and the
`kdflow` command line."""

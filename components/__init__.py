"""kdflow pipeline steps: one sub-package per step, each a KFP component plus the code it runs."""

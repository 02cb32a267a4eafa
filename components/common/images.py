"""Container images the components run in; the tag is the package version so a compiled pipeline pins the code."""

import os
from importlib.metadata import version

KDFLOW_VERSION = version("kdflow")
# Set at compile time (`KDFLOW_IMAGE_REGISTRY=...`); `localhost` is where local builds are tagged.
IMAGE_REGISTRY = os.environ.get("KDFLOW_IMAGE_REGISTRY", "localhost")

RUNTIME_IMAGE = f"{IMAGE_REGISTRY}/kdflow-cpu:{KDFLOW_VERSION}"
TRAINER_IMAGE = f"{IMAGE_REGISTRY}/kdflow-trainer:{KDFLOW_VERSION}"

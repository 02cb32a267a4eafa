"""Container images the components run in; the tag is the package version so a compiled pipeline pins the code.

Images are named REGISTRY/kdflow-KIND:VERSION. `localhost` is where `kdflow images build` tags local builds (and
where kfp.local's DockerRunner finds them); `kdflow compile --image-registry REGISTRY` names another registry.
"""

import os
import re
from importlib.metadata import version

from kdflow.components.common.errors import KdflowInputError

KDFLOW_VERSION = version("kdflow")
# KDFLOW_IMAGE_REGISTRY sets the default for a whole environment (the retraining CronJob compiles with it).
DEFAULT_REGISTRY = os.environ.get("KDFLOW_IMAGE_REGISTRY", "localhost")
# A host (with an optional port) and an optional path, as image references allow them.
REGISTRY_PATTERN = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*")
# An image reference: a registry path as above, then an optional tag and an optional digest.
IMAGE_PATTERN = re.compile(REGISTRY_PATTERN.pattern + r"(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?")
IMAGE_KINDS = ("cpu", "trainer")  # the CPU runtime image, and the CUDA image of the GPU steps


def image_name(kind: str, registry: str = DEFAULT_REGISTRY) -> str:
    return f"{registry}/kdflow-{kind}:{KDFLOW_VERSION}"


RUNTIME_IMAGE = image_name("cpu")
TRAINER_IMAGE = image_name("trainer")


def check_image(image: str, option: str) -> None:
    if not IMAGE_PATTERN.fullmatch(image):
        raise KdflowInputError(f"{option} {image!r} is not an image reference: give NAME[:TAG][@sha256:DIGEST] in lower "
                               "case, e.g. python:3.11-slim-bookworm.")


def check_registry(registry: str, option: str) -> None:
    """Stops early on a registry that would make invalid image names (a scheme, a trailing slash, capitals)."""
    if not REGISTRY_PATTERN.fullmatch(registry):
        raise KdflowInputError(f"{option} {registry!r} is not a registry path: give a host with an optional port and "
                               "path, in lower case, without scheme or tag, e.g. registry.example.com:5000/team.")

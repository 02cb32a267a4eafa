"""`kdflow images build`: the CPU runtime image and the CUDA trainer image, from images/ in a source checkout.

    kdflow images build                                   # both, tagged localhost/kdflow-KIND:VERSION
    kdflow images build --registry REGISTRY               # then: docker push REGISTRY/kdflow-KIND:VERSION
    kdflow images build --engine podman --only cpu --base-image MIRROR/python:3.11-slim -- --volume ...

Arguments after `--` go to the engine's build command as they are (a proxy's CA bundle, a pip.conf, ...).
"""

import shutil
import subprocess
from pathlib import Path

from kdflow.components.common.errors import KdflowFailure, KdflowInputError
from kdflow.components.common.images import KDFLOW_VERSION, check_image, check_registry, image_name

ENGINES = ("docker", "podman")
# The build context: the repository root, with images/ beside components/ and pipelines/.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def build_command(engine: str, kind: str, registry: str, base_image: str, engine_args: list[str]) -> list[str]:
    command = [engine, "build", "--file", str(SOURCE_ROOT / "images" / f"{kind}.Dockerfile"),
               "--tag", image_name(kind, registry), "--build-arg", f"KDFLOW_VERSION={KDFLOW_VERSION}"]
    if base_image:
        command += ["--build-arg", f"BASE_IMAGE={base_image}"]
    return [*command, *engine_args, str(SOURCE_ROOT)]


def default_engine() -> str:
    return next((engine for engine in ENGINES if shutil.which(engine)), ENGINES[0])


def build(engine: str, kinds: list[str], registry: str, base_image: str, engine_args: list[str]) -> None:
    """Builds each kind of image in turn; stops at the first that fails."""
    check_registry(registry, "--registry")
    if base_image:
        check_image(base_image, "--base-image")
    if not (SOURCE_ROOT / "images").is_dir():
        raise KdflowInputError(f"kdflow images build needs a source checkout, and {SOURCE_ROOT} has no images/ "
                               "folder: clone the repository and install it with `pip install -e .`.")
    if not shutil.which(engine):
        raise KdflowInputError(f"--engine {engine} is not on PATH: install it, or choose one of {', '.join(ENGINES)}.")
    for kind in kinds:
        command = build_command(engine, kind, registry, base_image, engine_args)
        print("+ " + " ".join(command), flush=True)
        if subprocess.run(command).returncode != 0:
            raise KdflowFailure(f"building {image_name(kind, registry)} failed; its log is above.")
        print(f"built {image_name(kind, registry)}", flush=True)

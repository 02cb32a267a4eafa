"""`kdflow run`: the whole pipeline on this machine with kfp.local, every step in this Python environment
(SubprocessRunner) or, with `--runner docker`, in its container image (DockerRunner).

The DockerRunner talks to the Docker API: Docker itself, or podman's Docker-compatible service
(`podman system service --time=0 unix:///PATH/podman.sock` and `DOCKER_HOST=unix:///PATH/podman.sock`).
The images must be built locally first (`kdflow images build`). On a host with NVIDIA GPUs the GPU steps run in
the trainer image with the GPUs passed in; on a host without, they run in the CPU image.
"""

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import kfp.local
from google.protobuf import json_format
from kfp.local import docker_task_handler

from kdflow.components.common.errors import KdflowFailure, KdflowInputError
from kdflow.components.common.images import image_name
from kdflow.components.common.step import read_error
from kdflow.components.common.training import RUN_NAME_ENV, run_name

from ..distillation import build_pipeline
from ..platform import Platform
from .run_folder import ANSI_ESCAPE

# Parameters that may name a local path, which the containers must see at the same path.
LOCAL_PATH_PARAMETERS = ("source", "teacher", "student", "tokenizer")
OUTPUT_PATH_PARAMETERS = ("publish_uri", "checkpoint_uri")
# Settings of the host passed into every container.
FORWARDED_ENVIRONMENT = ("HF_HUB_OFFLINE", "HF_TOKEN", RUN_NAME_ENV)


def run_locally(parameters: dict, pipeline_root: Path, runner: str = "subprocess",
                platform: Platform = Platform()) -> dict:
    """Runs the pipeline with kfp.local, its steps in this interpreter or in containers; returns its outputs by name.

    A step that stops on bad input leaves its sentence in its folder (kdflow.components.common.step), raised here as
    the KdflowInputError it was; any other failure raises KdflowFailure.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # One name for the run's trainings in the experiment tracker (the cluster's is its workflow's name).
    os.environ[RUN_NAME_ENV] = run_name()
    if runner == "docker":
        platform, task_runner = platform_and_runner(parameters, platform)
    else:
        task_runner = kfp.local.SubprocessRunner(use_venv=False)
    kfp.local.init(runner=task_runner, pipeline_root=str(pipeline_root))
    earlier_runs = set(pipeline_root.glob("*")) if pipeline_root.is_dir() else set()
    try:
        return build_pipeline(platform)(**parameters).outputs
    except RuntimeError as failure:
        for run_folder in set(pipeline_root.glob("*")) - earlier_runs:
            reason = read_error(run_folder)
            if reason:
                raise KdflowInputError(reason) from None
        raise KdflowFailure(f"the pipeline failed ({ANSI_ESCAPE.sub('', str(failure))})") from None


def step_names(platform: Platform) -> list[str]:
    """The names kfp.local gives the pipeline's steps as it runs them, those in conditions included."""
    spec = json_format.MessageToDict(build_pipeline(platform).pipeline_spec)

    def steps(component: dict):
        for name, task in component["dag"]["tasks"].items():
            inner = spec["components"][task["componentRef"]["name"]]
            yield from steps(inner) if "dag" in inner else [name]

    return list(steps(spec["root"]))


def with_absolute_local_paths(parameters: dict) -> dict:
    """The parameters with local paths made absolute: a container's working directory is not the caller's."""
    resolved = dict(parameters)
    for name in LOCAL_PATH_PARAMETERS + OUTPUT_PATH_PARAMETERS:
        value = parameters[name]
        # An output folder may not exist yet; an input is a local path only if it exists (else a hub id, a spec).
        is_local = "://" not in value if name in OUTPUT_PATH_PARAMETERS else Path(value).exists()
        if value and is_local:
            resolved[name] = str(Path(value).resolve())
    return resolved


def platform_and_runner(parameters: dict, platform: Platform) -> tuple[Platform, kfp.local.DockerRunner]:
    """`platform` with the images this host can run, and a DockerRunner that mounts what the steps read and write.

    Checks the engine and the images before any step starts.
    """
    client = docker_client()
    gpus = host_has_gpus()
    gpu_step_image = "trainer" if gpus else "cpu"
    missing = [image for image in {image_name("cpu"), image_name(gpu_step_image)} if not image_exists(client, image)]
    if missing:
        only = "" if gpus else " --only cpu"
        raise KdflowInputError(f"--runner docker needs the image {' and '.join(sorted(missing))}, which is not built "
                               f"here: run `kdflow images build{only}` first.")
    # kfp 2.17 takes a container that was removed before its exit status was read for a success (KFP issue
    # 13332), so a step that failed fast passed; this keeps each container until its status is read.
    docker_task_handler.run_docker_container = run_container
    runner = kfp.local.DockerRunner(**container_run_args(parameters, gpus))
    return replace(platform, gpu_step_image=gpu_step_image), runner


def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise KdflowInputError(
            f"--runner docker found no Docker engine at {os.environ.get('DOCKER_HOST') or 'the default socket'} "
            f"({error}): start Docker, or start `podman system service --time=0 unix:///PATH/podman.sock` and set "
            "DOCKER_HOST=unix:///PATH/podman.sock."
        ) from None
    return client


def image_exists(client, image: str) -> bool:
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def host_has_gpus() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True)
    return listing.returncode == 0 and "GPU" in listing.stdout


def container_run_args(parameters: dict, gpus: bool) -> dict:
    """`docker run` arguments of every step (docker SDK names); kfp.local mounts the pipeline root itself."""
    import docker

    mounts = [docker.types.Mount(target=parameters[name], source=parameters[name], type="bind", read_only=True)
              for name in LOCAL_PATH_PARAMETERS if Path(parameters[name]).is_absolute()]
    for name in OUTPUT_PATH_PARAMETERS:
        if Path(parameters[name]).is_absolute():
            Path(parameters[name]).mkdir(parents=True, exist_ok=True)
            mounts.append(docker.types.Mount(target=parameters[name], source=parameters[name], type="bind"))
    arguments = {
        # The caller's user, so that the artifacts in the pipeline root are theirs.
        "user": f"{os.getuid()}:{os.getgid()}",
        "mounts": mounts,
        "environment": {name: os.environ[name] for name in FORWARDED_ENVIRONMENT if name in os.environ},
    }
    if gpus:
        arguments["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return arguments


def run_container(client, image: str, command: list[str], volumes: dict, **container_run_args) -> int:
    """Runs one step's container, streams its log and returns its exit status (kfp.local's own, fixed)."""
    print(f"Running {image} as user {container_run_args['user']}")
    container = client.containers.run(image=image, command=command, volumes=volumes, detach=True,
                                      **container_run_args)
    try:
        for chunk in container.logs(stream=True, follow=True):
            print(chunk.decode(errors="replace"), end="")
        return container.wait()["StatusCode"]
    finally:
        container.remove(force=True)

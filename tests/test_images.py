"""The image definitions, their names in the compiled pipeline, and what a docker run of the pipeline mounts."""

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from kdflow.components.common.images import KDFLOW_VERSION
from kdflow.pipelines import presets
from kdflow.pipelines.targets import images, local
from kdflow.pipelines.cli import main

ROOT = Path(__file__).parents[1]
DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))


def test_both_dockerfiles_pass_hadolint():
    assert [path.name for path in DOCKERFILES] == ["cpu.Dockerfile", "trainer.Dockerfile"]
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    linted = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_images_install_only_the_lock_and_run_as_a_non_root_user(dockerfile):
    # Joined continuation lines: one RUN instruction per line.
    instructions = dockerfile.read_text().replace("\\\n", " ").splitlines()
    installs = [line for line in instructions if "pip install" in line]
    assert len(installs) == 2, installs
    # The dependencies exactly as locked, then kdflow itself without resolving anything again.
    assert "--requirement /opt/kdflow-src/images/requirements.txt" in installs[0]
    assert "--no-deps /opt/kdflow-src" in installs[1]
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_images_install_kdflow_without_the_benchmarks(dockerfile):
    instructions = dockerfile.read_text().replace("\\\n", " ").splitlines()
    [install] = [line for line in instructions if "--no-deps /opt/kdflow-src" in line]
    install_command, removal, *_ = (shlex.split(command) for command in install.removeprefix("RUN ").split("&&"))
    assert install_command == ["pip", "install", "--no-deps", "/opt/kdflow-src"]
    # In the same RUN, so the installed benchmarks never reach a layer; `rm -r` without -f, so a path that matches
    # nothing (another venv layout) fails the build instead of leaving them in.
    assert removal[:2] == ["rm", "-r"] and "/opt/kdflow-src/pipelines/bench" in removal[2:]
    site_packages = sysconfig.get_path("purelib", "posix_prefix", {"base": "/opt/kdflow"})  # the image's venv
    assert any(fnmatchcase(f"{site_packages}/kdflow/pipelines/bench", path) for path in removal[2:]), removal


def test_bench_where_the_benchmarks_are_not_installed_says_where_to_run_them(capsys, monkeypatch):
    # As in the images: no kdflow.pipelines.bench.
    for name in [name for name in sys.modules if name.startswith("kdflow.pipelines.bench.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "kdflow.pipelines.bench", None)
    assert main(["bench", "train", "--teacher", "teacher", "--data", "data"]) == 2
    assert capsys.readouterr().err.strip() == (
        "kdflow: error: the benchmarks are not installed in this image: run them from a source checkout "
        "(`pip install -e .`).")


def test_every_dependency_is_pinned_in_the_images_within_its_range():
    import tomllib

    pins = {}
    for line in (ROOT / "images" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in map(Requirement, dependencies):
        pinned = pins.get(dependency.name.lower().replace("_", "-"))
        assert pinned, f"{dependency.name} is not pinned in images/requirements.txt"
        assert dependency.specifier.contains(pinned), f"{dependency.name}=={pinned} is outside {dependency.specifier}"


def compiled_images(tmp_path, *options) -> set[str]:
    subprocess.run([sys.executable, "-m", "kdflow.pipelines.cli", "compile", *options, "--output",
                    str(tmp_path / "p.yaml")], check=True, capture_output=True)
    executors = yaml.safe_load((tmp_path / "p.yaml").read_text())["deploymentSpec"]["executors"]
    return {executor["container"]["image"] for executor in executors.values()}


def test_compile_names_the_images_in_the_given_registry_with_the_package_version(tmp_path):
    assert compiled_images(tmp_path, "--image-registry", "registry.example.com:5000/team") == {
        f"registry.example.com:5000/team/kdflow-cpu:{KDFLOW_VERSION}",
        f"registry.example.com:5000/team/kdflow-trainer:{KDFLOW_VERSION}",
    }
    assert compiled_images(tmp_path) == {f"localhost/kdflow-cpu:{KDFLOW_VERSION}",
                                         f"localhost/kdflow-trainer:{KDFLOW_VERSION}"}


def test_no_step_installs_anything_at_run_time():
    executors = yaml.safe_load((ROOT / "pipelines" / "distillation.yaml").read_text())["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        command = " ".join(executor["container"]["command"] + executor["container"].get("args", []))
        assert "pip install" not in command and "kdflow.components." in command, name


@pytest.mark.parametrize("arguments", [
    ["compile", "--image-registry", "https://registry.example.com"],
    ["compile", "--image-registry", "Registry.example.com/"],
    ["images", "build", "--registry", "registry.example.com/team:v1"],
])
def test_a_bad_registry_is_refused_in_one_sentence(tmp_path, capsys, arguments):
    assert main([*arguments, "--output", str(tmp_path / "p.yaml")] if arguments[0] == "compile" else arguments) == 2
    error = capsys.readouterr().err.strip()
    assert "is not a registry path" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "p.yaml").exists()


def test_images_build_without_the_engine_says_which_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["images", "build", "--engine", "podman"]) == 2
    assert "--engine podman is not on PATH" in capsys.readouterr().err


def test_each_image_is_built_from_its_dockerfile_with_the_version_and_the_chosen_base():
    command = images.build_command("podman", "trainer", "registry.example.com/team", "mirror/python:3.11",
                                        ["--volume", "a:b"])
    assert command[:2] == ["podman", "build"]
    assert command[command.index("--file") + 1] == str(ROOT / "images" / "trainer.Dockerfile")
    assert command[command.index("--tag") + 1] == f"registry.example.com/team/kdflow-trainer:{KDFLOW_VERSION}"
    assert f"KDFLOW_VERSION={KDFLOW_VERSION}" in command and "BASE_IMAGE=mirror/python:3.11" in command
    assert command[-3:] == ["--volume", "a:b", str(ROOT)]  # engine arguments, then the context: the repository
    assert "BASE_IMAGE=" not in " ".join(images.build_command("docker", "cpu", "localhost", "", []))


def test_a_docker_run_mounts_local_inputs_read_only_and_the_output_folders_writable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    parameters = local.with_absolute_local_paths(
        presets.resolve("smoke", {"publish_uri": "published", "checkpoint_uri": "checkpoints"}, data="data"))
    assert parameters["source"] == str(tmp_path / "data")
    assert parameters["publish_uri"] == str(tmp_path / "published")
    assert parameters["teacher"] == "config:tiny-bert"  # not a path: left as it is

    arguments = local.container_run_args(parameters, gpus=False)
    mounts = {mount["Target"]: mount for mount in arguments["mounts"]}
    assert set(mounts) == {str(tmp_path / name) for name in ("data", "published", "checkpoints")}
    assert mounts[str(tmp_path / "data")]["ReadOnly"] and not mounts[str(tmp_path / "published")]["ReadOnly"]
    assert not mounts[str(tmp_path / "checkpoints")]["ReadOnly"]
    assert (tmp_path / "published").is_dir()
    assert arguments["user"] == f"{os.getuid()}:{os.getgid()}"
    assert "device_requests" not in arguments


def test_a_docker_run_on_a_gpu_host_requests_every_gpu():
    arguments = local.container_run_args(presets.resolve("smoke", {}), gpus=True)
    [request] = arguments["device_requests"]
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]


def test_a_docker_run_without_an_engine_stops_in_one_sentence_before_any_step(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    assert main(["run", "--runner", "docker", "--preset", "smoke", "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "--runner docker found no Docker engine" in error and "DOCKER_HOST" in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "out" / "pipeline_root").exists()

"""The image definitions, their names in the compiled pipeline, and what a docker run of the pipeline mounts."""

import os
import re
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
LOCKS = sorted((ROOT / "images").glob("*.txt"))
TORCH_LOCKS = {"cpu.Dockerfile": "torch-cpu.txt", "trainer.Dockerfile": "torch-cuda.txt"}
# The trainer's torch and the CUDA libraries it pulls in: in its own lock, never in the shared one.
CUDA_BUILD = re.compile(r"torch|triton|nvidia-.*|cuda-.*")


def lock_entries(path: Path) -> list[str]:
    """A hashed lock's requirements, each on one line with its --hash options."""
    lines = path.read_text().replace("\\\n", " ").splitlines()
    return [" ".join(line.split()) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def locked(path: Path) -> dict[str, str]:
    """{normalized name: version} of a lock's pins."""
    pins = {}
    for entry in lock_entries(path):
        name, version = entry.split()[0].split("==")
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


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
    # The dependencies exactly as locked, every file checked against its hash: this image's torch and the shared rest.
    assert "--require-hashes" in installs[0]
    assert (f"--requirement /opt/kdflow-src/images/{TORCH_LOCKS[dockerfile.name]} "
            "--requirement /opt/kdflow-src/images/requirements.txt") in installs[0]
    # Then kdflow itself, without resolving or downloading anything again.
    assert "--no-deps --no-index --no-build-isolation /opt/kdflow-src" in installs[1]
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_images_install_kdflow_without_the_benchmarks(dockerfile):
    instructions = dockerfile.read_text().replace("\\\n", " ").splitlines()
    [install] = [line for line in instructions if line.startswith("RUN pip install --no-deps")]
    install_command, removal, *_ = (shlex.split(command) for command in install.removeprefix("RUN ").split("&&"))
    assert install_command == ["pip", "install", "--no-deps", "--no-index", "--no-build-isolation", "/opt/kdflow-src"]
    # In the same RUN, so the installed benchmarks never reach a layer; `rm -r` without -f, so a path that matches
    # nothing (another venv layout) fails the build instead of leaving them in.
    assert removal[:2] == ["rm", "-r"] and "/opt/kdflow-src/pipelines/bench" in removal[2:]
    site_packages = sysconfig.get_path("purelib", "posix_prefix", {"base": "/opt/kdflow"})  # the image's venv
    assert any(fnmatchcase(f"{site_packages}/kdflow/pipelines/bench", path) for path in removal[2:]), removal


def test_bench_where_the_benchmarks_are_not_installed_says_where_to_run_them(capsys, monkeypatch, tmp_path):
    # As in the images: no kdflow.pipelines.bench.
    for name in [name for name in sys.modules if name.startswith("kdflow.pipelines.bench.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "kdflow.pipelines.bench", None)
    assert main(["bench", "train", "--teacher", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "kdflow: error: the benchmarks are not installed in this image: run them from a source checkout "
        "(`pip install -e .`).")


@pytest.mark.parametrize("torch_lock", sorted(TORCH_LOCKS.values()))
def test_every_dependency_is_pinned_in_the_images_within_its_range(torch_lock):
    import tomllib

    pins = locked(ROOT / "images" / "requirements.txt") | locked(ROOT / "images" / torch_lock)
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in map(Requirement, dependencies):
        pinned = pins.get(re.sub(r"[-_.]+", "-", dependency.name).lower())
        assert pinned, f"{dependency.name} is not pinned in images/requirements.txt or images/{torch_lock}"
        assert dependency.specifier.contains(pinned), f"{dependency.name}=={pinned} is outside {dependency.specifier}"


def test_every_locked_requirement_is_an_exact_pin_with_hashes():
    assert [path.name for path in LOCKS] == ["requirements.txt", "torch-cpu.txt", "torch-cuda.txt"]
    for path in LOCKS:
        assert lock_entries(path), path.name
        for entry in lock_entries(path):
            pin, *options = entry.split()
            assert "==" in pin and options, f"{path.name}: {pin} is not pinned with hashes"
            assert all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", option) for option in options), entry


def test_both_images_get_the_same_torch_release_and_the_shared_lock_no_cuda():
    pins = {path.name: locked(path) for path in LOCKS}
    assert not [name for name in pins["requirements.txt"] if CUDA_BUILD.fullmatch(name)]
    assert all(CUDA_BUILD.fullmatch(name) for name in pins["torch-cuda.txt"])
    assert pins["torch-cpu.txt"] == {"torch": pins["torch-cuda.txt"]["torch"] + "+cpu"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_base_image_is_a_build_argument_pinned_by_digest(dockerfile):
    instructions = dockerfile.read_text().splitlines()
    defaults = dict(line.removeprefix("ARG ").split("=", 1) for line in instructions
                    if line.startswith("ARG ") and "=" in line)
    assert [line for line in instructions if line.startswith("FROM ")] == ["FROM ${BASE_IMAGE}"]
    # The tag for readers, the digest of its multi-arch index for the build; the same base for both images.
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", defaults["BASE_IMAGE"])
    assert defaults["BASE_IMAGE"] in (ROOT / "images" / "cpu.Dockerfile").read_text()


# A resolution as `uv pip compile --generate-hashes` writes it: a pin, its hashes, then the packages it is there for.
RESOLUTION = """\
accelerate==1.15.0 \\
    --hash=sha256:{a}
    # via kdflow (pyproject.toml)
nvidia-cublas==13.1.1.3 \\
    --hash=sha256:{b}
    # via torch
torch==2.13.0 \\
    --hash=sha256:{c} \\
    --hash=sha256:{d}
    # via
    #   kdflow (pyproject.toml)
    #   accelerate
typing-extensions==4.16.0 \\
    --hash=sha256:{e}
    # via torch
""".format(**{letter: letter * 64 for letter in "abcde"})


def test_the_lock_script_gives_torch_and_its_cuda_libraries_to_the_trainer_lock_alone(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ["lock", "cpu.Dockerfile", "requirements.txt", *TORCH_LOCKS.values()]:
        shutil.copy2(ROOT / "images" / name, tmp_path / "images" / name)
    shutil.copy2(ROOT / "pyproject.toml", tmp_path)
    # A stand-in for uv: the resolution goes to --output-file (the last argument); the CPU pin comes back hashed.
    (tmp_path / "resolution.txt").write_text(RESOLUTION)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "uv").write_text(f"""#!/bin/sh
echo "$*" >>{tmp_path}/uv-calls
case "$*" in
    *--output-file*) for last; do :; done; cp {tmp_path}/resolution.txt "$last" ;;
    *) read -r pin; printf '%s \\\\\\n    --hash=sha256:{"f" * 64}\\n' "$pin" ;;
esac
""")
    (tmp_path / "bin" / "uv").chmod(0o755)
    subprocess.run([tmp_path / "images" / "lock"], check=True,
                   env={**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})

    images_dir = tmp_path / "images"
    assert locked(images_dir / "requirements.txt") == {"accelerate": "1.15.0", "typing-extensions": "4.16.0"}
    assert locked(images_dir / "torch-cuda.txt") == {"nvidia-cublas": "13.1.1.3", "torch": "2.13.0"}
    assert lock_entries(images_dir / "torch-cpu.txt") == [f"torch==2.13.0+cpu --hash=sha256:{'f' * 64}"]
    # Each entry keeps its hashes and "via" lines; each lock opens with how to refresh it.
    assert "#   accelerate" in (images_dir / "torch-cuda.txt").read_text()
    for name in ["requirements.txt", *TORCH_LOCKS.values()]:
        assert "images/lock" in (images_dir / name).read_text().splitlines()[2], name
    cpu_index = re.search(r"^ARG TORCH_INDEX_URL=(.+)$", (ROOT / "images" / "cpu.Dockerfile").read_text(), re.M)[1]
    assert f"--index-url {cpu_index}" in (tmp_path / "uv-calls").read_text().splitlines()[1]


def compiled_images(tmp_path, *options) -> set[str]:
    subprocess.run([sys.executable, "-m", "kdflow.pipelines.cli", "compile", *options, "--output",
                    str(tmp_path / "p.yaml")], check=True, capture_output=True)
    executors = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))["deploymentSpec"]["executors"]
    return {executor["container"]["image"] for executor in executors.values()}


def test_compile_names_the_images_in_the_given_registry_with_the_package_version(tmp_path):
    assert compiled_images(tmp_path, "--image-registry", "registry.example.com:5000/team") == {
        f"registry.example.com:5000/team/kdflow-cpu:{KDFLOW_VERSION}",
        f"registry.example.com:5000/team/kdflow-trainer:{KDFLOW_VERSION}",
    }
    assert compiled_images(tmp_path) == {f"localhost/kdflow-cpu:{KDFLOW_VERSION}",
                                         f"localhost/kdflow-trainer:{KDFLOW_VERSION}"}


def test_no_step_installs_anything_at_run_time():
    executors = next(yaml.safe_load_all((ROOT / "pipelines" / "distillation.yaml").read_text()))["deploymentSpec"]["executors"]
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

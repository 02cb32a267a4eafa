"""`kdflow run --runner docker`: every step in its image, through a Docker API (Docker, or podman's socket).

Skipped where no engine answers or the CPU image is not built (`kdflow images build --only cpu`); CI sets
KDFLOW_CONTAINER_TESTS=required, which turns those skips into failures.
"""

import contextlib
import json
import os
import time
from pathlib import Path

import pytest

from kdflow.components.common.images import RUNTIME_IMAGE
from kdflow.pipelines.cli import main

pytestmark = [pytest.mark.containers, pytest.mark.slow]


def container_engine_problem() -> str | None:
    """Why the container tests cannot run here, or None when they can."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException:
        return (f"no Docker API at {os.environ.get('DOCKER_HOST') or 'the default socket'}: start Docker, or "
                "`podman system service` and set DOCKER_HOST")
    try:
        client.images.get(RUNTIME_IMAGE)
    except docker.errors.ImageNotFound:
        return f"{RUNTIME_IMAGE} is not built: run `kdflow images build --only cpu`"
    return None


@pytest.fixture(scope="module", autouse=True)
def container_engine():
    problem = container_engine_problem()
    if problem and os.environ.get("KDFLOW_CONTAINER_TESTS") == "required":
        pytest.fail(f"KDFLOW_CONTAINER_TESTS=required, but {problem}")
    if problem:
        pytest.skip(problem)


def test_a_step_failing_in_its_container_fails_the_run_with_its_reason(tmp_path, capsys, data_without_a_text_column):
    # data_prep fails within seconds: the case in which kfp.local took a failed container for a success.
    output = tmp_path / "out"
    assert main(["run", "--runner", "docker", "--preset", "smoke", "--data", str(data_without_a_text_column),
                 "--output", str(output)]) == 2
    captured = capsys.readouterr()
    assert f"Running {RUNTIME_IMAGE}" in (output / "logs" / "data-prep.log").read_text()
    error = captured.err.strip().splitlines()[-1]
    assert "text_column" in error and "review" in error  # read from the mounted folder, inside the container
    assert not (output / "summary.json").exists()


@pytest.mark.slow
def test_the_smoke_run_in_containers_meets_the_smoke_bar(tmp_path):
    output = tmp_path / "smoke"
    assert main(["run", "--runner", "docker", "--preset", "smoke", "--output", str(output)]) == 0
    assert f"Running {RUNTIME_IMAGE}" in (output / "logs" / "distill.log").read_text()
    summary = json.loads((output / "summary.json").read_text())
    assert summary["student"]["accuracy"] >= 0.90
    assert summary["onnx"]["max_abs_diff"] <= 1e-4
    student = Path(summary["artifacts"]["student"])
    assert (student / "model.safetensors").exists()
    assert student.stat().st_uid == os.getuid()  # written by the caller's user, not the image's


def test_the_image_has_no_benchmarks():
    import docker

    with pytest.raises(docker.errors.ContainerError) as failed:
        # Folders that exist in the image, so that the options pass their checks and the missing module shows.
        docker.from_env().containers.run(RUNTIME_IMAGE, ["kdflow", "bench", "train", "--teacher", "/tmp", "--data",
                                                         "/tmp"], remove=True)
    assert failed.value.exit_status == 2
    assert b"the benchmarks are not installed in this image" in failed.value.stderr


def test_kdflow_serve_runs_in_the_image_as_its_non_root_user_and_stops_gracefully(tmp_path, tokenizer_dir,
                                                                                  prepared_data_dir):
    import docker
    import httpx
    from test_serve import MODEL, export_student, free_port, publish

    destination = tmp_path / "published"
    publish(export_student(tmp_path / "export", tokenizer_dir, prepared_data_dir, seed=0), str(destination), "v1",
            0.90, prepared_data_dir)
    destination.chmod(0o755)  # readable by the image's user
    port = free_port()
    container = docker.from_env().containers.run(
        RUNTIME_IMAGE, ["kdflow", "serve", f"/models/{MODEL}", "--http-port", "8080"], detach=True,
        volumes={str(destination): {"bind": "/models", "mode": "ro"}}, ports={"8080/tcp": ("127.0.0.1", port)})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            container.reload()
            assert container.status != "exited", container.logs().decode()
            time.sleep(0.5)
        response = httpx.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": ["a fine film"]}, timeout=30)
        assert response.status_code == 200, container.logs().decode()
        assert response.json()["predictions"][0]["label"] in {"negative", "positive"}
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "1000"
        container.stop(timeout=30)  # SIGTERM, then uvicorn's graceful shutdown
        assert container.wait(timeout=60)["StatusCode"] == 0, container.logs().decode()
    finally:
        container.remove(force=True)

"""The folder of a `kdflow run`: one run at a time, a line per step, each step's log in OUTPUT/logs, and Ctrl-C
ending in one line and exit status 130."""

import fcntl
import os
import signal
import subprocess
import sys
import time

from kdflow.pipelines.cli import main
from kdflow.pipelines.targets.run_folder import LOCK_FILE


def wait_for(condition, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_second_run_into_the_folder_is_refused_and_ctrl_c_ends_the_first_in_one_line(tmp_path, capsys):
    output = tmp_path / "run"
    # A terminal's Ctrl-C signals the whole foreground process group: the CLI and the step it runs.
    first = subprocess.Popen([sys.executable, "-m", "kdflow.pipelines.cli", "run", "--preset", "smoke", "--output",
                              str(output)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        wait_for(lambda: (output / "logs" / "data-prep.log").exists())

        assert main(["run", "--preset", "smoke", "--output", str(output)]) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"--output {output} is in use by another kdflow run (process {first.pid}, started " in error, error

        os.killpg(first.pid, signal.SIGINT)
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 130, err
    assert out.splitlines()[0] == "data-prep: running", out
    assert err.strip().splitlines() == [err.strip().splitlines()[-1]], err  # one line, no traceback
    assert err.startswith("kdflow: interrupted in data-prep after "), err
    assert f"outputs stay in {output / 'pipeline_root'} and their logs in {output / 'logs'}" in err
    assert not (output / "summary.json").exists()
    # The lock went with the process: the folder is free for the next run.
    with open(output / LOCK_FILE) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_each_step_has_its_log_and_a_failure_names_it(tmp_path, capsys):
    output = tmp_path / "run"
    assert main(["run", "--preset", "smoke", "--output", str(output), "--data", str(tmp_path / "missing")]) == 2
    printed = capsys.readouterr()
    log = output / "logs" / "data-prep.log"
    started, failed = printed.out.splitlines()
    assert started == "data-prep: running" and failed.startswith("data-prep: FAILED after "), printed.out
    assert failed.endswith(f"; its log: {log}"), failed
    assert "Traceback" not in printed.out + printed.err  # it is in the log, not on the terminal
    assert "Traceback" in log.read_text() and "KdflowInputError" in log.read_text()
    assert "Executing task 'data-prep'" in (output / "logs" / "run.log").read_text()
    assert printed.err.strip().startswith("kdflow: error: source=")

"""The folder of a `kdflow run`: one run at a time, a line per step (a live line with a progress bar on a
terminal), each step's log in OUTPUT/logs, and Ctrl-C ending in one line and exit status 130."""

import fcntl
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from kdflow.pipelines.cli import main
from kdflow.pipelines.targets import run_folder
from kdflow.pipelines.targets.run_folder import LOCK_FILE


def wait_for(condition, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_second_run_into_the_folder_is_refused_and_ctrl_c_ends_the_first_in_one_line(tmp_path, capsys):
    output = tmp_path / "run"
    # A terminal's Ctrl-C signals the whole foreground process group: the CLI and the step it runs. A process
    # started in the background of a shell without job control (as CI may run the tests) inherits SIGINT ignored,
    # and Python then leaves it ignored: the run starts with SIGINT at its default, as a terminal's command does.
    first = subprocess.Popen([sys.executable, "-m", "kdflow.pipelines.cli", "run", "--preset", "smoke", "--output",
                              str(output)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # The signal lands inside a step that is running.
        train_log = output / "logs" / "teacher-train.log"
        wait_for(lambda: train_log.exists() and train_log.stat().st_size > 0)

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
    # data_prep takes seconds: on a busy machine it may be done before the signal lands.
    assert re.match(r"kdflow: interrupted in (data-prep|teacher-train) after ", err), err
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


@pytest.mark.slow
def test_verbose_streams_kfp_locals_output_and_still_keeps_the_logs(tmp_path, capsys):
    output = tmp_path / "run"
    assert main(["run", "--preset", "smoke", "--output", str(output), "--data", str(tmp_path / "missing"),
                 "--verbose"]) == 2
    printed = capsys.readouterr()
    streamed = run_folder.ANSI_ESCAPE.sub("", printed.out)  # kfp.local's colours, as it prints them
    assert "Executing task 'data-prep'" in streamed and "Traceback" in streamed
    assert "data-prep: running" not in streamed  # no step lines over the stream
    assert streamed.count("KdflowInputError") == (output / "logs" / "data-prep.log").read_text().count(
        "KdflowInputError") > 0
    assert printed.err.strip().startswith("kdflow: error: source=")


def run_on_a_terminal(arguments: list[str], columns: int = 120) -> tuple[int, str]:
    """`kdflow ARGUMENTS` on a pseudo-terminal of this width, as a person runs it; its exit status and output."""
    import fcntl as control
    import pty
    import struct
    import termios

    main_end, terminal = pty.openpty()
    control.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "kdflow.pipelines.cli", *arguments], stdin=terminal,
                               stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(main_end, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        output += chunk
    os.close(main_end)
    return process.wait(timeout=60), output.decode(errors="replace")


@pytest.mark.slow
def test_on_a_terminal_each_step_is_a_live_line_with_a_progress_bar(tmp_path):
    output = tmp_path / "run"
    status, shown = run_on_a_terminal(["run", "--preset", "smoke", "--output", str(output), "--set",
                                       "max_train_samples=300", "--set", "max_eval_samples=100", "--set",
                                       "teacher_epochs=1", "--set", "epochs=1"])
    assert status == 0, shown
    # The live line: a step's elapsed time, then its training bar with steps, loss, samples/s and time left.
    assert re.search(r"data-prep: running \d\d:\d\d", shown), shown
    bar = re.search(r"distill training: +\d+%\|.*\| (\d+)/(\d+) \[\d\d:\d\d<\d\d:\d\d, .*steps/s, loss=[\d.]+, "
                    r"samples_per_s=[\d.]+\]", shown)
    assert bar, shown
    assert re.search(r"teacher-eval scoring: +\d+%\|.*rows", shown), shown
    # What stays on the screen: a line per step, the results table and where things are; at most about 40 lines.
    # A line as the screen keeps it: what its last carriage return left (the terminal ends lines with \r\n).
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in shown.split("\n")]
    steps = ["data-prep", "teacher-train", "teacher-eval", "distill", "student-eval", "onnx-export"]
    for step in steps:
        assert f"{step}: done in " in "\n".join(lines), (step, lines)
    assert "teacher-check: skipped (its condition was false)" in lines  # the smoke preset trains its teacher
    assert any(line.startswith("student ") for line in lines) and f"logs: {output / 'logs'}" in shown
    assert len(lines) <= 40, lines
    assert "Traceback" not in shown and "Executing task" not in shown
    assert (output / "logs" / "distill.log").read_text().count("kdflow-progress ") >= 1

"""The folder of a `kdflow run` (`--output`): held by one run at a time, and holding each step's log.

    OUTPUT/summary.json, quality_report.html   the results (written last, by the CLI)
    OUTPUT/logs/run.log                         everything kfp.local printed: the steps' executor input and output
    OUTPUT/logs/STEP.log                        one step's part of it (kfp.local runs one task at a time)
    OUTPUT/pipeline_root/                       the artifacts of every run into this folder
"""

import fcntl
import json
import os
import re
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from kdflow.components.common.errors import KdflowInputError

LOCK_FILE = ".kdflow-run.lock"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# The lines kfp.local logs around each task (kfp/local/task_dispatcher.py), colour codes removed.
TASK_STARTED = re.compile(r"Executing task '([^']+)'")
TASK_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")


@contextmanager
def held(output: Path):
    """Holds `output` for this run: creates it, and refuses it while another run holds it. The lock is an flock on
    LOCK_FILE, so it goes with the process that held it, however that process ended."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        lock = open(output / LOCK_FILE, "a+")
    except OSError as error:
        raise KdflowInputError(f"--output {output} cannot be written ({error.strerror}): give a folder you may "
                               "write.") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = json.loads(lock.read() or "{}")
            raise KdflowInputError(
                f"--output {output} is in use by another kdflow run (process {holder.get('pid', '?')}, started "
                f"{holder.get('started', 'at an unknown time')}): wait for it to end, or give another --output."
            ) from None
        lock.truncate(0)
        lock.write(json.dumps({"pid": os.getpid(), "started": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"}))
        lock.flush()
        yield


class StepLogs:
    """kfp.local's output, split into one log file per step, with a plain line on `show` as each step starts and
    ends; `verbose` shows everything as it comes instead."""

    def __init__(self, folder: Path, show: TextIO, verbose: bool):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.show, self.verbose = folder, show, verbose
        self.run_log = open(folder / "run.log", "w")
        self.step_log: TextIO | None = None
        self.step, self.started, self.failed_log = "", 0.0, None
        self.pending = ""

    def write(self, text: str) -> int:
        if self.verbose:
            self.show.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.take(ANSI_ESCAPE.sub("", line) + "\n")
        return len(text)

    def take(self, line: str) -> None:
        started = TASK_STARTED.search(line)
        if started:
            self.step, self.started = started[1], time.monotonic()
            self.step_log = open(self.folder / f"{self.step}.log", "w")
            self.say(f"{self.step}: running")
        self.run_log.write(line)
        if self.step_log:
            self.step_log.write(line)
        finished = TASK_FINISHED.search(line)
        if finished and self.step_log:
            self.step_log.close()
            took = f"{time.monotonic() - self.started:.0f} s"
            if finished[2] == "SUCCESS":
                self.say(f"{self.step}: done in {took}")
            else:
                self.failed_log = self.step_log.name
                self.say(f"{self.step}: FAILED after {took}; its log: {self.failed_log}")
            self.step_log, self.step = None, ""

    @contextmanager
    def capturing(self):
        """Everything printed inside (kfp.local's log, each step's streamed output) goes to the logs; closes them."""
        try:
            with redirect_stdout(self), redirect_stderr(self):
                yield self
        finally:
            self.close()

    def say(self, line: str) -> None:
        if not self.verbose:
            print(line, file=self.show, flush=True)

    encoding = "utf-8"  # what a stream offers that libraries read

    def isatty(self) -> bool:
        return False

    def flush(self) -> None:
        self.run_log.flush()
        if self.step_log:
            self.step_log.flush()

    def close(self) -> None:
        if self.pending:
            self.take(self.pending + "\n")
            self.pending = ""
        for log in (self.step_log, self.run_log):
            if log:
                log.close()

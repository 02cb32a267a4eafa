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
import threading
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from kdflow.components.common import progress
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
    """kfp.local's output, split into one log file per step, with the steps shown on `show` as they run (a line
    as each starts and ends; on a terminal a live line with its elapsed time and progress bar instead); `verbose`
    shows everything as it comes."""

    def __init__(self, folder: Path, show: TextIO, verbose: bool):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.show, self.verbose = folder, show, verbose
        self.view = None if verbose else (TerminalView if show.isatty() else PlainView)(show)
        self.run_log = open(folder / "run.log", "w")
        self.step_log: TextIO | None = None
        self.step, self.started, self.failed_log = "", 0.0, None
        self.seen: list[str] = []  # the steps that ran, in order
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
            self.seen.append(self.step)
            self.step_log = open(self.folder / f"{self.step}.log", "w")
            if self.view:
                self.view.started(self.step)
        self.run_log.write(line)
        if self.step_log:
            self.step_log.write(line)
        report = progress.parse(line)
        if report and self.view:
            self.view.progress(self.step, report)
        finished = TASK_FINISHED.search(line)
        if finished and self.step_log:
            self.step_log.close()
            took = f"{time.monotonic() - self.started:.0f} s"
            if finished[2] == "SUCCESS":
                outcome = f"{self.step}: done in {took}"
            else:
                self.failed_log = self.step_log.name
                outcome = f"{self.step}: FAILED after {took}; its log: {self.failed_log}"
            if self.view:
                self.view.finished(outcome)
            self.step_log, self.step = None, ""

    @contextmanager
    def capturing(self):
        """Everything printed inside (kfp.local's log, each step's streamed output) goes to the logs; closes them."""
        try:
            with redirect_stdout(self), redirect_stderr(self):
                yield self
        finally:
            self.close()

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
        if self.view:
            self.view.close()
        for log in (self.step_log, self.run_log):
            if log:
                log.close()


class PlainView:
    """The steps as plain lines, for a pipe or a CI log: one as each step starts, one as it ends."""

    def __init__(self, show: TextIO):
        self.show = show

    def started(self, step: str) -> None:
        print(f"{step}: running", file=self.show, flush=True)

    def progress(self, step: str, report: dict) -> None:
        """Plain lines leave progress to the step's log."""

    def finished(self, outcome: str) -> None:
        print(outcome, file=self.show, flush=True)

    def close(self) -> None:
        pass


class TerminalView(PlainView):
    """The running step as one live line (tqdm): its elapsed time, then a progress bar while it trains or scores
    (done of total, loss, samples/s, time left); replaced by its outcome line when it ends."""

    TICK_S = 0.5  # how often the elapsed time is redrawn between the steps' own progress reports

    def __init__(self, show: TextIO):
        super().__init__(show)
        self.bar, self.phase = None, None
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(target=self.tick, daemon=True).start()

    def started(self, step: str) -> None:
        self.open_bar(lambda: tqdm(desc=step, bar_format="{desc}: running {elapsed}", file=self.show, leave=False))

    def progress(self, step: str, report: dict) -> None:
        phase = (report["what"], report["total"])
        if phase != self.phase:
            self.open_bar(lambda: tqdm(desc=f"{step} {report['what']}", total=report["total"],
                                       unit=f" {report['unit']}", file=self.show, leave=False, dynamic_ncols=True),
                          phase)
        with self.lock:
            figures = {name: report[name] for name in ("loss", "samples_per_s") if report.get(name) is not None}
            self.bar.set_postfix(figures, refresh=False)
            self.bar.update(report["done"] - self.bar.n)

    def finished(self, outcome: str) -> None:
        self.open_bar(None)
        super().finished(outcome)

    def open_bar(self, make, phase=None) -> None:
        """Replaces the live line by the bar `make` makes (none when it is None): the old one goes first, so the
        new one takes its place on the terminal."""
        with self.lock:
            if self.bar is not None:
                self.bar.close()
            self.bar, self.phase = make() if make else None, phase

    def tick(self) -> None:
        while not self.stopped.wait(self.TICK_S):
            with self.lock:
                if self.bar is not None:
                    self.bar.refresh()

    def close(self) -> None:
        self.stopped.set()
        self.open_bar(None)

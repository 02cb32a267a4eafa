"""Progress of a step's long loops (training, scoring), as lines its output carries to whoever shows the run.

A step prints `kdflow-progress {json}` lines at most once a second (and at the end); `kdflow run` turns them into
a progress bar on a terminal (kdflow.pipelines.targets.run_folder). On a cluster they are plain lines in the step's
log, where they also say how far a step got.
"""

import json
import time

MARKER = "kdflow-progress "
INTERVAL_S = 1.0


class Progress:
    """Reports `done` of `total` units of work, throttled to one line per INTERVAL_S."""

    def __init__(self, what: str, total: int, unit: str):
        self.what, self.total, self.unit = what, total, unit
        self.started = self.last = time.monotonic()

    def update(self, done: int, **figures) -> None:
        now = time.monotonic()
        if now - self.last < INTERVAL_S and done < self.total:
            return
        self.last = now
        line = {"what": self.what, "done": done, "total": self.total, "unit": self.unit, **figures}
        print(MARKER + json.dumps(line), flush=True)


def parse(line: str) -> dict | None:
    """The progress a step's output line reports, or None for any other line."""
    start = line.find(MARKER)
    if start < 0:
        return None
    try:
        return json.loads(line[start + len(MARKER):])
    except ValueError:
        return None

"""Running a step from its command line, `python -m kdflow.components.<step>.task`: what the Argo target and a user
run, and what the KFP component runs too, through kdflow.components.common.component.

A step's task.py defines `Settings`, `Files` and `Result` (see kdflow.components.common.settings; `Settings` and
`Result` may be None) and `run(settings, files) -> Result`; its `main` is `step.main(sys.modules[__name__], argv)`.
"""

import json
import logging
import sys
from dataclasses import fields
from pathlib import Path

from .errors import KdflowInputError
from .settings import from_arguments, is_output, parser, write_result

# Written beside a failed step's outputs: the one sentence of a KdflowInputError, where `kdflow run` reads it.
ERROR_FILE = "kdflow_error.json"


def main(task, argv: list[str] | None = None) -> None:
    """Parses the task's flags, runs it, and writes what it returns; an input error exits 2 with its sentence."""
    arguments = parser(task.__doc__, task.Settings, task.Files, task.Result).parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    files = from_arguments(task.Files, arguments)
    try:
        result = run(task, arguments, files)
    except KdflowInputError as error:
        print(f"kdflow: error: {error}", file=sys.stderr)
        sys.exit(2)
    if task.Result:
        write_result(result, arguments)


def run(task, values, files):
    """`task.run` on the settings found in `values`; an input error is also left as ERROR_FILE beside the outputs."""
    try:
        settings = from_arguments(task.Settings, values) if task.Settings else None
        return task.run(settings, files)
    except KdflowInputError as error:
        leave_error(files, error)
        raise


def leave_error(files, error: KdflowInputError) -> None:
    outputs = [getattr(files, item.name) for item in fields(files) if is_output(item)]
    folder = Path(outputs[0]).parent
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ERROR_FILE).write_text(json.dumps({"error": str(error)}))


def read_error(folder: Path) -> str | None:
    """The sentence a failed step left in its folder (or any folder below), if it left one."""
    found = sorted(Path(folder).rglob(ERROR_FILE))
    return json.loads(found[0].read_text())["error"] if found else None

"""A step's interface, declared once, as dataclasses whose fields carry their type and help text.

Each step's settings.py declares three of them (its task.py imports them):
- its **settings**: the parameters it takes, checked when made (`CheckedSettings`: what each type asks, then the
  step's `check`; one `KdflowInputError` sentence each), as transformers' TrainingArguments does. They have no
  defaults: a default lives in the pipeline's parameter alone (presets override it), so every setting is required on
  the task's command line and in the KFP component;
- its **files**: the artifacts it reads (`artifact`) and writes (`artifact(..., output=True)`), as paths;
- its **result**: the values it returns to the pipeline (`returned`), written to files on the command line.

From them come the task's command line (`parser`, `as_arguments`), the KFP component's docstring and signature
check (kdflow.components.common.component), the checkpoint identity and the provenance record (`record`). A field's
name is the KFP input or output name, and its flag is that name with dashes: the Argo target needs no table.

Light on purpose (standard library only): the CLI checks a whole parameter set with these classes before a run.
"""

import argparse
import dataclasses
import json
import math
import unicodedata
from dataclasses import field, fields
from pathlib import Path
from typing import Any

from .errors import KdflowInputError


class CheckedSettings:
    """Base of every step's `Settings`: a value is checked when the settings are made, first against what its type
    asks (a finite number, a text without control characters), then by the step's own `check`."""

    def __post_init__(self):
        for item in fields(self):
            check_value(item.name, getattr(self, item.name), item.type)
        self.check()

    def check(self) -> None:
        """The step's checks of its values and their combinations, one KdflowInputError sentence each."""


def check_value(name: str, value, kind: type) -> None:
    """What any setting of type `kind` must be: no nan or inf (they pass every comparison check unnoticed or
    fail deep in a library) and no control character (a newline in a name would inject lines into reports and
    paths)."""
    if kind is float and not math.isfinite(value):
        raise KdflowInputError(f"{name}={value} must be a finite number.")
    if kind is str:
        control = next((character for character in value if unicodedata.category(character) == "Cc"), None)
        if control is not None:
            raise KdflowInputError(f"{name}={value!r} holds the control character {control!r}: remove it.")


def setting(help: str) -> Any:
    """A setting of a step: required (its default is the pipeline parameter's), with the help users read."""
    return field(metadata={"help": help})


def artifact(help: str, *, output: bool = False, optional: bool = False) -> Any:
    """A file or folder the step reads (or, with `output`, writes); an optional input may be absent (empty path)."""
    return field(default="" if optional else dataclasses.MISSING,
                 metadata={"help": help, "output": output, "optional": optional})


def returned(help: str, *, uri_of: str = "") -> Any:
    """A value the step returns to the pipeline. `uri_of` names an output artifact whose URI the value is: a later
    step loads that artifact by URI (the KFP component fills the value in from the artifact)."""
    return field(default=None, metadata={"help": help, "uri_of": uri_of})


def help_of(declaration: type) -> dict[str, str]:
    """Field name -> its help text, in declaration order."""
    return {item.name: item.metadata["help"] for item in fields(declaration)}


def is_output(item: dataclasses.Field) -> bool:
    return item.metadata.get("output", False)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return text.lower() == "true"


# How a command-line word becomes a setting's value, by the field's type.
PARSERS = {bool: parse_bool, int: int, float: float, str: str}


def parser(description: str, settings: type | None, files: type, result: type | None) -> argparse.ArgumentParser:
    """The task's command line: a flag for every file, setting and returned value (the file it is written to)."""
    command = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for item in fields(files):
        many = item.type == list[str]
        command.add_argument(flag(item.name), required=not item.metadata["optional"], nargs="+" if many else None,
                             default=item.default if item.metadata["optional"] else None,
                             help=("write: " if is_output(item) else "read: ") + item.metadata["help"])
    for item in fields(settings) if settings else ():
        command.add_argument(flag(item.name), type=PARSERS[item.type], required=True, help=item.metadata["help"])
    for item in fields(result) if result else ():
        command.add_argument(flag(item.name), metavar="PATH", help=f"write {item.name} here: {item.metadata['help']}")
    return command


def from_arguments(declaration: type, arguments: argparse.Namespace | dict):
    """An instance of `declaration` from parsed flags, or from a mapping holding (at least) its fields."""
    values = arguments if isinstance(arguments, dict) else vars(arguments)
    return declaration(**{item.name: values[item.name] for item in fields(declaration)})


def as_arguments(values) -> list[str]:
    """The flags that give `values` (settings or files) on the task's command line: `from_arguments`'s inverse."""
    words = []
    for item in fields(values):
        value = getattr(values, item.name)
        if isinstance(value, list):
            words += [flag(item.name), *value]
        elif value != "" or not item.metadata.get("optional"):
            words += [flag(item.name), str(value).lower() if isinstance(value, bool) else str(value)]
    return words


def record(settings, *leave_out: str) -> dict:
    """The settings as a plain dict (provenance, checkpoint identity), without the fields named in `leave_out`."""
    return {name: value for name, value in dataclasses.asdict(settings).items() if name not in leave_out}


def write_result(result, arguments: argparse.Namespace) -> None:
    """Writes each returned value whose flag was given to its file, as JSON (booleans true/false, as workflow
    conditions compare them)."""
    for item in fields(result):
        path = getattr(arguments, item.name, None)
        if path:
            value = getattr(result, item.name)
            Path(path).write_text(value if isinstance(value, str) else json.dumps(value))


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise KdflowInputError(f"{name}={value!r} is not one of {', '.join(choices)}: pick one of them.")


def check_seed(seed: int) -> None:
    # NumPy's and so the Trainer's set_seed take 0 to 2**32 - 1; anything else fails inside a step.
    if not 0 <= seed < 2**32:
        raise KdflowInputError(f"seed={seed} must lie in [0, 2**32): e.g. 42.")


def check_row_count(name: str, value: int) -> None:
    if value < 0:
        raise KdflowInputError(f"{name}={value} must be a row count, or 0 for all rows.")


def check_positive(settings, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if not value > 0:
            raise KdflowInputError(f"{name}={value} must be above 0.")

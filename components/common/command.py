"""A step as a command, `python -m kdflow.components.<step>.task`: how its KFP component's inputs and outputs map
onto the task's flags. Each component.py declares one `COMMAND`; the Argo Workflows target
(kdflow.pipelines.argo) builds every container's command line from it and from the component itself.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TaskCommand:
    """The flag of an input or output is `--NAME` with dashes unless `renamed` says otherwise.

    renamed: input or output name -> its flag, where the task calls it differently (data_prep's `data` is `--output`).
    not_written: outputs the command does not write: the KFP UI's widgets, and return values no step reads.
    returns_input: return value -> the input the step hands on unchanged (teacher_check returns its `teacher`).
    returns_uri_of: return value -> the output artifact whose URI it is (teacher_train returns its model's URI).
    """

    renamed: dict[str, str] = field(default_factory=dict)
    not_written: tuple[str, ...] = ()
    returns_input: dict[str, str] = field(default_factory=dict)
    returns_uri_of: dict[str, str] = field(default_factory=dict)

    def flag(self, name: str) -> str:
        return self.renamed.get(name, "--" + name.replace("_", "-"))

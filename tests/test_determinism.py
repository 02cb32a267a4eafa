"""The same seed, data and settings give the same tokenizer and the same student, whatever the thread settings.

Each training runs in a fresh process, so that the environment is the one a user has: CI exports
TOKENIZERS_PARALLELISM=false (conftest.py does too), which a user's shell usually does not.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Trains data_prep's WordPiece tokenizer on the smoke preset's synthetic texts; prints the vocabulary as JSON.
TRAIN_TOKENIZER = """
import json
from kdflow.components.data_prep import synthetic, task
texts = synthetic.generate(3000, seed=42)["text"]
print(json.dumps(task.train_wordpiece(texts, task.WORDPIECE_VOCAB_SIZE, 128).get_vocab(), sort_keys=True))
"""
RUN_CLI = "import sys; from kdflow.pipelines.cli import main; sys.exit(main(sys.argv[1:]))"
# The smoke preset made smaller: one whole smoke run took 14 minutes here on 2 shared cores. 1,000 training texts
# still gave another WordPiece vocabulary in each training before the fix.
SMALLER = ["--set", "max_train_samples=1000", "--set", "max_eval_samples=200", "--set", "teacher_epochs=1",
           "--set", "epochs=1"]


def environment(**variables) -> dict:
    """This process's environment without TOKENIZERS_PARALLELISM or RAYON_NUM_THREADS, then `variables`."""
    inherited = {name: value for name, value in os.environ.items()
                 if name not in ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS")}
    return {**inherited, **variables}


def run_python(arguments: list[str], env: dict, timeout: int) -> str:
    """Runs `python ARGUMENTS` in a fresh process; its standard output."""
    done = subprocess.run([sys.executable, *arguments], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def trained_vocabulary(env: dict) -> dict:
    return json.loads(run_python(["-c", TRAIN_TOKENIZER], env, timeout=300))


def test_wordpiece_vocabulary_does_not_depend_on_thread_settings():
    # Before the fix every process trained another vocabulary (598 or 599 tokens), whatever these variables said.
    first = trained_vocabulary(environment())
    second = trained_vocabulary(environment(TOKENIZERS_PARALLELISM="false", RAYON_NUM_THREADS="1",
                                            PYTHONHASHSEED="1"))
    assert len(first) > 500
    assert first == second


def smoke_run(output) -> dict:
    """`kdflow run --preset smoke`, smaller, into `output`, as a user runs it (TOKENIZERS_PARALLELISM unset); its
    summary."""
    run_python(["-c", RUN_CLI, "run", "--preset", "smoke", "--output", str(output), *SMALLER], environment(),
               timeout=1800)
    return json.loads((output / "summary.json").read_text())


def student_tensors(folder) -> dict:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no safetensors file in {folder}"
    return {name: tensor for file in files for name, tensor in load_file(str(file)).items()}


@pytest.mark.slow
def test_two_smoke_runs_give_the_same_tokenizer_and_student(tmp_path):
    from transformers import AutoTokenizer

    students = [Path(smoke_run(tmp_path / run)["artifacts"]["student"]) for run in ("first", "second")]
    first, second = (AutoTokenizer.from_pretrained(str(student)).get_vocab() for student in students)
    assert first == second
    first, second = (student_tensors(student) for student in students)
    assert first.keys() == second.keys()
    different = [name for name in first if not first[name].equal(second[name])]
    assert not different, f"{len(different)} of {len(first)} tensors differ, e.g. {different[:3]}"

"""`kdflow bench int8`: the accuracy of an export's int8 file on OpenVINO for several kinds of CPU, on one machine.

    kdflow bench int8 --export ONNX_DIR --data PREPARED_DIR [--also OTHER.onnx ...] --output bench/int8

ONNX_DIR is an onnx_export output folder (or a published version); its fp32 model.onnx and static int8
model.int8.qdq.onnx, and any --also file (another int8 file of the same model, to compare), are scored on the test
split of PREPARED_DIR (a data_prep output) by OpenVINO, once per CPU kind. A CPU kind is imitated by capping the
instruction set of the kernels (`ONEDNN_MAX_CPU_ISA`, read by OpenVINO's CPU plugin when a process starts, so each
kind scores in a process of its own) and the inference precision of what is not int8 (CPU_KINDS): this CPU as it is
(OpenVINO's default precision: bf16 where the CPU has bf16 kernels), AVX512 with VNNI and no bf16, AVX512 without
VNNI, and AVX2 (which has no VNNI either: its int8 products add pairs in 16 bits, which can saturate). Each figure is
the accuracy on the same rows, and each int8 file's drop from fp32 is in points, for the same kind. Table to stdout,
everything to OUTPUT/bench_int8.json and bench_int8.md.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kdflow.components.common.errors import KdflowInputError


@dataclass(frozen=True)
class CpuKind:
    isa: str | None  # the instruction set the kernels are capped at; None: this CPU's
    precision: str | None  # OpenVINO's inference precision; None: its default on this CPU


# The CPU kinds. The capped ones have no bf16 kernels, so they run at f32: OpenVINO chooses its default precision by
# the CPU, not by the cap, and on a CPU with AVX512-BF16 it chose bf16 and found no AVX2 kernel for it (Softmax).
CPU_KINDS = {
    "this CPU": CpuKind(None, None),
    "AVX512 with VNNI, no bf16": CpuKind("AVX512_CORE_VNNI", "f32"),
    "AVX512, no VNNI": CpuKind("AVX512_CORE", "f32"),
    "AVX2, no VNNI": CpuKind("AVX2", "f32"),
}
REFERENCE = "model.onnx"
DEFAULT = "default"  # the scoring process's word for OpenVINO's default precision


def bench_int8(*, export: str, data: str, output: str, also: tuple[str, ...] = (), max_eval_samples: int = 0) -> dict:
    from kdflow.components.common.results import EXPORTS

    files = [Path(export, REFERENCE), Path(export, EXPORTS["int8_qdq"].file), *map(Path, also)]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise KdflowInputError(f"{', '.join(missing)} not found: give an onnx_export output folder as --export and "
                               "existing ONNX files as --also.")
    if not Path(data, "data_info.json").is_file():
        raise KdflowInputError(f"--data {data} is not a data_prep output (no data_info.json): give the prepared data "
                               "the model was exported from.")
    start = time.perf_counter()
    accuracies = {name: score_in_process(export, files, data, max_eval_samples, kind)
                  for name, kind in CPU_KINDS.items()}
    names = [str(path) for path in files]
    result = {
        "export": export, "data": data, "cpu_kinds": {name: asdict(kind) for name, kind in CPU_KINDS.items()},
        "files": names, "accuracy": accuracies,
        "drop_points": {kind: {name: round(100 * (scores[names[0]] - scores[name]), 2) for name in names[1:]}
                        for kind, scores in accuracies.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_int8.json").write_text(json.dumps(result, indent=2))
    table = int8_table(result)
    (out / "bench_int8.md").write_text(table + "\n")
    print(table)
    return result


def score_in_process(export: str, files: list[Path], data: str, max_eval_samples: int,
                     kind: CpuKind) -> dict[str, float]:
    """Each file's test accuracy, scored by a process as on a CPU of `kind`."""
    environment = {**os.environ, **({"ONEDNN_MAX_CPU_ISA": kind.isa} if kind.isa else {})}
    command = [sys.executable, "-m", "kdflow.pipelines.bench.int8", export, data, str(max_eval_samples),
               kind.precision or DEFAULT, *map(str, files)]
    scored = subprocess.run(command, env=environment, capture_output=True, text=True)
    if scored.returncode:
        raise RuntimeError(f"Scoring as {kind} failed: {scored.stderr.strip()[-2000:]}")
    return json.loads(scored.stdout.strip().splitlines()[-1])


def int8_table(result: dict) -> str:
    kinds = list(result["accuracy"])
    lines = ["| file | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for name in result["files"]:
        cells = [f"{result['accuracy'][kind][name]:.4f}" + (
            f" ({0.0 - result['drop_points'][kind][name] + 0.0:+.2f})" if name in result["drop_points"][kind] else "")
            for kind in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("Test accuracy on OpenVINO (this CPU at its default precision, the others at f32); in brackets, "
                 f"points against the fp32 {REFERENCE} on the same CPU kind. {result['seconds']} s.")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """In the scoring process: EXPORT DATA MAX_EVAL_SAMPLES PRECISION FILE...; prints {file: accuracy} as JSON, last
    line."""
    from transformers import AutoConfig, AutoTokenizer

    from kdflow.components.common import models
    from kdflow.components.common.data import load_prepared
    from kdflow.components.onnx_export.int8 import accuracy
    from kdflow.components.onnx_export.task import labelled_batches, student_test_split

    export, data_dir, max_eval_samples, precision, *files = argv
    tokenizer = AutoTokenizer.from_pretrained(export)  # the rows as the student reads them, as onnx_export scores
    test = student_test_split(load_prepared(data_dir), tokenizer, int(max_eval_samples))
    rows = labelled_batches(test, tokenizer, models.decision_thresholds(AutoConfig.from_pretrained(export)))
    chosen = None if precision == DEFAULT else precision
    print(json.dumps({name: accuracy(name, rows, chosen) for name in files}))


if __name__ == "__main__":
    main(sys.argv[1:])

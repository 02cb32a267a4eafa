"""The report step's interface: the files it reads and writes, the values it returns (it has no settings).

Light (standard library only), like every step's declarations.
"""

from dataclasses import dataclass

from kdflow.components.common.settings import artifact, returned


Settings = None


@dataclass(frozen=True)
class Files:
    teacher_metrics: str = artifact("The teacher's test metrics, size and latency from teacher_eval.")
    student_metrics: str = artifact("The distilled student's test metrics, size, latency and gate from "
                                    "student_eval.")
    student: str = artifact("The distilled student from distill (its training log gives the loss curves).")
    onnx_model: str = artifact("The ONNX export folder from onnx_export, with its report.")
    quality_report: str = artifact("Accuracy, macro F1, parameters, size and latency of every model, the "
                                   "distillation losses, the confusion matrices and where the trainings were logged "
                                   "(report_to), as a self-contained HTML page.", output=True)
    baseline_metrics: str = artifact("The test metrics from student_eval of the hard-label baseline made from the "
                                     "fine-tuned teacher's layers; absent when it was not trained.", optional=True)
    pretrained_baseline_metrics: str = artifact("The test metrics from student_eval of the hard-label baseline made "
                                                "from the teacher's pretrained checkpoint; absent when it was not "
                                                "trained.", optional=True)


@dataclass(frozen=True)
class Result:
    summary: str = returned("The run's summary as JSON (kdflow.components.common.results.RunSummary; the CLI's "
                            "summary.json).")
    quality_report_uri: str = returned("The quality report's URI.", uri_of="quality_report")

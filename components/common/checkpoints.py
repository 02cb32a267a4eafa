"""Training checkpoints that outlive the pod, so that a preempted training step resumes instead of starting over.

The Trainer writes `checkpoint-STEP/` (weights, optimizer, scheduler, RNG states, position in the data) into its
scratch folder every `checkpoint_steps` optimizer steps; `CheckpointMirror` then copies it to the checkpoint
location (gs://, s3:// or a local/PVC folder) and writes the marker file last. A checkpoint without its marker was cut
off by the kill and is never resumed from. Once a newer checkpoint is complete the older ones are deleted, and
all of them once the trained model is saved.

The location is `CHECKPOINT_URI/TASK-DIGEST`, DIGEST a hash of everything that decides the training (settings and
the data's description, data_version included): a task only resumes a training identical to its own, even with one
checkpoint_uri for all runs. (Not the run's id: it would make every training step miss KFP's cache.) Training the
same thing twice at once into one checkpoint_uri is the one case this does not keep apart.
"""

import hashlib
import json
import re

from transformers import TrainerCallback

from . import storage

MARKER = "kdflow-complete.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def default_uri(output_uri: str) -> str:
    """Without checkpoint_uri: a folder beside the step's output (in a pipeline, in the run's pipeline root)."""
    return output_uri.rstrip("/") + "-checkpoints"


def location(checkpoint_uri: str, task: str, identity: dict) -> str:
    """Where one training's checkpoints go under `checkpoint_uri`, named by the task and a digest of `identity`."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return storage.join(checkpoint_uri, f"{task}-{digest}")


def steps_found(uri: str) -> dict[int, bool]:
    """Step of every checkpoint at `uri` -> whether it is complete (has its marker)."""
    found = {}
    for name in storage.list_files(uri):
        folder, _, rest = name.partition("/")
        match = CHECKPOINT.match(folder)
        if match:
            step = int(match.group(1))
            found[step] = found.get(step, False) or rest == MARKER
    return found


def newest_complete(uri: str) -> tuple[int, str] | None:
    """(step, local folder) of the newest complete checkpoint at `uri`; None when there is none."""
    complete = [step for step, done in steps_found(uri).items() if done]
    if not complete:
        return None
    step = max(complete)
    return step, storage.local_copy(storage.join(uri, f"checkpoint-{step}"))


class CheckpointMirror(TrainerCallback):
    """Copies each checkpoint the Trainer saves to `uri`, marks it complete, then deletes the older ones."""

    def __init__(self, uri: str):
        self.uri = uri

    def on_step_end(self, args, state, control, **kwargs):
        # Trainer also saves at the last step; the model is saved then anyway, so that copy would only cost time.
        if state.global_step % args.save_steps:
            control.should_save = False

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        name = f"checkpoint-{state.global_step}"
        target = storage.join(self.uri, name)
        storage.delete(target)  # what a killed attempt left of the same step
        files = storage.upload_folder(f"{args.output_dir}/{name}", target)
        storage.write_text(storage.join(target, MARKER), json.dumps({"step": state.global_step, "files": files}))
        for step in steps_found(self.uri):
            if step < state.global_step:
                storage.delete(storage.join(self.uri, f"checkpoint-{step}"))


def train(trainer, uri: str):
    """`trainer.train()` resumed from the newest complete checkpoint at `uri`, each new checkpoint mirrored there.

    An empty `uri` (checkpoint_steps=0) trains without checkpoints.
    """
    if not uri:
        return trainer.train()
    trainer.add_callback(CheckpointMirror(uri))
    found = newest_complete(uri)
    if found is None:
        print(f"kdflow: no complete checkpoint at {uri}: training from step 0", flush=True)
        return trainer.train()
    step, folder = found
    print(f"kdflow: resuming from step {step}, the newest complete checkpoint at {uri}", flush=True)
    return trainer.train(resume_from_checkpoint=folder)

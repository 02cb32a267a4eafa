"""KFP definition of the deploy step; its settings are declared in settings.py, the work is in task.py."""

from typing import NamedTuple

from kfp.dsl import Artifact, Output

from kdflow.components.common.component import step_component
from kdflow.components.common.images import RUNTIME_IMAGE
from kdflow.components.deploy import settings


@step_component(settings, base_image=RUNTIME_IMAGE)
def deploy(
    deployment: Output[Artifact],
    publish_uri: str,
    model_name: str,
    deploy_namespace: str,
    serving_image: str,
    serving_service_account: str,
) -> NamedTuple("DeployOutputs", action=str, namespace=str, name=str):
    """Creates or updates the KServe InferenceService that serves PUBLISH_URI/MODEL_NAME with `kdflow serve`."""
    from kdflow.components.common.component import run_step
    from kdflow.components.deploy import task

    return run_step(task, locals())

"""The KServe InferenceService that serves a published model, declared once: the deploy step writes it, and
manifests/serving/inferenceservice.yaml is it for that file's values, with the reason for each choice in the file's
comments (tests/test_manifests.py holds the two equal)."""

API_VERSION, KIND = "serving.kserve.io/v1beta1", "InferenceService"
HTTP_PORT = 8080
CPU_LIMIT = 2  # also kdflow serve's --threads


def inference_service(name: str, model_uri: str, image: str, service_account: str, namespace: str = "") -> dict:
    """`kdflow serve MODEL_URI` in `image` as the InferenceService `name`, its pods running as `service_account`; in
    `namespace`, or in the one it is applied to when empty (as the manifest)."""
    health = {"path": "/v2/health/live", "port": HTTP_PORT}
    metadata = {
        "name": name,
        "annotations": {"serving.kserve.io/deploymentMode": "Standard", "serving.kserve.io/autoscalerClass": "hpa"},
    }
    if namespace:
        metadata["namespace"] = namespace
    container = {
        "name": "kserve-container",
        "image": image,
        "command": ["kdflow"],
        "args": ["serve", model_uri, "--http-port", str(HTTP_PORT), "--threads", str(CPU_LIMIT)],
        "ports": [{"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": str(CPU_LIMIT), "memory": "2Gi"}},
        "startupProbe": {"httpGet": health, "periodSeconds": 5, "failureThreshold": 36},
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": HTTP_PORT}, "periodSeconds": 5,
                           "failureThreshold": 2},
        "livenessProbe": {"httpGet": health, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    predictor = {
        "minReplicas": 1, "maxReplicas": 4, "scaleMetric": "cpu", "scaleTarget": 70,
        "serviceAccountName": service_account, "terminationGracePeriodSeconds": 45,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": {"predictor": predictor}}

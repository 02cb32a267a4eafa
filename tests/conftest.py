"""Shared fixtures: a tokenizer built here and a small prepared-data folder, no model hub involved; storage servers;
a private CA; KServe's InferenceService schema."""

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

WORDS = (
    "the a movie film plot actors story was is and but not very really quite "
    "good great wonderful excellent enjoyable bad awful terrible boring dull"
).split()

POSITIVE = ["good", "great", "wonderful", "excellent", "enjoyable"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dull"]


def build_tokenizer(folder):
    """A BERT WordPiece tokenizer over a fixed word list, saved in `folder`."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, model_max_length=128)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def make_rows(count, seed):
    import random

    rng = random.Random(seed)
    rows = {"text": [], "label": []}
    for _ in range(count):
        label = rng.randrange(2)
        cue = rng.choice(POSITIVE if label else NEGATIVE)
        filler = rng.choices(["the", "movie", "film", "plot", "was", "really", "and"], k=rng.randrange(2, 20))
        filler.insert(rng.randrange(len(filler) + 1), cue)
        rows["text"].append(" ".join(filler))
        rows["label"].append(label)
    return rows


@pytest.fixture(scope="session")
def settings_for():
    """A step's Settings as the pipeline passes them by default (its parameters' defaults), with `values` changed:
    `settings_for(task, teacher=..., epochs=1)`. Values the pipeline wires from elsewhere must be given, but for
    the tracking names (as the pipeline wires them; they name nothing while report_to is none)."""
    from kdflow.components.common.settings import from_arguments
    from kdflow.pipelines.presets import pipeline_parameters

    defaults = pipeline_parameters()
    defaults.update(experiment=defaults["model_name"], tracked_as="student", layers_from="")
    return lambda task, **values: from_arguments(task.Settings, {**defaults, **values})


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def prepared_data_dir(tmp_path_factory, tokenizer_dir):
    """A prepared-data folder in the layout data_prep writes (see kdflow.components.common.data)."""
    import datasets
    from transformers import AutoTokenizer

    from kdflow.components.common.data import save_prepared

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    splits = datasets.DatasetDict({
        name: datasets.Dataset.from_dict(make_rows(count, seed))
        for name, count, seed in [("train", 96, 0), ("validation", 32, 1), ("test", 48, 2)]
    })
    splits = splits.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=64, return_token_type_ids=False),
        batched=True,
    ).map(lambda row: {"length": len(row["input_ids"])})
    folder = tmp_path_factory.mktemp("prepared")
    save_prepared(str(folder), splits, tokenizer, {
        "num_labels": 2, "max_length": 64, "source": "test rows", "label_names": ["negative", "positive"],
        "rows": {name: len(split) for name, split in splits.items()},
    })
    return folder


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """fake-gcs-server on a free port, objects kept on disk; started once for the session."""
    from gcs_emulator import GcsEmulator

    emulator = GcsEmulator(tmp_path_factory.mktemp("gcs"))
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture()
def gcs(gcs_emulator, monkeypatch):
    """A storage client on the emulator, with STORAGE_EMULATOR_HOST set for kdflow and its subprocesses."""
    from google.cloud import storage as gcs_storage

    from kdflow.components.common import storage

    if gcs_emulator.process is None:  # a test stopped it
        gcs_emulator.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
    storage.client.cache_clear()
    yield gcs_storage.Client()
    storage.client.cache_clear()


@pytest.fixture()
def data_without_a_text_column(tmp_path):
    """A dataset folder whose texts are in a column named review: data_prep refuses it with text_column's name."""
    import pandas as pd

    folder = tmp_path / "data"
    folder.mkdir()
    rows = pd.DataFrame({"review": ["good film", "bad film"] * 10, "label": [1, 0] * 10})
    rows.to_parquet(folder / "train.parquet")
    rows.to_parquet(folder / "test.parquet")
    return folder


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free port, in its own process; started once for the session."""
    from s3_server import MotoServer

    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def s3(s3_server, monkeypatch):
    """A boto3 S3 client on the moto server, with the standard AWS variables (a dummy key, AWS_ENDPOINT_URL) set for
    kdflow and its subprocesses."""
    import boto3

    from kdflow.components.common import storage

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "kdflow-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "kdflow-test")
    monkeypatch.delenv("AWS_PROFILE", raising=False)  # the dummy key above, not a profile of this machine
    storage.s3_filesystem.cache_clear()
    yield boto3.client("s3")
    storage.s3_filesystem.cache_clear()


@pytest.fixture(params=["gs", "s3"])
def bucket_uri(request):
    """A new, empty bucket in each store in turn (fake-gcs-server, moto's S3 server): `gs://NAME`, `s3://NAME`."""
    import uuid

    name = f"kdflow-{uuid.uuid4().hex[:12]}"
    if request.param == "gs":
        request.getfixturevalue("gcs").create_bucket(name)
    else:
        request.getfixturevalue("s3").create_bucket(Bucket=name)
    return f"{request.param}://{name}"


@pytest.fixture()
def faulty_store(bucket_uri, request, monkeypatch):
    """A proxy in front of the store of `bucket_uri`, kdflow pointed at it and `match` set to that store's uploads;
    the test sets how many of them pass (`pass_first`) and then fail (`fail_next`)."""
    from s3_server import FailingProxy

    from kdflow.components.common import storage

    if bucket_uri.startswith("gs://"):
        server, variable, cached = request.getfixturevalue("gcs_emulator"), "STORAGE_EMULATOR_HOST", storage.client
        uploads = "/upload/"  # the JSON API's uploads, simple and resumable
    else:
        server, variable, cached = request.getfixturevalue("s3_server"), "AWS_ENDPOINT_URL", storage.s3_filesystem
        uploads = "PUT /"  # objects and the parts of multipart uploads
    proxy = FailingProxy(server.port)
    proxy.match = uploads
    monkeypatch.setenv(variable, proxy.url)
    cached.cache_clear()
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def private_ca(tmp_path_factory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 signed by its own key, as an API behind a private CA has: (certificate, key)."""
    import ipaddress
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kdflow test CA")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "ca.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return str(folder / "ca.pem"), str(folder / "key.pem")


# Beside the repository, as in CI (see ../shared/schemas/README.md).
KSERVE_SCHEMA = Path(__file__).parents[2] / "shared" / "schemas" / "kserve-inferenceservice.v1beta1.schema.json"


def closed(schema):
    """The schema with every object that lists its properties refusing others, as the API server's strict field
    validation (kubectl's default) does: a CRD's structural schema would otherwise let a misspelt field through."""
    if isinstance(schema, dict):
        schema = {key: closed(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    return [closed(item) for item in schema] if isinstance(schema, list) else schema


@pytest.fixture(scope="session")
def kserve_schema_errors():
    """What KServe's InferenceService schema finds wrong in a resource, as `path: message` lines (none: valid)."""
    import jsonschema

    if not KSERVE_SCHEMA.exists():
        pytest.skip(f"the KServe InferenceService schema is not beside the repository ({KSERVE_SCHEMA})")
    schema = closed(json.loads(KSERVE_SCHEMA.read_text()))
    # A CRD's openAPIV3Schema is OpenAPI 3.0's schema object, JSON Schema draft 4 as OpenAPI extends it.
    jsonschema.Draft4Validator.check_schema(schema)
    validator = jsonschema.Draft4Validator(schema)
    return lambda document: [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
                             for error in validator.iter_errors(document)]

"""The storage module against a real GCS emulator: round trips, atomic pointers, retries and clear refusals."""

import time
import uuid

import pytest

from kdflow.components.common import storage
from kdflow.components.common.errors import KdflowInputError


@pytest.fixture()
def bucket(gcs):
    return gcs.create_bucket(f"kdflow-{uuid.uuid4().hex[:12]}")


def make_folder(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4000)  # 1 MB, several upload chunks' worth
    return root


def test_folder_round_trip_keeps_every_byte(tmp_path, bucket):
    source = make_folder(tmp_path / "source")
    uri = f"gs://{bucket.name}/models/v1"
    uploaded = storage.upload_folder(str(source), uri)
    assert sorted(entry["path"] for entry in uploaded) == ["a.txt", "sub/b.bin"]
    assert storage.list_files(uri) == ["a.txt", "sub/b.bin"]
    copy = storage.local_copy(uri)
    for name in ("a.txt", "sub/b.bin"):
        assert (source / name).read_bytes() == (tmp_path.joinpath(copy, name)).read_bytes()


def test_single_file_uri_downloads_that_file(tmp_path, bucket):
    storage.write_text(f"gs://{bucket.name}/x/latest.json", '{"version": "1"}')
    assert storage.read_text(f"gs://{bucket.name}/x/latest.json") == '{"version": "1"}'
    assert storage.read_text(f"gs://{bucket.name}/x/missing.json") is None
    assert open(storage.local_copy(f"gs://{bucket.name}/x/latest.json")).read() == '{"version": "1"}'


def test_missing_bucket_is_one_clear_sentence(gcs):
    with pytest.raises(KdflowInputError, match=r"Bucket gs://no-such-bucket-kdflow does not exist"):
        storage.list_files("gs://no-such-bucket-kdflow/data")


def test_empty_prefix_is_refused(bucket):
    with pytest.raises(KdflowInputError, match="Nothing was found under"):
        storage.local_copy(f"gs://{bucket.name}/nothing-here")


def test_transient_server_errors_are_retried(tmp_path, bucket, gcs_emulator, monkeypatch):
    from gcs_emulator import FaultyProxy

    proxy = FaultyProxy(gcs_emulator.port)
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        storage.client.cache_clear()
        proxy.match, proxy.fail_next = "/upload/", 2
        storage.upload_folder(str(make_folder(tmp_path / "source")), f"gs://{bucket.name}/retried")
        assert proxy.failed == 2
    finally:
        proxy.close()
        storage.client.cache_clear()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    assert storage.list_files(f"gs://{bucket.name}/retried") == ["a.txt", "sub/b.bin"]


def test_local_paths_work_the_same_way(tmp_path):
    source = make_folder(tmp_path / "source")
    storage.upload_folder(str(source), str(tmp_path / "copy"))
    assert storage.list_files(str(tmp_path / "copy")) == ["a.txt", "sub/b.bin"]
    storage.write_text(str(tmp_path / "p" / "latest.json"), "{}")
    assert storage.read_text(str(tmp_path / "p" / "latest.json")) == "{}"
    assert not list((tmp_path / "p").glob("*.partial"))


@pytest.mark.parametrize("status, token_status, needle", [
    (403, 200, "This job's GCS credentials may not use gs://kdflow-refused/models"),
    (401, 200, "GCS refused this job's credentials for gs://kdflow-refused/models"),
    (403, 403, "This job has no valid GCS credentials for gs://kdflow-refused/models (invalid_grant"),
])
def test_refused_credentials_are_one_sentence_at_once(tmp_path, monkeypatch, status, token_status, needle):
    from gcs_emulator import RefusingGcs

    server = RefusingGcs(status, token_status)
    try:
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
        monkeypatch.delenv("KDFLOW_GCS_RETRY_TIMEOUT_S", raising=False)  # the full budget: a retry would take minutes
        monkeypatch.setenv("API_ENDPOINT_OVERRIDE", server.url)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(server.key_file(tmp_path / "key.json")))
        storage.client.cache_clear()
        started = time.monotonic()
        with pytest.raises(KdflowInputError) as refused:
            storage.check_writable("gs://kdflow-refused/models", "publish_uri")
        with pytest.raises(KdflowInputError, match=r"credentials .*gs://kdflow-refused/models/latest\.json"):
            storage.read_text("gs://kdflow-refused/models/latest.json")
        assert time.monotonic() - started < 5
    finally:
        server.close()
        storage.client.cache_clear()
    assert str(refused.value).startswith("publish_uri='gs://kdflow-refused/models': ")
    assert needle in str(refused.value) and len(str(refused.value).splitlines()) == 1
    assert server.requests  # it was asked, not passed by


@pytest.mark.parametrize("uri, shown", [
    ("https://user:secret@kfp.example.com/pipeline", "https://user:***@kfp.example.com/pipeline"),
    ("https://user:pa/ss@word@kfp.example.com", "https://user:***@kfp.example.com"),
    ("user:secret@kfp.example.com", "user:***@kfp.example.com"),
    ("https://kfp.example.com:8443/pipeline", "https://kfp.example.com:8443/pipeline"),
    ("https://user@kfp.example.com", "https://user@kfp.example.com"),
    ("gs://bucket/models/v1:final@2", "gs://bucket/models/v1:final@2"),
    ("runs/latest", "runs/latest"),
])
def test_passwords_in_uris_are_masked(uri, shown):
    assert storage.masked_uri(uri) == shown

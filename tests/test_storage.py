"""The storage module against real servers, the same tests for each store (fake-gcs-server for gs://, moto's S3
server for s3://): round trips, verified uploads, atomic pointers, bounded retries and clear refusals."""

import time
import uuid

import pytest

from kdflow.components.common import storage
from kdflow.components.common.errors import KdflowInputError


def make_folder(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4000)  # 1 MB, several upload chunks' worth
    return root


def test_folder_round_trip_keeps_every_byte(tmp_path, bucket_uri):
    source = make_folder(tmp_path / "source")
    uri = f"{bucket_uri}/models/v1"
    uploaded = storage.upload_folder(str(source), uri)
    assert sorted(entry["path"] for entry in uploaded) == ["a.txt", "sub/b.bin"]
    assert storage.list_files(uri) == ["a.txt", "sub/b.bin"]
    copy = storage.local_copy(uri)
    for name in ("a.txt", "sub/b.bin"):
        assert (source / name).read_bytes() == (tmp_path.joinpath(copy, name)).read_bytes()


def test_single_file_uri_downloads_that_file(bucket_uri):
    storage.write_text(f"{bucket_uri}/x/latest.json", '{"version": "1"}')
    assert storage.read_text(f"{bucket_uri}/x/latest.json") == '{"version": "1"}'
    assert storage.read_text(f"{bucket_uri}/x/missing.json") is None
    assert open(storage.local_copy(f"{bucket_uri}/x/latest.json")).read() == '{"version": "1"}'


def test_delete_removes_a_prefix_and_nothing_beside_it(bucket_uri):
    for name in ("a/1.json", "a/sub/2.json", "ab/3.json"):
        storage.write_text(f"{bucket_uri}/{name}", "{}")
    storage.delete(f"{bucket_uri}/a")
    storage.delete(f"{bucket_uri}/nothing-here")
    assert storage.list_files(bucket_uri) == ["ab/3.json"]


def test_a_file_that_changed_during_its_upload_is_refused(tmp_path, bucket_uri, monkeypatch):
    source = make_folder(tmp_path / "source")
    monkeypatch.setattr(storage, "md5_base64", lambda path: "1B2M2Y8AsgTpgAmY7PhCfg==")  # the MD5 of no bytes
    with pytest.raises(RuntimeError, match=r"The upload of a\.txt to .* arrived damaged"):
        storage.upload_folder(str(source), f"{bucket_uri}/models/v1")


def test_a_file_uploaded_in_parts_is_checked_whole(tmp_path, s3):
    s3.create_bucket(Bucket="kdflow-parts")
    source = tmp_path / "source"
    source.mkdir()
    (source / "model.bin").write_bytes(uuid.uuid4().bytes * (storage.S3_PART_SIZE // 8 + 1))  # 2 parts and a bit
    storage.upload_folder(str(source), "s3://kdflow-parts/models")
    assert s3.head_object(Bucket="kdflow-parts", Key="models/model.bin")["ETag"].endswith('-3"')
    copy = storage.local_copy("s3://kdflow-parts/models/model.bin")
    assert open(copy, "rb").read() == (source / "model.bin").read_bytes()


def test_missing_bucket_is_one_clear_sentence(bucket_uri):
    scheme = bucket_uri.partition("://")[0]
    sentence = rf"^Bucket {scheme}://no-such-bucket-kdflow does not exist: create it or fix the URI"
    with pytest.raises(KdflowInputError, match=sentence):
        storage.list_files(f"{scheme}://no-such-bucket-kdflow/data")
    with pytest.raises(KdflowInputError, match=sentence):
        storage.read_text(f"{scheme}://no-such-bucket-kdflow/models/latest.json")
    with pytest.raises(KdflowInputError, match=rf"^publish_uri='{scheme}://no-such-bucket-kdflow/models': Bucket"):
        storage.check_writable(f"{scheme}://no-such-bucket-kdflow/models", "publish_uri")


def test_empty_prefix_is_refused(bucket_uri):
    with pytest.raises(KdflowInputError, match="Nothing was found under"):
        storage.local_copy(f"{bucket_uri}/nothing-here")


def test_transient_server_errors_are_retried(tmp_path, bucket_uri, faulty_store):
    faulty_store.fail_next = 2
    storage.upload_folder(str(make_folder(tmp_path / "source")), f"{bucket_uri}/retried")
    assert faulty_store.failed == 2
    assert storage.list_files(f"{bucket_uri}/retried") == ["a.txt", "sub/b.bin"]


def test_retries_stop_at_the_time_limit(bucket_uri, faulty_store, monkeypatch):
    monkeypatch.setenv("KDFLOW_STORAGE_RETRY_TIMEOUT_S", "2")
    faulty_store.fail_next = 10**6
    started = time.monotonic()
    with pytest.raises(Exception) as failed:
        storage.write_text(f"{bucket_uri}/x/latest.json", "{}")
    assert not isinstance(failed.value, KdflowInputError)  # a server error, not the user's
    assert time.monotonic() - started < 6 and faulty_store.failed >= 2


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
def test_refused_gcs_credentials_are_one_sentence_at_once(tmp_path, monkeypatch, status, token_status, needle):
    from gcs_emulator import RefusingGcs

    server = RefusingGcs(status, token_status)
    try:
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
        monkeypatch.delenv("KDFLOW_STORAGE_RETRY_TIMEOUT_S", raising=False)  # the full budget: a retry takes minutes
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


@pytest.fixture(scope="module")
def s3_checking_credentials():
    """moto's S3 server with its credential checks on: it knows no key, so it refuses every one (HTTP 403)."""
    from s3_server import MotoServer

    server = MotoServer(check_credentials=True)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("variables, needle", [
    ({"AWS_ACCESS_KEY_ID": "kdflow-unknown", "AWS_SECRET_ACCESS_KEY": "kdflow-unknown"},
     "S3 refused this job's credentials for s3://kdflow-refused/models (HTTP 403"),
    ({}, "This job has no S3 credentials for s3://kdflow-refused/models (Unable to locate credentials): set "
         "AWS_ACCESS_KEY_ID"),
    ({"AWS_PROFILE": "kdflow-missing"}, "This job has no S3 credentials for s3://kdflow-refused/models (The config "
                                        "profile (kdflow-missing) could not be found)"),
], ids=["unknown key", "no key", "missing profile"])
def test_refused_s3_credentials_are_one_sentence_at_once(tmp_path, monkeypatch, s3_checking_credentials, variables,
                                                         needle):
    monkeypatch.delenv("KDFLOW_STORAGE_RETRY_TIMEOUT_S", raising=False)  # the full budget: a retry takes minutes
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_checking_credentials.url)
    for variable in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    # No key but the test's: no credentials file, no instance metadata.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    storage.s3_filesystem.cache_clear()
    try:
        started = time.monotonic()
        with pytest.raises(KdflowInputError) as refused:
            storage.check_writable("s3://kdflow-refused/models", "publish_uri")
        with pytest.raises(KdflowInputError, match=r"credentials for s3://kdflow-refused/models/latest\.json"):
            storage.read_text("s3://kdflow-refused/models/latest.json")
        assert time.monotonic() - started < 5
    finally:
        storage.s3_filesystem.cache_clear()
    assert str(refused.value).startswith("publish_uri='s3://kdflow-refused/models': ")
    assert needle in str(refused.value) and len(str(refused.value).splitlines()) == 1


@pytest.mark.parametrize("uri, shown", [
    ("https://user:secret@kfp.example.com/pipeline", "https://user:***@kfp.example.com/pipeline"),
    ("https://user:pa/ss@word@kfp.example.com", "https://user:***@kfp.example.com"),
    ("user:secret@kfp.example.com", "user:***@kfp.example.com"),
    ("https://kfp.example.com:8443/pipeline", "https://kfp.example.com:8443/pipeline"),
    ("https://user@kfp.example.com", "https://user@kfp.example.com"),
    ("gs://bucket/models/v1:final@2", "gs://bucket/models/v1:final@2"),
    ("s3://bucket/models/v1:final@2", "s3://bucket/models/v1:final@2"),
    ("runs/latest", "runs/latest"),
])
def test_passwords_in_uris_are_masked(uri, shown):
    assert storage.masked_uri(uri) == shown

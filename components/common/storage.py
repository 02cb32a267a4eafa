"""Locations outside a run (datasets, checkpoints, published models): local paths or `gs://bucket/prefix` URIs.

GCS access goes through google-cloud-storage: credentials come from the environment (Workload Identity on
a cluster, `GOOGLE_APPLICATION_CREDENTIALS` or gcloud elsewhere; `STORAGE_EMULATOR_HOST` for an emulator),
transient errors are retried with the library's backoff, and files are streamed to and from disk (large ones
in resumable chunks), never held in memory. Refused credentials stop at once with one sentence.
"""

import base64
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from .errors import KdflowInputError

GCS_SCHEME = "gs://"
# The password of [scheme://]user:password@host: from the user's colon to the last '@', so that one holding '/'
# or '@' (base64 or generated passwords) is masked whole; `(?!//)` keeps `https:` from passing for a user name.
URL_PASSWORD = re.compile(r"^((?:[a-zA-Z][\w+.-]*://)?[^/?#@:]+:)(?!//).*@")
CREDENTIAL_HELP = ("set GOOGLE_APPLICATION_CREDENTIALS to a valid service-account key, run `gcloud auth "
                   "application-default login`, or on GKE bind the pod's service account through Workload Identity")


def masked_uri(uri: str) -> str:
    """`uri` as a message may show it: `https://user:secret@host` becomes `https://user:***@host`."""
    return URL_PASSWORD.sub(r"\1***@", uri)


def is_gcs(uri: str) -> bool:
    return uri.startswith(GCS_SCHEME)


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """`gs://bucket/a/b/` -> (`bucket`, `a/b`)."""
    bucket, _, prefix = uri[len(GCS_SCHEME):].partition("/")
    if not bucket:
        raise KdflowInputError(f"{uri!r} names no bucket: write gs://BUCKET/PATH.")
    return bucket, prefix.strip("/")


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(part.strip("/") for part in parts)])


def retry():
    """The library's retry policy (backoff on 429, 5xx and connection errors) with a total time limit.

    `KDFLOW_GCS_RETRY_TIMEOUT_S` sets the limit (default 120 s, the library's own); tests shorten it.
    """
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(float(os.environ.get("KDFLOW_GCS_RETRY_TIMEOUT_S", "120")))


@lru_cache(maxsize=1)
def client():
    from google.cloud import storage

    return storage.Client()


@contextlib.contextmanager
def refusals(uri: str):
    """Turns GCS refusing this job's credentials into one sentence about `uri`.

    A 401 or 403 from the storage API, or a token request that the token endpoint or metadata server refuses, is
    not retried (the library retries 429, 5xx and connection errors): against a local server each failed in under
    0.4 s, but reached the user as a bare exception. The whole retry budget (116 s measured) goes only to a token
    endpoint that cannot be reached, a connection error like any other.
    """
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions

    try:
        yield
    except exceptions.Forbidden:
        raise KdflowInputError(f"This job's GCS credentials may not use {masked_uri(uri)} (HTTP 403): grant its "
                               f"service account access to gs://{split_gcs_uri(uri)[0]}, or fix the URI.") from None
    except exceptions.Unauthorized:
        raise KdflowInputError(
            f"GCS refused this job's credentials for {masked_uri(uri)} (HTTP 401): {CREDENTIAL_HELP}.") from None
    except (auth_exceptions.RefreshError, auth_exceptions.DefaultCredentialsError) as error:
        reason = error.args[0]  # args[1] is the token endpoint's answer as JSON
        if isinstance(reason, Exception):  # the metadata server's refusal, wrapped
            reason = reason.args[0]
        reason = str(reason).strip().splitlines()[0]
        raise KdflowInputError(
            f"This job has no valid GCS credentials for {masked_uri(uri)} ({reason}): {CREDENTIAL_HELP}.") from None


def bucket_of(uri: str):
    """The bucket of a gs:// URI; refuses at once (one sentence) when it is missing or cannot be read."""
    from google.api_core import exceptions

    name, _ = split_gcs_uri(uri)
    with refusals(uri):
        try:
            return client().get_bucket(name, retry=retry())
        except exceptions.NotFound:
            raise KdflowInputError(
                f"Bucket gs://{name} does not exist: create it or fix the URI {masked_uri(uri)}.") from None


def list_files(uri: str) -> list[str]:
    """Paths relative to `uri` of every file under it (a local folder or a gs:// prefix)."""
    if not is_gcs(uri):
        root = Path(uri)
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    _, prefix = split_gcs_uri(uri)
    start = f"{prefix}/" if prefix else ""
    with refusals(uri):
        blobs = bucket_of(uri).list_blobs(prefix=start, retry=retry())
        return sorted(blob.name[len(start):] for blob in blobs if not blob.name.endswith("/"))


def local_copy(uri: str) -> str:
    """A local path holding the contents of `uri`: the path itself, or a download of a gs:// prefix or file."""
    if not is_gcs(uri):
        return uri
    _, prefix = split_gcs_uri(uri)
    destination = Path(tempfile.mkdtemp(prefix="kdflow-"))
    with refusals(uri):
        bucket = bucket_of(uri)
        single = bucket.get_blob(prefix, retry=retry()) if prefix else None
        if single is not None:  # a file, not a folder
            target = destination / Path(prefix).name
            single.download_to_filename(str(target), retry=retry())
            return str(target)
        names = list_files(uri)
        if not names:
            raise KdflowInputError(f"Nothing was found under {masked_uri(uri)}: check the URI.")
        for name in names:
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            bucket.blob(f"{prefix}/{name}" if prefix else name).download_to_filename(str(target), retry=retry())
    return str(destination)


def md5_base64(path: Path) -> str:
    """The MD5 of a file in GCS's notation (base64), computed in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


def upload_folder(local_dir: str, uri: str) -> list[dict]:
    """Copies every file of `local_dir` to `uri` and checks each copy's size and MD5; returns what was copied.

    Uploads are retried on transient errors (the paths are versioned, so a repeated upload writes the same
    bytes); a file that arrives different raises an error.
    """
    files = []
    for name in list_files(local_dir):
        path = Path(local_dir, name)
        files.append({"path": name, "size": path.stat().st_size, "md5": md5_base64(path)})
    if not is_gcs(uri):
        shutil.copytree(local_dir, uri, dirs_exist_ok=True)
        return files
    _, prefix = split_gcs_uri(uri)
    with refusals(uri):
        bucket = bucket_of(uri)
        for entry in files:
            blob = bucket.blob(f"{prefix}/{entry['path']}" if prefix else entry["path"])
            blob.upload_from_filename(str(Path(local_dir, entry["path"])), retry=retry())
            blob.reload(retry=retry())
            if blob.size != entry["size"] or blob.md5_hash != entry["md5"]:
                raise RuntimeError(
                    f"The upload of {entry['path']} to {masked_uri(uri)} arrived damaged (size or MD5 differ).")
    return files


def read_text(uri: str) -> str | None:
    """The text at `uri`, or None when there is no such file."""
    if not is_gcs(uri):
        return Path(uri).read_text() if os.path.exists(uri) else None
    with refusals(uri):
        blob = bucket_of(uri).get_blob(split_gcs_uri(uri)[1], retry=retry())
        return None if blob is None else blob.download_as_text(retry=retry())


def write_text(uri: str, text: str) -> None:
    """Writes `text` to `uri` in one step: readers see the old file or the new one, never a part."""
    if not is_gcs(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        partial = Path(f"{uri}.partial")
        partial.write_text(text)
        os.replace(partial, uri)  # atomic on one file system
        return
    with refusals(uri):
        bucket_of(uri).blob(split_gcs_uri(uri)[1]).upload_from_string(text, content_type="application/json",
                                                                       retry=retry())


def delete(uri: str) -> None:
    """Removes a file or every file under a folder or prefix; nothing there is not an error."""
    if not is_gcs(uri):
        if Path(uri).is_dir():
            shutil.rmtree(uri)
        else:
            Path(uri).unlink(missing_ok=True)
        return
    _, prefix = split_gcs_uri(uri)
    with refusals(uri):
        for blob in bucket_of(uri).list_blobs(prefix=prefix, retry=retry()):
            if not prefix or blob.name == prefix or blob.name.startswith(prefix + "/"):  # not gs://b/ab for gs://b/a
                blob.delete(retry=retry())


def check_writable(uri: str, parameter: str) -> None:
    """Writes and removes a probe file under `uri`, so that a destination this job cannot write to stops a run
    before its work rather than after."""
    probe = join(uri, ".kdflow-write-check")
    try:
        if is_gcs(uri):
            bucket_of(uri)  # a missing bucket is named as such, with the URI as given
        write_text(probe, "")
        delete(probe)
    except KdflowInputError as error:  # refused credentials and missing buckets, named as such
        raise KdflowInputError(f"{parameter}={masked_uri(uri)!r}: {error}") from None
    except Exception as error:  # OSError locally; on GCS what is left after the retries
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise KdflowInputError(f"{parameter}={masked_uri(uri)!r} cannot be written ({reason}): give a folder or "
                               "gs:// prefix this job may write to.") from None


def move_into(source: Path, destination: Path, last: str | None = None) -> None:
    """Moves finished files from a scratch folder into an output folder, the file named `last` at the end.

    Steps build their outputs in scratch space and move them in only when every check passed, so a failed
    step leaves nothing that looks like a result; the `last` file (a report) marks the folder complete.
    """
    destination.mkdir(parents=True, exist_ok=True)
    for item in sorted(source.iterdir(), key=lambda item: item.name == last):
        shutil.move(str(item), str(destination / item.name))

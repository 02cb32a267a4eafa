"""Locations outside a run (datasets, checkpoints, published models): local paths, `gs://bucket/prefix` or
`s3://bucket/prefix` URIs. Every function here takes any of them, so callers do not care which store a URI is in.

GCS goes through google-cloud-storage, with credentials from the environment (Workload Identity on a cluster,
`GOOGLE_APPLICATION_CREDENTIALS` or gcloud elsewhere; `STORAGE_EMULATOR_HOST` for an emulator). S3 and S3-compatible
servers (MinIO, SeaweedFS) go through s3fs (fsspec) with botocore's standard settings: the key from
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE` or the pod's IAM role, the server from `AWS_ENDPOINT_URL`
(AWS itself when unset).

On both, transient errors (429, 5xx, dropped connections) are retried with backoff for at most
`KDFLOW_STORAGE_RETRY_TIMEOUT_S` seconds (default 120), every upload is checked for size and MD5 once stored, large
files go to and from disk in parts, and a missing bucket or refused credentials stop at once with one sentence.
"""

import base64
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from .errors import KdflowInputError, first_line

GCS_SCHEME, S3_SCHEME = "gs://", "s3://"
# The password of [scheme://]user:password@host: from the user's colon to the last '@', so that one holding '/'
# or '@' (base64 or generated passwords) is masked whole; `(?!//)` keeps `https:` from passing for a user name.
URL_PASSWORD = re.compile(r"^((?:[a-zA-Z][\w+.-]*://)?[^/?#@:]+:)(?!//).*@")
GCS_CREDENTIAL_HELP = ("set GOOGLE_APPLICATION_CREDENTIALS to a valid service-account key, run `gcloud auth "
                       "application-default login`, or on GKE bind the pod's service account through Workload "
                       "Identity")
S3_CREDENTIAL_HELP = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or the pod's IAM role) to a "
                      "key of the server AWS_ENDPOINT_URL names (AWS when unset) that may use this bucket")
# The AWS CLI's part size. S3's ETag of a file uploaded in parts is computed over its parts, so the upload check must
# know them; s3fs holds up to 10 parts in memory at once, and a file under two parts whole.
S3_PART_SIZE = 8 << 20


def masked_uri(uri: str) -> str:
    """`uri` as a message may show it: `https://user:secret@host` becomes `https://user:***@host`."""
    return URL_PASSWORD.sub(r"\1***@", uri)


def is_remote(uri: str) -> bool:
    """Whether `uri` is in object storage (gs:// or s3://) rather than a local path."""
    return uri.startswith((GCS_SCHEME, S3_SCHEME))


def split_uri(uri: str) -> tuple[str, str]:
    """`gs://bucket/a/b/` or `s3://bucket/a/b/` -> (`bucket`, `a/b`)."""
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise KdflowInputError(f"{uri!r} names no bucket: write {scheme}://BUCKET/PATH.")
    return bucket, key.strip("/")


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(part.strip("/") for part in parts)])


def retry_timeout() -> float:
    """Seconds a storage call may spend retrying transient errors; tests shorten it."""
    return float(os.environ.get("KDFLOW_STORAGE_RETRY_TIMEOUT_S", "120"))


def check_bucket(uri: str) -> None:
    """Refuses at once, in one sentence, a gs:// or s3:// URI whose bucket is missing or may not be used."""
    if is_remote(uri):
        with opened(uri):
            pass


def list_files(uri: str) -> list[str]:
    """Paths relative to `uri` of every file under it (a local folder, a gs:// or an s3:// prefix)."""
    if not is_remote(uri):
        root = Path(uri)
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    with opened(uri) as place:
        return sorted(place.names())


def local_copy(uri: str) -> str:
    """A local path holding the contents of `uri`: the path itself, or a download of a remote prefix or file."""
    if not is_remote(uri):
        return uri
    destination = Path(tempfile.mkdtemp(prefix="kdflow-"))
    with opened(uri) as place:
        if place.is_file():
            target = destination / Path(place.key).name
            place.download("", target)
            return str(target)
        names = place.names()
        if not names:
            raise KdflowInputError(f"Nothing was found under {masked_uri(uri)}: check the URI.")
        for name in names:
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            place.download(name, target)
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
    if not is_remote(uri):
        shutil.copytree(local_dir, uri, dirs_exist_ok=True)
        return files
    with opened(uri) as place:
        for entry in files:
            if not place.upload(Path(local_dir, entry["path"]), entry):
                raise RuntimeError(
                    f"The upload of {entry['path']} to {masked_uri(uri)} arrived damaged (size or MD5 differ).")
    return files


def read_text(uri: str) -> str | None:
    """The text at `uri`, or None when there is no such file."""
    if not is_remote(uri):
        return Path(uri).read_text() if os.path.exists(uri) else None
    with opened(uri) as place:
        return place.read()


def write_text(uri: str, text: str) -> None:
    """Writes `text` to `uri` in one step: readers see the old file or the new one, never a part."""
    if not is_remote(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        partial = Path(f"{uri}.partial")
        partial.write_text(text)
        os.replace(partial, uri)  # atomic on one file system
        return
    with opened(uri) as place:
        place.write(text)  # an object is replaced whole on both stores


def delete(uri: str) -> None:
    """Removes a file or every file under a folder or prefix; nothing there is not an error."""
    if not is_remote(uri):
        if Path(uri).is_dir():
            shutil.rmtree(uri)
        else:
            Path(uri).unlink(missing_ok=True)
        return
    with opened(uri) as place:
        place.delete()


def check_writable(uri: str, parameter: str) -> None:
    """Writes and removes a probe file under `uri`, so that a destination this job cannot write to stops a run
    before its work rather than after."""
    probe = join(uri, ".kdflow-write-check")
    try:
        check_bucket(uri)  # a missing bucket is named as such, with the URI as given
        write_text(probe, "")
        delete(probe)
    except KdflowInputError as error:  # refused credentials and missing buckets, named as such
        raise KdflowInputError(f"{parameter}={masked_uri(uri)!r}: {error}") from None
    except Exception as error:  # OSError locally; in object storage what is left after the retries
        raise KdflowInputError(f"{parameter}={masked_uri(uri)!r} cannot be written ({first_line(error)}): give a "
                               "folder, or a gs:// or s3:// prefix, this job may write to.") from None


def move_into(source: Path, destination: Path, last: str | None = None) -> None:
    """Moves finished files from a scratch folder into an output folder, the file named `last` at the end.

    Steps build their outputs in scratch space and move them in only when every check passed, so a failed
    step leaves nothing that looks like a result; the `last` file (a report) marks the folder complete.
    """
    destination.mkdir(parents=True, exist_ok=True)
    for item in sorted(source.iterdir(), key=lambda item: item.name == last):
        shutil.move(str(item), str(destination / item.name))


@contextlib.contextmanager
def opened(uri: str):
    """The store's access to `uri` (a `Gcs` or an `S3`), its bucket checked first; the store's refusals of this job
    (a missing bucket, refused credentials) leave as one sentence about `uri`."""
    place = Gcs(uri) if uri.startswith(GCS_SCHEME) else S3(uri)
    with place.refusals():
        if not place.bucket_exists():
            raise KdflowInputError(f"Bucket {uri.partition('://')[0]}://{place.bucket_name} does not exist: create "
                                   f"it or fix the URI {masked_uri(uri)}.")
        yield place


class Gcs:
    """A gs:// URI through google-cloud-storage, whose own retry policy (429, 5xx, connection errors) is given the
    time limit. Names are relative to the URI's path (`key`).

    Not gcsfs, which would put GCS under fsspec too: against fake-gcs-server (gcsfs 2026.10) it tried a refused token
    6 times over 33 s where this client stops in under 0.4 s, and its retries are counted, not timed (a failing
    upload gave up after 34 s, whatever the time limit).
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.bucket_name, self.key = split_uri(uri)

    @property
    def bucket(self):
        return client().bucket(self.bucket_name)  # the client finds its credentials inside refusals()

    @contextlib.contextmanager
    def refusals(self):
        """A 401 or 403 from the storage API, or a token request that the token endpoint or metadata server refuses,
        is not retried (the library retries 429, 5xx and connection errors): against a local server each failed in
        under 0.4 s, but reached the user as a bare exception. The whole retry budget (116 s measured) goes only to a
        token endpoint that cannot be reached, a connection error like any other."""
        from google.api_core import exceptions
        from google.auth import exceptions as auth_exceptions

        uri = masked_uri(self.uri)
        try:
            yield
        except exceptions.Forbidden:
            raise KdflowInputError(f"This job's GCS credentials may not use {uri} (HTTP 403): grant its service "
                                   f"account access to gs://{self.bucket_name}, or fix the URI.") from None
        except exceptions.Unauthorized:
            raise KdflowInputError(
                f"GCS refused this job's credentials for {uri} (HTTP 401): {GCS_CREDENTIAL_HELP}.") from None
        except (auth_exceptions.RefreshError, auth_exceptions.DefaultCredentialsError) as error:
            reason = error.args[0]  # args[1] is the token endpoint's answer as JSON
            if isinstance(reason, Exception):  # the metadata server's refusal, wrapped
                reason = reason.args[0]
            reason = str(reason).strip().splitlines()[0]
            raise KdflowInputError(
                f"This job has no valid GCS credentials for {uri} ({reason}): {GCS_CREDENTIAL_HELP}.") from None

    def bucket_exists(self) -> bool:
        from google.api_core import exceptions

        try:
            self.bucket.reload(retry=retry())
            return True
        except exceptions.NotFound:
            return False

    def path(self, name: str) -> str:
        return "/".join(part for part in (self.key, name) if part)

    def names(self) -> list[str]:
        start = f"{self.key}/" if self.key else ""
        blobs = self.bucket.list_blobs(prefix=start, retry=retry())
        return [blob.name[len(start):] for blob in blobs if not blob.name.endswith("/")]

    def is_file(self) -> bool:
        return bool(self.key) and self.bucket.get_blob(self.key, retry=retry()) is not None

    def download(self, name: str, target: Path) -> None:
        self.bucket.blob(self.path(name)).download_to_filename(str(target), retry=retry())

    def upload(self, path: Path, entry: dict) -> bool:
        """Uploads `path` as `entry["path"]`; whether the stored copy has the entry's size and MD5."""
        blob = self.bucket.blob(self.path(entry["path"]))
        blob.upload_from_filename(str(path), retry=retry())
        blob.reload(retry=retry())
        return blob.size == entry["size"] and blob.md5_hash == entry["md5"]

    def read(self) -> str | None:
        blob = self.bucket.get_blob(self.key, retry=retry())
        return None if blob is None else blob.download_as_text(retry=retry())

    def write(self, text: str) -> None:
        self.bucket.blob(self.key).upload_from_string(text, content_type="application/json", retry=retry())

    def delete(self) -> None:
        for blob in self.bucket.list_blobs(prefix=self.key, retry=retry()):
            if not self.key or blob.name == self.key or blob.name.startswith(self.key + "/"):  # not b/ab for b/a
                blob.delete(retry=retry())


def retry():
    """google-cloud-storage's retry policy (backoff on 429, 5xx and connection errors) with the time limit."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(retry_timeout())


@lru_cache(maxsize=1)
def client():
    from google.cloud import storage

    return storage.Client()


class S3:
    """An s3:// URI through s3fs. Every call goes through `s3_retrying`, the one retry policy (s3fs's and botocore's
    are off), so that the time limit holds. Names are relative to the URI's path (`key`)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.bucket_name, self.key = split_uri(uri)
        self.fs = s3_filesystem()  # botocore looks for credentials at the first request, inside refusals()

    @contextlib.contextmanager
    def refusals(self):
        """S3 answers a key it does not know, a wrong secret or a denied bucket with 403 (s3fs raises
        PermissionError), never retried: against moto's server with credential checks each failed in under 0.3 s."""
        from botocore.exceptions import NoCredentialsError, ProfileNotFound

        uri = masked_uri(self.uri)
        try:
            yield
        except PermissionError as error:
            code = getattr(error.__cause__, "response", {}).get("Error", {}).get("Code", "")
            reason = f"HTTP 403 {code}" if code and code != "403" else "HTTP 403"  # a HEAD's answer has no code
            raise KdflowInputError(
                f"S3 refused this job's credentials for {uri} ({reason}): {S3_CREDENTIAL_HELP}.") from None
        except (NoCredentialsError, ProfileNotFound) as error:
            raise KdflowInputError(
                f"This job has no S3 credentials for {uri} ({error}): {S3_CREDENTIAL_HELP}.") from None

    def bucket_exists(self) -> bool:
        try:
            s3_retrying(self.fs.call_s3, "head_bucket", Bucket=self.bucket_name)
            return True
        except FileNotFoundError:
            return False

    def path(self, name: str) -> str:
        return "/".join(part for part in (self.bucket_name, self.key, name) if part)

    def names(self) -> list[str]:
        start = self.path("") + "/"
        return [found[len(start):] for found in s3_retrying(self.fs.find, self.path("")) if found.startswith(start)]

    def is_file(self) -> bool:
        return bool(self.key) and s3_retrying(self.fs.isfile, self.path(""))

    def download(self, name: str, target: Path) -> None:
        s3_retrying(self.fs.get_file, self.path(name), str(target))

    def upload(self, path: Path, entry: dict) -> bool:
        """Uploads `path` as `entry["path"]`; whether the stored copy has the entry's size and MD5 (S3's ETag)."""
        target = self.path(entry["path"])
        s3_retrying(self.fs.put_file, str(path), target, chunksize=S3_PART_SIZE)
        stored = s3_retrying(self.fs.info, target)
        etag = stored["ETag"].strip('"')
        expected = multipart_etag(path) if "-" in etag else base64.b64decode(entry["md5"]).hex()
        return stored["size"] == entry["size"] and etag == expected

    def read(self) -> str | None:
        try:
            return s3_retrying(self.fs.cat_file, self.path("")).decode()
        except FileNotFoundError:  # the bucket was checked: the file is missing
            return None

    def write(self, text: str) -> None:
        s3_retrying(self.fs.pipe_file, self.path(""), text.encode())

    def delete(self) -> None:
        own = self.path("")
        found = [path for path in s3_retrying(self.fs.find, own) if path == own or path.startswith(own + "/")]
        if found:
            s3_retrying(self.fs.rm, found)  # the files only: rm of the bucket's path would remove the bucket


def multipart_etag(path: Path) -> str:
    """S3's ETag of a file uploaded in parts of S3_PART_SIZE: the MD5 of the parts' MD5s, a dash, their count."""
    digests = []
    with open(path, "rb") as handle:
        for part in iter(lambda: handle.read(S3_PART_SIZE), b""):
            digests.append(hashlib.md5(part).digest())
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def s3_retrying(call, *args, **kwargs):
    """`call(*args, **kwargs)`, retried like google-cloud-storage's calls: on a dropped or refused connection, 408,
    429, 5xx or S3's RequestTimeout, after 1 s, 2 s, 4 s... (at most 60 s), until the time limit would pass."""
    deadline = time.monotonic() + retry_timeout()
    delay = 1.0
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if not s3_transient(error) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 60.0)


def s3_transient(error: Exception) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(error, (ConnectionError, HTTPClientError)):  # refused, dropped or timed-out connections
        return True
    answer = error.__cause__  # s3fs raises the server's answer as an OSError from botocore's ClientError
    if not isinstance(answer, ClientError):
        return False
    status = answer.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status in (408, 429) or status >= 500 or answer.response.get("Error", {}).get("Code") == "RequestTimeout"


@lru_cache(maxsize=1)
def s3_filesystem():
    import s3fs

    filesystem = s3fs.S3FileSystem(
        skip_instance_cache=True,  # this cache is the one; tests clear it to change AWS_ENDPOINT_URL
        use_listings_cache=False,  # other processes (steps, other runs) write too: list afresh every time
        config_kwargs={"retries": {"total_max_attempts": 1}},  # botocore's retries off: s3_retrying's policy only
    )
    filesystem.retries = 1  # and s3fs's own (5 tries)
    return filesystem

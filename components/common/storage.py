"""Locations outside a run (datasets, checkpoints, published models): local paths or `gs://bucket/prefix` URIs."""

import os
import tempfile
from pathlib import Path

from .errors import KdflowInputError

GCS_SCHEME = "gs://"


def is_gcs(uri: str) -> bool:
    return uri.startswith(GCS_SCHEME)


def split_gcs_uri(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len(GCS_SCHEME):].partition("/")
    return bucket, prefix.strip("/")


def local_copy(uri: str) -> str:
    """Returns a local path holding the contents of `uri`: the path itself, or a download of a `gs://` prefix."""
    if not is_gcs(uri):
        return uri
    from google.cloud import storage

    bucket_name, prefix = split_gcs_uri(uri)
    destination = Path(tempfile.mkdtemp(prefix="kdflow-"))
    blobs = list(storage.Client().list_blobs(bucket_name, prefix=f"{prefix}/" if prefix else None))
    if not blobs:
        raise KdflowInputError(f"Nothing was found at {uri}: check the URI and that this job can read the bucket.")
    for blob in blobs:
        relative = blob.name[len(prefix):].lstrip("/") if prefix else blob.name
        if not relative or blob.name.endswith("/"):
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target))
    return str(destination)


def exists_locally(uri: str) -> bool:
    return not is_gcs(uri) and os.path.exists(uri)

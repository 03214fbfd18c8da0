"""An ``s3://bucket/prefix`` data source, brought to a local folder that ingestion reads like any other.

Every object under the prefix is listed (paginated) and downloaded in parallel into a cache under
the work dir, each kept while its ETag and size are unchanged, so a second build downloads only
what changed; objects gone from the prefix are removed from the cache. A prefix naming a single
object (``s3://bucket/table.csv``) gives that one file. Credentials, region and endpoint come
from the standard AWS chain (environment, profile, instance role) and ``data.endpoint_url``;
botocore retries throttling and server errors with backoff ("standard" mode).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from tasks.errors import LeptonError
from tasks.hashing import sha256_bytes

DOWNLOAD_THREADS = 8
# Beside the copy, never in it: a file inside would be one more (stray) input of the source.
INDEX_SUFFIX = ".s3-index.json"


class RemoteSourceError(LeptonError):
    """An ``s3://`` source that cannot be read: the message names the bucket, prefix and why."""


def split_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``.

    Raises:
        RemoteSourceError: not an ``s3://`` URI with a bucket.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise RemoteSourceError(f"{uri!r} is not an s3://bucket/prefix URI")
    return parsed.netloc, parsed.path.lstrip("/")


def _client(endpoint_url: str | None):  # noqa: ANN202 - a boto3 S3 client
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint_url or None, config=Config(retries={"max_attempts": 8, "mode": "standard"})
    )


def download_prefix(
    uri: str,
    cache: Path,
    endpoint_url: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    page_size: int | None = None,
) -> Path:
    """The local copy of every object under ``uri``: a folder (a prefix) or one file (a single object).

    The prefix is listed page by page (``page_size`` keys a page; S3's own 1,000 when None), each
    page's request retried on its own; changed objects are downloaded in parallel.

    Raises:
        RemoteSourceError: the bucket or prefix does not exist, holds nothing, or cannot be read.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_uri(uri)
    client = _client(endpoint_url)
    root = cache / bucket / sha256_bytes(uri.encode())[:12]
    try:
        objects = _listing(client, bucket, prefix, page_size)
    except ClientError as exc:
        raise RemoteSourceError(f"cannot list {uri}: {exc.response.get('Error', {}).get('Message', exc)}") from None
    except BotoCoreError as exc:
        raise RemoteSourceError(f"cannot list {uri}: {exc}") from None
    if not objects:
        raise RemoteSourceError(f"{uri} holds no objects (hidden ones, starting with '.', are not data)")
    single = len(objects) == 1 and objects[0][0] == prefix
    base = prefix.rsplit("/", 1)[0] + "/" if single and "/" in prefix else ("" if single else prefix.rstrip("/") + "/")
    root.mkdir(parents=True, exist_ok=True)
    index_path = root.with_name(root.name + INDEX_SUFFIX)
    index: dict[str, list] = json.loads(index_path.read_text()) if index_path.is_file() else {}
    wanted = {key[len(base):]: (key, etag, size) for key, etag, size in objects}
    todo = [
        (rel, key, etag, size) for rel, (key, etag, size) in wanted.items()
        if index.get(rel) != [etag, size] or not (root / rel).is_file() or (root / rel).stat().st_size != size
    ]
    done = len(wanted) - len(todo)

    def fetch(item: tuple[str, str, str, int]) -> tuple[str, str, int]:
        rel, key, etag, size = item
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        client.download_file(bucket, key, str(tmp))
        os.replace(tmp, target)  # a killed download never leaves a half file under the real name
        return rel, etag, size

    try:
        with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
            for rel, etag, size in pool.map(fetch, todo):
                index[rel] = [etag, size]
                done += 1
                if progress and (done % 200 == 0 or done == len(wanted)):
                    progress(done, len(wanted))
    except (ClientError, BotoCoreError) as exc:
        raise RemoteSourceError(f"cannot download from {uri}: {exc}") from None
    finally:
        _write_index(index_path, {rel: index[rel] for rel in index if rel in wanted})
    for stale in [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in wanted]:
        stale.unlink()  # gone from the prefix: gone from the source
    return root / next(iter(wanted)) if single else root


def _listing(client, bucket: str, prefix: str, page_size: int | None = None) -> list[tuple[str, str, int]]:  # noqa: ANN001
    """(key, ETag, size) of every non-hidden object: the object named ``prefix`` itself, else those under ``prefix/``."""
    objects = []
    folder = prefix.rstrip("/") + "/" if prefix else ""
    pages = {"PageSize": page_size} if page_size else {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, PaginationConfig=pages):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key == prefix and not key.endswith("/"):
                return [(key, item["ETag"].strip('"'), int(item["Size"]))]
            rel = key[len(folder):] if key.startswith(folder) else None
            if rel and not key.endswith("/") and not any(part.startswith(".") for part in rel.split("/")):
                objects.append((key, item["ETag"].strip('"'), int(item["Size"])))
    return objects


def _write_index(path: Path, index: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index, sort_keys=True))
    os.replace(tmp, path)

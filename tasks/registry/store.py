"""The artifact store: one small interface, two back ends (a local folder and S3 via boto3).

Keys are POSIX-style paths relative to the store root, e.g.
``models/digits/3f2a.../onnx-fp32/model.onnx``.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from tasks.errors import LeptonError
from tasks.hashing import sha256_bytes, sha256_file
from tasks.registry.config import StoreConfig


class ConditionalWriteFailed(RuntimeError):
    """The object changed since it was read: another writer won the race."""


class ObjectNotFound(LeptonError, KeyError):
    """No object at that key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreUnavailable(ConnectionError):
    """The store's endpoint did not answer, after the configured attempts. Retrying later may help."""


def _endpoint_errors(method):  # noqa: ANN001, ANN202 - a decorator of S3Store methods
    """Turn botocore's connection failures into one clear StoreUnavailable naming the endpoint."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError

        try:
            return method(self, *args, **kwargs)
        except (BotoConnectionError, HTTPClientError) as exc:
            endpoint = self.config.endpoint_url or f"AWS S3 ({self.client.meta.region_name})"
            raise StoreUnavailable(
                f"{self.uri}: {endpoint} did not answer after {self.config.max_attempts} attempt(s): {exc}"
            ) from exc

    return wrapper


def check_key(key: str) -> str:
    """A key is a relative POSIX path of non-empty, non-dot segments; anything else never reaches a store.

    Raises:
        ValueError: absolute, empty or ``.``/``..`` segments, backslashes or control characters.
    """
    segments = key.split("/")
    if (
        not key
        or any(segment in ("", ".", "..") for segment in segments)
        or "\\" in key
        or any(ord(ch) < 32 for ch in key)
    ):
        raise ValueError(f"key {key!r} is not a relative path inside the store")
    return key


class ArtifactStore(Protocol):
    """What releases, gates and readers need from a store."""

    uri: str

    def put_file(
        self, local: Path, key: str, sha256: str, on_bytes: Callable[[int], None] | None = None
    ) -> None:
        """Upload a file; back ends with object metadata store ``sha256`` with it.

        ``on_bytes`` is called with the number of bytes sent since its last call.
        """
        ...

    def stored_sha256(self, key: str) -> str | None:
        """The sha256 the object at ``key`` was stored with; None when there is no object."""
        ...

    def get_file(self, key: str, local: Path) -> Path:
        """Download an object to ``local``."""
        ...

    def put_bytes(self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        """Write an object; return its tag. ``if_match``/``if_absent`` make the write conditional."""
        ...

    def get_bytes(self, key: str) -> tuple[bytes, str]:
        """Read an object and its tag (for a later conditional write)."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object exists at ``key``."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """All keys under ``prefix``, sorted."""
        ...

    def location(self, key: str) -> str:
        """A URI a person can open for ``key``."""
        ...

    def browser_link(self, key: str, expires_s: int = 3600) -> str:
        """A URL a browser can fetch ``key`` from: a presigned GET on S3 (valid ``expires_s``), a file: URL locally."""
        ...


class FileStore:
    """A folder on local disk. Tags are content hashes; conditional writes hold a file lock."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.uri = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise ValueError(f"key {key!r} escapes the store root {self.root}")
        return path

    def put_file(
        self, local: Path, key: str, sha256: str, on_bytes: Callable[[int], None] | None = None
    ) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.partial")
        shutil.copyfile(local, tmp)
        # Rename is atomic: a reader sees the whole file or none of it.
        os.replace(tmp, target)
        if on_bytes:
            on_bytes(target.stat().st_size)

    def stored_sha256(self, key: str) -> str | None:
        path = self._path(key)
        return sha256_file(path) if path.is_file() else None

    def get_file(self, key: str, local: Path) -> Path:
        source = self._path(key)
        if not source.is_file():
            raise ObjectNotFound(f"{self.location(key)} does not exist")
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, local)
        return local

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        # Locks live apart from the artifacts, so a release folder holds only what was released.
        lock_path = self.root / ".locks" / (key.replace("/", "__") + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put_bytes(self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        target = self._path(key)
        with self._locked(key):
            if if_absent and target.exists():
                raise ConditionalWriteFailed(f"{self.location(key)} already exists")
            if if_match is not None:
                current = sha256_file(target) if target.exists() else None
                if current != if_match:
                    raise ConditionalWriteFailed(f"{self.location(key)} changed since it was read")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.partial")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return sha256_bytes(data)

    def get_bytes(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"{self.location(key)} does not exist")
        data = path.read_bytes()
        return data, sha256_bytes(data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if not base.exists():
            return []
        # Dot-names are the store's own bookkeeping (locks, partial writes), never artifacts.
        return sorted(
            rel.as_posix()
            for rel in (p.relative_to(self.root) for p in base.rglob("*") if p.is_file())
            if not any(part.startswith(".") for part in rel.parts)
        )

    def location(self, key: str) -> str:
        return f"{self.uri}/{key}"

    def browser_link(self, key: str, expires_s: int = 3600) -> str:
        # Browsers open file: URLs typed or pasted into the address bar, not followed from an http page.
        return (self.root / key).resolve().as_uri()


class S3Store:
    """An ``s3://bucket/prefix`` on AWS or any S3-compatible endpoint, through boto3.

    Every object is written with the configured server-side encryption and its
    sha256 (as object metadata, and as the S3 checksum where the endpoint
    supports it). Conditional writes use ``If-Match``/``If-None-Match``.
    """

    def __init__(self, config: StoreConfig) -> None:
        import boto3
        from botocore.config import Config

        rest = config.uri.removeprefix("s3://")
        self.bucket, _, prefix = rest.partition("/")
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.config = config
        self.client = boto3.client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            config=Config(
                retries={"max_attempts": config.max_attempts, "mode": "standard"},
                connect_timeout=config.timeout_s,
                read_timeout=config.timeout_s,
                # SigV4 everywhere, presigned links included: SSE-KMS objects and newer regions accept no other.
                signature_version="s3v4",
            ),
        )

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _sse(self) -> dict[str, str]:
        if self.config.sse == "none":
            return {}
        extra = {"ServerSideEncryption": self.config.sse}
        if self.config.sse == "aws:kms" and self.config.kms_key_id:
            extra["SSEKMSKeyId"] = self.config.kms_key_id
        return extra

    @_endpoint_errors
    def put_file(
        self, local: Path, key: str, sha256: str, on_bytes: Callable[[int], None] | None = None
    ) -> None:
        # The endpoint checks each request's SHA-256 checksum (each part's, for multipart)
        # and rejects a body damaged in transit; the whole file's sha256 rides along as metadata.
        extra = {"Metadata": {"sha256": sha256}, "ChecksumAlgorithm": "SHA256", **self._sse()}
        # upload_file switches to multipart above 8 MiB; an interrupted multipart upload never
        # becomes an object (infra/s3/lifecycle.json expires its parts).
        self.client.upload_file(str(local), self.bucket, self._key(key), ExtraArgs=extra, Callback=on_bytes)

    def _head(self, key: str) -> dict | None:
        """The object's headers, or None when there is no object at ``key``."""
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    @_endpoint_errors
    def stored_sha256(self, key: str) -> str | None:
        head = self._head(key)
        # An object without our metadata (written by hand) counts as unknown content: upload again.
        return None if head is None else head.get("Metadata", {}).get("sha256", "")

    @_endpoint_errors
    def get_file(self, key: str, local: Path) -> Path:
        from botocore.exceptions import ClientError

        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, self._key(key), str(local))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise ObjectNotFound(f"{self.location(key)} does not exist") from None
            raise
        return local

    @_endpoint_errors
    def put_bytes(self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        from botocore.exceptions import ClientError

        extra: dict[str, object] = {
            "Metadata": {"sha256": sha256_bytes(data)},
            "ChecksumAlgorithm": "SHA256",
            **self._sse(),
        }
        if if_match is not None:
            extra["IfMatch"] = if_match
        if if_absent:
            extra["IfNoneMatch"] = "*"
        try:
            response = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise ConditionalWriteFailed(f"{self.location(key)} changed since it was read") from None
            raise
        return response["ETag"]

    @_endpoint_errors
    def get_bytes(self, key: str) -> tuple[bytes, str]:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise ObjectNotFound(f"{self.location(key)} does not exist") from None
            raise
        return response["Body"].read(), response["ETag"]

    @_endpoint_errors
    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    @_endpoint_errors
    def list_keys(self, prefix: str) -> list[str]:
        full = self._key(prefix.rstrip("/")) + ("/" if prefix.endswith("/") else "") if prefix else self.prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def location(self, key: str) -> str:
        return f"{self.uri}/{key}"

    def browser_link(self, key: str, expires_s: int = 3600) -> str:
        # Signed with the caller's credentials; whoever holds the link may read this one object until it expires.
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_s
        )


def open_store(config: StoreConfig) -> ArtifactStore:
    """The store named by ``config.uri``; relative file:// paths resolve against the working directory."""
    if config.uri.startswith("file://"):
        return FileStore(Path(config.uri.removeprefix("file://")).expanduser())
    return S3Store(config)

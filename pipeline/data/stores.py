"""Where the lake's bytes live: a small storage interface (`Store`) and its two backends,
`LocalStore` (a directory) and `S3Store` (S3 or an S3-compatible server through boto3).

Every object is written whole: locally to a temporary file that is then renamed over the target,
on S3 as a single ``PutObject``. ``put_if`` is the compare-and-set write an object that several
writers rewrite needs (the promotion ledger): it replaces the object only if it still holds what
the writer read (``If-Match`` on S3; a lock file and a content hash locally), so a writer that
lost a race is told and re-reads instead of erasing the other's write.

S3 requests are retried by botocore (``standard`` mode: exponential back-off with jitter on
timeouts, dropped connections, throttling and 5xx), ``PRICING_S3_MAX_ATTEMPTS`` attempts in all;
only then does a `LakeUnavailable` name the store and what to check.
"""

from __future__ import annotations

import abc
import errno
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from pipeline.errors import PricingError, Unavailable

TMP_PREFIX = ".tmp-"  # temporary files and lock files; never listed


class LakeError(PricingError, ValueError):
    """A lake URI, path or partition is missing or invalid, or the store refused a request."""


class LakeUnavailable(Unavailable, LakeError):
    """The object store is out of reach, or refused the credentials, or the disk is full."""


class StoreConflict(LakeError):
    """A compare-and-set write lost: the object changed since it was read. Re-read and retry."""


class Store(abc.ABC):
    """Bytes under string keys (``a/b/c.parquet``), relative to a root."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically, replacing any object there."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """Return the object's bytes; raise FileNotFoundError when there is none."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Return the sorted keys that start with ``prefix`` (all keys for ``""``)."""

    @abc.abstractmethod
    def copy(self, src: str, dst: str) -> None:
        """Copy one object, replacing ``dst``; raise FileNotFoundError if ``src`` is absent."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object; deleting an absent key is not an error."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """Where ``key`` lives, as a path (local) or ``s3://`` URI."""

    @abc.abstractmethod
    def get_tagged(self, key: str) -> tuple[bytes, str | None]:
        """The object's bytes and a tag of this content for `put_if` (``b"", None`` if absent)."""

    @abc.abstractmethod
    def put_if(self, key: str, data: bytes, tag: str | None) -> None:
        """Write ``data`` at ``key`` only if the object still has ``tag`` (None: only if there is
        no object yet); raise `StoreConflict` otherwise, writing nothing."""


class LocalStore(Store):
    """A directory on the local file system."""

    def __init__(self, root: Path) -> None:
        if root.exists() and not root.is_dir():
            raise LakeError(
                f"lake root {root} is a file; pass a directory (it is created if absent)"
            )
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key

    @staticmethod
    @contextmanager
    def _disk_full(target: Path) -> Iterator[None]:
        try:
            yield
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise LakeUnavailable(
                    f"cannot write {target}: the disk is full ({err.strerror}); nothing was "
                    "written — free space under the lake, then re-run the step"
                ) from err
            raise

    def put(self, key: str, data: bytes) -> None:
        target = self._path(key)
        with self._disk_full(target):
            self._put(target, data)

    @staticmethod
    def _put(target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        # The temporary file sits beside the target so os.replace is a same-filesystem rename.
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(str(path))
        return path.read_bytes()

    def list(self, prefix: str) -> list[str]:
        # Walk only the deepest directory the prefix names, then filter by the string prefix as S3 does.
        base = self.root / prefix if prefix.endswith("/") else self.root / prefix.rpartition("/")[0]
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith(TMP_PREFIX):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def copy(self, src: str, dst: str) -> None:
        self.put(dst, self.get(src))

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # Prune emptied folders so a moved partition leaves no empty date=... directory behind.
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def uri(self, key: str) -> str:
        return str(self.root / key) if key else str(self.root)

    def get_tagged(self, key: str) -> tuple[bytes, str | None]:
        try:
            data = self.get(key)
        except FileNotFoundError:
            return b"", None
        return data, hashlib.sha256(data).hexdigest()

    def put_if(self, key: str, data: bytes, tag: str | None) -> None:
        target = self._path(key)
        # (`put` makes the target's folder.) Writers of this object take its lock file, then
        # compare and replace. The lock files are 256 stripes under one hidden folder: none is
        # left in the lake's folders.
        stripe = hashlib.sha256(key.encode()).hexdigest()[:2]
        lock = self.root / f"{TMP_PREFIX}locks" / f"{TMP_PREFIX}lock-{stripe}"
        with self._disk_full(target):
            lock.parent.mkdir(parents=True, exist_ok=True)
            lock.touch()
        with open(lock, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                if self.get_tagged(key)[1] != tag:
                    raise StoreConflict(f"{target} changed since it was read; re-read it")
                self.put(key, data)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


class S3Store(Store):
    """A bucket and key prefix on S3 or an S3-compatible server (MinIO, moto)."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint_url: str | None = None,
        max_attempts: int = 5,
        timeout_s: float = 10.0,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        # botocore retries timeouts, dropped connections, throttling and 5xx with back-off.
        config = Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
        )
        # Credentials and region come from the usual AWS variables, profile or instance role.
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url, config=config)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        """Turn botocore's exceptions into LakeErrors that say what to fix."""
        where = self.uri(key)
        try:
            yield
        except (NoCredentialsError, PartialCredentialsError) as err:
            raise LakeUnavailable(
                f"cannot {action} {where}: {err}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE)"
            ) from err
        except EndpointConnectionError as err:
            raise LakeUnavailable(
                f"cannot {action} {where}: the object store is out of reach ({err}); check that "
                "it runs and --s3-endpoint-url / PRICING_S3_ENDPOINT_URL"
            ) from err
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                raise LakeError(
                    f"cannot {action} {where}: bucket {self.bucket!r} does not exist; create it "
                    f"first (e.g. `aws s3 mb s3://{self.bucket}`)"
                ) from err
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                raise LakeUnavailable(
                    f"cannot {action} {where}: access denied ({code}); check the AWS credentials "
                    "and the bucket policy"
                ) from err
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status >= 500:
                raise LakeUnavailable(
                    f"cannot {action} {where}: the object store answered {status} ({code}) after "
                    "retries; try again when it has recovered"
                ) from err
            raise LakeError(f"cannot {action} {where}: {err}") from err
        except BotoCoreError as err:  # timeouts, dropped connections: after botocore's retries
            raise LakeUnavailable(
                f"cannot {action} {where}: {err}; check that the object store runs and answers"
            ) from err

    @staticmethod
    def _is_missing(err: Exception) -> bool:
        if not isinstance(err, ClientError):
            return False
        return err.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404", "NotFound")

    def put(self, key: str, data: bytes) -> None:
        # One PutObject is atomic: readers see the old object or the new one, never a mix.
        with self._errors("write", key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def _read(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None when there is no object."""
        with self._errors("read", key):
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except Exception as err:
                if self._is_missing(err):
                    return None
                raise
            body: bytes = resp["Body"].read()
            return body, str(resp["ETag"])

    def get(self, key: str) -> bytes:
        found = self._read(key)
        if found is None:
            raise FileNotFoundError(self.uri(key))
        return found[0]

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        with self._errors("list", prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def copy(self, src: str, dst: str) -> None:
        # CopyObject is server-side and atomic for objects up to 5 GB, far above a day's partition.
        with self._errors("copy", src):
            try:
                self.client.copy_object(
                    Bucket=self.bucket,
                    Key=self._key(dst),
                    CopySource={"Bucket": self.bucket, "Key": self._key(src)},
                )
            except Exception as err:
                if self._is_missing(err):
                    raise FileNotFoundError(self.uri(src)) from err
                raise

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        with self._errors("check", key):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except Exception as err:
                if self._is_missing(err):
                    return False
                raise
        return True

    def uri(self, key: str) -> str:
        path = self._key(key)
        return f"s3://{self.bucket}/{path}" if path else f"s3://{self.bucket}"

    def get_tagged(self, key: str) -> tuple[bytes, str | None]:
        return self._read(key) or (b"", None)

    def put_if(self, key: str, data: bytes, tag: str | None) -> None:
        # S3's conditional writes: If-Match the ETag read, or If-None-Match * for a new object.
        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": tag}
        with self._errors("write", key):
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=data, **condition
                )
            except ClientError as err:
                code = err.response.get("Error", {}).get("Code", "")
                if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    raise StoreConflict(f"{self.uri(key)} changed since it was read") from err
                raise



"""The lake: date-partitioned Parquet on a local directory or S3, one code path for both.

Layout: ``{root}/{zone}/{feed}/date=YYYY-MM-DD/part-0000.parquet`` with the zones in ``ZONES``.
A small storage interface (``Store``: put, get, list, copy, delete, exists) has two backends,
``LocalStore`` and ``S3Store``; ``Lake`` holds all the partition logic on top of it.

Every object is written whole: locally to a temporary file that is then renamed over the target,
on S3 as a single ``PutObject``. A crash therefore never leaves half a partition, and re-writing a
date replaces it, so nights can be re-run.
"""

from __future__ import annotations

import abc
import datetime as dt
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import boto3
import pandas as pd
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from pipeline.contracts import ZONES
from pipeline.settings import Settings

from pipeline.errors import PricingError, Unavailable

PART_NAME = "part-0000.parquet"
_TMP_PREFIX = ".tmp-"

# How each partition is normally produced: quoted in the error when one is missing.
_PRODUCERS = {
    ("raw", "decisions"): "`pricing history` (synthetic logs) or the pricing service's log export",
    ("raw", "transactions"): "`pricing ingest` (a POS export) or `pricing history` (synthetic)",
}


class LakeError(PricingError, ValueError):
    """A lake URI, path or partition is missing or invalid, or the store refused a request."""


class LakeUnavailable(Unavailable, LakeError):
    """The object store is out of reach, or refused the credentials."""


def _check_relpath(relpath: str, allow_empty: bool = False) -> str:
    """Reject paths that would escape the lake root or address nothing."""
    if not relpath:
        if allow_empty:
            return relpath
        raise LakeError("lake path is empty; pass a path relative to the lake root")
    if relpath.startswith("/") or "\\" in relpath:
        raise LakeError(
            f"lake path {relpath!r} must be relative to the lake root with '/' separators"
        )
    parts = relpath.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise LakeError(f"lake path {relpath!r} has an empty, '.' or '..' segment")
    return relpath


def _is_part(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.startswith("part-") and name.endswith(".parquet")


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

    def put(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # The temporary file sits beside the target so os.replace is a same-filesystem rename.
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
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
            if path.is_file() and not path.name.startswith(_TMP_PREFIX):
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


class S3Store(Store):
    """A bucket and key prefix on S3 or an S3-compatible server (MinIO, moto)."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        # Credentials and region come from the usual AWS variables, profile or instance role.
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url)

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

    def get(self, key: str) -> bytes:
        with self._errors("read", key):
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except Exception as err:
                if self._is_missing(err):
                    raise FileNotFoundError(self.uri(key)) from err
                raise
            body: bytes = resp["Body"].read()
            return body

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


class Lake:
    """Date-partitioned feeds over a ``Store``; see the module docstring for the layout."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    def from_uri(cls, uri: str, endpoint_url: str | None = None) -> Lake:
        """Open a lake at a local path, a ``file://`` URI or ``s3://bucket/prefix``.

        Args:
            uri: where the lake lives; a local directory is created on first write.
            endpoint_url: S3-compatible endpoint (MinIO, moto); ignored for local lakes.

        Raises:
            LakeError: the URI is empty, has an unsupported scheme, or names no bucket.
        """
        uri = uri.strip()
        if not uri:
            raise LakeError("lake URI is empty; pass a directory or s3://bucket/prefix")
        parsed = urlparse(uri)
        scheme = parsed.scheme.lower()
        if scheme == "s3":
            if not parsed.netloc:
                raise LakeError(f"lake URI {uri!r} names no bucket; use s3://bucket/prefix")
            return cls(S3Store(parsed.netloc, parsed.path, endpoint_url))
        if scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise LakeError(f"lake URI {uri!r}: file:// URIs must name a local path")
            return cls(LocalStore(Path(unquote(parsed.path))))
        # One-letter schemes are Windows drive letters, not URI schemes.
        if scheme and len(scheme) > 1:
            raise LakeError(
                f"lake URI {uri!r}: unsupported scheme {scheme!r}; use a local path, file:// or "
                "s3://bucket/prefix"
            )
        return cls(LocalStore(Path(uri)))

    def __repr__(self) -> str:
        return f"Lake({self.uri('')!r})"

    # -- paths ---------------------------------------------------------------------------------

    def uri(self, relpath: str) -> str:
        """The full location of ``relpath``: a local path or an ``s3://`` URI."""
        return self.store.uri(_check_relpath(relpath, allow_empty=True))

    @staticmethod
    def _feed_prefix(zone: str, feed: str) -> str:
        if zone not in ZONES:
            raise LakeError(f"zone must be one of {ZONES} (got {zone!r})")
        if not feed or "/" in feed or "\\" in feed or feed in (".", ".."):
            raise LakeError(f"feed must be a plain name such as 'transactions' (got {feed!r})")
        return f"{zone}/{feed}/"

    def partition_prefix(self, zone: str, feed: str, date: dt.date) -> str:
        """The partition folder relative to the root: ``zone/feed/date=YYYY-MM-DD``."""
        return f"{self._feed_prefix(zone, feed)}date={date.isoformat()}"

    def _folder(self, zone: str, feed: str, date: dt.date) -> str:
        # With the slash, date=2026-01-05 cannot match a sibling such as date=2026-01-05x.
        return self.partition_prefix(zone, feed, date) + "/"

    # -- partitions ----------------------------------------------------------------------------

    def write_partition(self, zone: str, feed: str, date: dt.date, df: pd.DataFrame) -> str:
        """Write one day of one feed, replacing the partition's data; return the URI written."""
        prefix = self._folder(zone, feed, date)
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        key = prefix + PART_NAME
        self.store.put(key, buf.getvalue())
        # Parts from another writer would be read alongside ours: the partition is ours alone now.
        for stale in self.store.list(prefix):
            if stale != key and _is_part(stale):
                self.store.delete(stale)
        return self.store.uri(key)

    def add_part(self, zone: str, feed: str, date: dt.date, df: pd.DataFrame, name: str) -> str:
        """Add one part file beside the partition's others (a writer that logs continuously, like
        the pricing service, adds parts; readers read them all). Writing ``name`` again replaces
        that part only, so a retried write does not double its rows."""
        if not _is_part(name) or "/" in name or name == PART_NAME:
            raise LakeError(f"part name {name!r} must look like part-<writer>.parquet")
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        key = self._folder(zone, feed, date) + name
        self.store.put(key, buf.getvalue())
        return self.store.uri(key)

    def _parts(self, zone: str, feed: str, date: dt.date) -> list[str]:
        return [k for k in self.store.list(self._folder(zone, feed, date)) if _is_part(k)]

    def read_partition(self, zone: str, feed: str, date: dt.date) -> pd.DataFrame:
        """Read one partition as a DataFrame.

        Raises:
            LakeError: the partition does not exist (naming how to create it), or a part file is
                unreadable (truncated or not Parquet).
        """
        parts = self._parts(zone, feed, date)
        if not parts:
            how = _PRODUCERS.get((zone, feed), f"the pipeline step that writes {zone}/{feed}")
            raise LakeError(
                f"no partition {self.partition_prefix(zone, feed, date)} in {self.uri('')}; "
                f"create it with {how}"
            )
        frames = []
        for key in parts:
            data = self.store.get(key)
            try:
                frames.append(pd.read_parquet(io.BytesIO(data)))
            except Exception as err:
                raise LakeError(
                    f"partition file {self.store.uri(key)} is unreadable (truncated or not "
                    f"Parquet: {err}); re-create the partition or move it to quarantine"
                ) from err
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def has_partition(self, zone: str, feed: str, date: dt.date) -> bool:
        """Whether the partition holds at least one part file."""
        return bool(self._parts(zone, feed, date))

    def list_dates(self, zone: str, feed: str) -> list[dt.date]:
        """The sorted dates that have a partition (with a part file) in ``zone/feed``."""
        base = self._feed_prefix(zone, feed)
        dates = set()
        for key in self.store.list(base + "date="):
            folder, _, _ = key[len(base) :].partition("/")
            if not _is_part(key):
                continue
            try:
                dates.add(dt.date.fromisoformat(folder.removeprefix("date=")))
            except ValueError:
                continue  # a foreign folder such as date=latest is not a partition
        return sorted(dates)

    def move_partition(
        self, feed: str, date: dt.date, from_zone: str = "raw", to_zone: str = "quarantine"
    ) -> str:
        """Move every object of a partition folder to another zone; return the destination URI.

        Objects are copied first, then destination leftovers are removed, then the source is
        deleted: a crash at any point loses nothing, and re-running the move completes it.
        """
        src = self._folder(from_zone, feed, date)
        dst = self._folder(to_zone, feed, date)
        if src == dst:
            raise LakeError(
                f"cannot move {src.removesuffix('/')} onto itself; pick another to_zone"
            )
        keys = self.store.list(src)
        if not keys:
            raise LakeError(f"no partition {src.removesuffix('/')} in {self.uri('')} to move")
        moved = {dst + k[len(src) :] for k in keys}
        for key in keys:
            self.store.copy(key, dst + key[len(src) :])
        for old in self.store.list(dst):
            if old not in moved:
                self.store.delete(old)
        for key in keys:
            self.store.delete(key)
        return self.store.uri(dst.removesuffix("/"))

    # -- plain objects -------------------------------------------------------------------------

    def write_bytes(self, relpath: str, data: bytes) -> None:
        """Write an object atomically (a report, a manifest), replacing any object there."""
        self.store.put(_check_relpath(relpath), data)

    def read_bytes(self, relpath: str) -> bytes:
        """Read an object; LakeError naming the URI if it does not exist."""
        try:
            return self.store.get(_check_relpath(relpath))
        except FileNotFoundError as err:
            raise LakeError(f"no object {self.store.uri(relpath)} in the lake") from err

    def exists(self, relpath: str) -> bool:
        """Whether an object is stored at ``relpath``."""
        return self.store.exists(_check_relpath(relpath))

    def list(self, prefix: str = "") -> list[str]:
        """The sorted paths, relative to the root, of every object under ``prefix``."""
        return self.store.list(_check_relpath(prefix, allow_empty=True))


def open_lake(settings: Settings) -> Lake:
    """The lake the settings name (``PRICING_LAKE_URI``, ``PRICING_S3_ENDPOINT_URL``): the one
    place the pipeline opens it."""
    return Lake.from_uri(settings.lake, settings.s3_endpoint_url)

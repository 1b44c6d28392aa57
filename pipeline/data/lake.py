"""The lake: date-partitioned Parquet on a local directory or S3, one code path for both.

Layout: ``{root}/{zone}/{feed}/date=YYYY-MM-DD/part-0000.parquet`` with the zones in ``ZONES``.
The storage interface and its backends (a directory, S3) are in `pipeline.data.stores`;
``Lake`` holds all the partition logic on top of them.

Every object is written whole (see `pipeline.data.stores`): a crash never leaves half a
partition, and re-writing a date replaces it, so nights can be re-run.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from pipeline.contracts import ZONES
from pipeline.data.stores import (
    LakeError,
    LakeUnavailable,
    LocalStore,
    S3Store,
    Store,
    StoreConflict,
)
from pipeline.settings import Settings

__all__ = [
    "ZONES",
    "Lake",
    "LakeError",
    "LakeUnavailable",
    "LocalStore",
    "S3Store",
    "Store",
    "StoreConflict",
    "open_lake",
]

PART_NAME = "part-0000.parquet"

# How each partition is normally produced: quoted in the error when one is missing.
_PRODUCERS = {
    ("raw", "decisions"): "`pricing history` (synthetic logs) or the pricing service's log export",
    ("raw", "transactions"): "`pricing ingest` (a POS export) or `pricing history` (synthetic)",
}


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


class Lake:
    """Date-partitioned feeds over a ``Store``; see the module docstring for the layout."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    def from_uri(
        cls,
        uri: str,
        endpoint_url: str | None = None,
        max_attempts: int = 5,
        timeout_s: float = 10.0,
    ) -> Lake:
        """Open a lake at a local path, a ``file://`` URI or ``s3://bucket/prefix``.

        Args:
            uri: where the lake lives; a local directory is created on first write.
            endpoint_url: S3-compatible endpoint (MinIO, moto); ignored for local lakes.
            max_attempts, timeout_s: S3 attempts per request (botocore's retries) and the
                connect/read timeout of each.

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
            return cls(
                S3Store(parsed.netloc, parsed.path, endpoint_url, max_attempts, timeout_s)
            )
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

    def interrupted_move(self, feed: str, date: dt.date, from_zone: str, to_zone: str) -> bool:
        """Whether a move of this partition was cut short: both zones hold it, and every part
        left in ``from_zone`` has an identical copy in ``to_zone`` (new data written back to
        ``from_zone`` differs, and is not a move)."""
        src = self._parts(from_zone, feed, date)
        if not src or not self._parts(to_zone, feed, date):
            return False
        dst = self._folder(to_zone, feed, date)
        cut = len(self._folder(from_zone, feed, date))
        for key in src:
            try:
                if self.store.get(dst + key[cut:]) != self.store.get(key):
                    return False
            except FileNotFoundError:
                return False
        return True

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
        self,
        feed: str,
        date: dt.date,
        from_zone: str = "raw",
        to_zone: str = "quarantine",
        keep: tuple[str, ...] = (),
        merge: bool = False,
    ) -> str:
        """Move every object of a partition folder to another zone; return the destination URI.

        The destination's leftovers of an earlier move are removed first (except the names in
        ``keep``, such as a report written there first), then the objects are copied, then the
        source is deleted: a crash at any point leaves every object of the partition in one zone
        or the other. ``merge`` completes a move a crash cut short while it deleted the source
        (`interrupted_move`): the parts already moved stay, the rest join them.
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
        if not merge:
            for old in self.store.list(dst):
                if old not in moved and old[len(dst) :] not in keep:
                    self.store.delete(old)
        for key in keys:
            self.store.copy(key, dst + key[len(src) :])
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

    def read_tagged(self, relpath: str) -> tuple[bytes, str | None]:
        """An object's bytes and the tag `write_if` compares (``b"", None`` if absent)."""
        return self.store.get_tagged(_check_relpath(relpath))

    def write_if(self, relpath: str, data: bytes, tag: str | None) -> None:
        """Replace an object only if it still has ``tag`` (None: only if absent); else
        `StoreConflict`, writing nothing."""
        self.store.put_if(_check_relpath(relpath), data, tag)

    def exists(self, relpath: str) -> bool:
        """Whether an object is stored at ``relpath``."""
        return self.store.exists(_check_relpath(relpath))

    def list(self, prefix: str = "") -> list[str]:
        """The sorted paths, relative to the root, of every object under ``prefix``."""
        return self.store.list(_check_relpath(prefix, allow_empty=True))


def open_lake(settings: Settings) -> Lake:
    """The lake the settings name (``PRICING_LAKE_URI``, ``PRICING_S3_ENDPOINT_URL``): the one
    place the pipeline opens it."""
    return Lake.from_uri(
        settings.lake, settings.s3_endpoint_url, settings.s3_max_attempts, settings.s3_timeout_s
    )

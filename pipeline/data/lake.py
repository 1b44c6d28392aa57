"""The lake: date-partitioned Parquet on a local directory or S3, one code path for both.

Layout: ``{root}/{zone}/{feed}/date=YYYY-MM-DD/`` holding ``part-*.parquet`` files and the
partition's manifest ``_manifest.json``, with the zones in ``ZONES``. The storage interface and
its backends (a directory, S3) are in `pipeline.data.stores`; ``Lake`` holds all the partition
logic on top of them.

A partition is visible whole or not at all. Every object is written whole (see
`pipeline.data.stores`), and a partition is the set of parts its manifest lists: writers put
their parts first and commit by writing the manifest (one object, compare-and-set so that the
pricing service's batches and a batch write never erase each other's commit); readers read the
listed parts and nothing else. A part a crashed writer left behind is not listed, so no reader
sees it, and the writer's retry writes the same name again (`write_partition` names its part
after its content, `add_part` takes the writer's batch name). Re-writing a date replaces the
partition in one step, so nights can be re-run. (A reader that listed the manifest just before
such a rewrite may find a replaced part gone: it gets a `LakeError` naming it, and reads again.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from pipeline.contracts import REPORTS_PREFIX, ZONES, cluster_reports_prefix
from pipeline.data.stores import (
    LakeError,
    LakeUnavailable,
    LocalStore,
    S3Store,
    Store,
    StoreConflict,
)
from pipeline.data.slices import read_slice, skus_key
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

MANIFEST = "_manifest.json"
MANIFEST_ATTEMPTS = 20  # compare-and-set retries of a manifest that other writers keep changing

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


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _is_part(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.startswith("part-") and name.endswith(".parquet")


class Lake:
    """Date-partitioned feeds over a ``Store``; see the module docstring for the layout."""

    def __init__(
        self,
        store: Store,
        reports_root: str = "",
        skus: frozenset[str] | None = None,
        cluster: str | None = None,
    ) -> None:
        self.store = store
        # A cluster's view (`for_cluster`): its own reports/ and only its SKUs' rows, read from
        # the cluster's slices where they match (`pipeline.data.slices`).
        self.reports_root = reports_root
        self.skus = skus
        self.cluster = cluster
        self._skus_key = None if skus is None else skus_key(skus)

    def for_cluster(self, cluster: str, skus: Iterable[str] | None = None) -> Lake:
        """The lake as one cluster's night sees it: ``reports/…`` (reports, fitted world,
        ledger) lives under ``reports/cluster=<cluster>/…``, and partitions read only the rows
        of ``skus`` (all rows if None; raw rows from the cluster's slices where they match). Raw,
        features and catalogue objects are shared."""
        if not cluster or "/" in cluster or cluster in (".", ".."):
            raise LakeError(f"cluster must be a plain name such as 'tee-basic-0' (got {cluster!r})")
        return Lake(
            self.store,
            cluster_reports_prefix(cluster),
            None if skus is None else frozenset(skus),
            cluster,
        )

    def _obj(self, relpath: str) -> str:
        """Where a plain object's path lives in this view (reports/ moves for a cluster)."""
        if self.reports_root and relpath.startswith(REPORTS_PREFIX):
            return self.reports_root + relpath.removeprefix(REPORTS_PREFIX)
        return relpath

    def _unobj(self, key: str) -> str:
        if self.reports_root and key.startswith(self.reports_root):
            return REPORTS_PREFIX + key.removeprefix(self.reports_root)
        return key

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
        return self.store.uri(self._obj(_check_relpath(relpath, allow_empty=True)))

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

    def _manifest(self, zone: str, feed: str, date: dt.date) -> str:
        return self._folder(zone, feed, date) + MANIFEST

    def _listed(self, key: str) -> tuple[list[str], str | None]:
        """The part names a manifest lists and its tag (``[], None`` when there is none)."""
        data, tag = self.store.get_tagged(key)
        if tag is None:
            return [], None
        try:
            names = json.loads(data)["parts"]
            if not isinstance(names, list) or not all(
                isinstance(n, str) and _is_part(n) and "/" not in n for n in names
            ):
                raise TypeError("parts must be a list of part-*.parquet names")
        except (ValueError, KeyError, TypeError) as err:
            raise LakeError(
                f"partition manifest {self.store.uri(key)} is unreadable ({err}); re-create "
                "the partition (re-run the step that writes it)"
            ) from err
        return names, tag

    def _commit(self, key: str, change: Callable[[list[str]], list[str]]) -> list[str]:
        """Rewrite a manifest with ``change(listed names)`` by compare-and-set, re-reading when
        another writer committed in between; return the names it listed before."""
        for _ in range(MANIFEST_ATTEMPTS):
            old, tag = self._listed(key)
            new = sorted(set(change(old)))
            if new == old and tag is not None:
                return old
            body = json.dumps({"parts": new}, indent=1).encode()
            try:
                self.store.put_if(key, body, tag)
            except StoreConflict:
                continue
            return old
        raise LakeUnavailable(
            f"partition manifest {self.store.uri(key)} kept changing while it was committed "
            f"({MANIFEST_ATTEMPTS} attempts); retry the step"
        )

    def write_partition(self, zone: str, feed: str, date: dt.date, df: pd.DataFrame) -> str:
        """Write one day of one feed, replacing the partition's data; return the URI written.

        The part is named after its content, so a retried write puts the same object again;
        the manifest then lists it alone (the parts of other writers included before, such as
        the service's, are replaced with it in that one step) and the replaced parts are
        deleted."""
        return self.write_parts(zone, feed, date, [df])[0]

    def write_parts(
        self, zone: str, feed: str, date: dt.date, frames: Iterable[pd.DataFrame]
    ) -> list[str]:
        """Write one day of one feed as several parts (only one part is in memory at a time),
        replacing the partition's data in one commit once every part is written; return the
        URIs written."""
        names = [self.put_part(zone, feed, date, df) for df in frames]
        self.commit_parts(zone, feed, date, names)
        prefix = self._folder(zone, feed, date)
        return [self.store.uri(prefix + n) for n in names]

    def put_part(self, zone: str, feed: str, date: dt.date, df: pd.DataFrame) -> str:
        """Write a part, not yet listed (no reader sees it before `commit_parts`); return its
        name, which is derived from its content (a retried write puts the same object)."""
        data = _parquet(df)
        name = f"part-{hashlib.sha256(data).hexdigest()[:16]}.parquet"
        self.store.put(self._folder(zone, feed, date) + name, data)
        return name

    def commit_parts(self, zone: str, feed: str, date: dt.date, names: list[str]) -> None:
        """Make ``names`` (written by `put_part`) the partition, replacing what it held in one
        step; the replaced parts are deleted."""
        prefix = self._folder(zone, feed, date)
        if not names:
            raise LakeError(f"no part to commit to {prefix.removesuffix('/')}; write one first")
        old = self._commit(self._manifest(zone, feed, date), lambda _: names)
        for stale in old:
            if stale not in names:
                self.store.delete(prefix + stale)

    def add_part(self, zone: str, feed: str, date: dt.date, df: pd.DataFrame, name: str) -> str:
        """Add one part file beside the partition's others (a writer that logs continuously, like
        the pricing service, adds parts; readers read them all). Writing ``name`` again replaces
        that part only, so a retried write does not double its rows."""
        if not _is_part(name) or "/" in name:
            raise LakeError(f"part name {name!r} must look like part-<writer>.parquet")
        key = self._folder(zone, feed, date) + name
        self.store.put(key, _parquet(df))
        self._commit(self._manifest(zone, feed, date), lambda old: [*old, name])
        return self.store.uri(key)

    def _parts(self, zone: str, feed: str, date: dt.date) -> list[str]:
        names, _ = self._listed(self._manifest(zone, feed, date))
        prefix = self._folder(zone, feed, date)
        return [prefix + n for n in names]

    def part_paths(self, zone: str, feed: str, date: dt.date) -> list[str]:
        """The paths, relative to the root, of the parts the partition's manifest lists."""
        return self._parts(zone, feed, date)

    def iter_partition(
        self, zone: str, feed: str, date: dt.date, columns: list[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        """The partition part by part (the parts its manifest lists), each as a DataFrame: what
        a reader that must not hold a whole day of a large catalogue iterates. A cluster's view
        reads a raw partition from the cluster's slice, in one frame, where one matches it.

        Raises:
            LakeError: the partition does not exist (naming how to create it), or a listed part
                is missing or unreadable (truncated or not Parquet).
        """
        parts = self._parts(zone, feed, date)
        if not parts:
            how = _PRODUCERS.get((zone, feed), f"the pipeline step that writes {zone}/{feed}")
            raise LakeError(
                f"no partition {self.partition_prefix(zone, feed, date)} in {self.uri('')}; "
                f"create it with {how}"
            )
        if zone == "raw" and self._skus_key is not None and self.cluster is not None:
            names = [key.rsplit("/", 1)[1] for key in parts]
            sliced = read_slice(
                self.store, self.cluster, self._skus_key, feed, date, names, columns
            )
            if sliced is not None:
                yield sliced
                return
        for key in parts:
            try:
                data = self.store.get(key)
            except FileNotFoundError as err:
                raise LakeError(
                    f"partition file {self.store.uri(key)} is listed in the partition's manifest "
                    "but missing; re-create the partition or move it to quarantine"
                ) from err
            wanted = columns
            if self.skus is not None and columns is not None and "sku" not in columns:
                wanted = [*columns, "sku"]
            try:
                frame = pd.read_parquet(io.BytesIO(data), columns=wanted)
            except Exception as err:
                raise LakeError(
                    f"partition file {self.store.uri(key)} is unreadable (truncated or not "
                    f"Parquet: {err}); re-create the partition or move it to quarantine"
                ) from err
            del data
            if self.skus is not None and "sku" in frame.columns:
                frame = frame[frame["sku"].astype(str).isin(self.skus)].reset_index(drop=True)
                if columns is not None:
                    frame = frame[columns]
            yield frame

    def read_partition(self, zone: str, feed: str, date: dt.date) -> pd.DataFrame:
        """Read one partition (the parts its manifest lists) as one DataFrame; raises as
        `iter_partition` does."""
        frames = list(self.iter_partition(zone, feed, date))
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def interrupted_move(self, feed: str, date: dt.date, from_zone: str, to_zone: str) -> bool:
        """Whether a move of this partition was cut short: both zones hold it, and every part
        ``from_zone`` lists has an identical copy in ``to_zone`` (new data written back to
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
        """Whether the partition is committed (its manifest lists at least one part)."""
        return bool(self._parts(zone, feed, date))

    def list_dates(self, zone: str, feed: str) -> list[dt.date]:
        """The sorted dates that have a committed partition (a manifest) in ``zone/feed``."""
        return self.snapshot_dates(self._feed_prefix(zone, feed), MANIFEST)

    def move_partition(
        self,
        feed: str,
        date: dt.date,
        from_zone: str = "raw",
        to_zone: str = "quarantine",
        keep: tuple[str, ...] = (),
        merge: bool = False,
    ) -> str:
        """Move a partition folder to another zone; return the destination URI.

        The destination's leftovers of an earlier move are removed first (except the names in
        ``keep``, such as a report written there first), then every object is copied, then the
        destination's manifest commits the partition there, then the source's manifest is
        deleted (the partition leaves the source in that step) and its objects with it. A crash
        at any point leaves the partition whole in one zone or both; ``merge`` completes a move
        that a crash left visible in both (`interrupted_move`).
        """
        src = self._folder(from_zone, feed, date)
        dst = self._folder(to_zone, feed, date)
        if src == dst:
            raise LakeError(
                f"cannot move {src.removesuffix('/')} onto itself; pick another to_zone"
            )
        names = [k[len(src) :] for k in self._parts(from_zone, feed, date)]
        if not names:
            raise LakeError(f"no partition {src.removesuffix('/')} in {self.uri('')} to move")
        keys = [k for k in self.store.list(src) if k != src + MANIFEST]
        moved = {dst + k[len(src) :] for k in keys}
        if not merge:
            for old in self.store.list(dst):
                if old not in moved and old[len(dst) :] not in keep:
                    self.store.delete(old)
        for key in keys:
            self.store.copy(key, dst + key[len(src) :])
        self._commit(dst + MANIFEST, lambda old: [*old, *names] if merge else names)
        self.store.delete(src + MANIFEST)
        for key in keys:
            self.store.delete(key)
        return self.store.uri(dst.removesuffix("/"))

    # -- plain objects -------------------------------------------------------------------------

    def write_bytes(self, relpath: str, data: bytes) -> None:
        """Write an object atomically (a report, a manifest), replacing any object there."""
        self.store.put(self._obj(_check_relpath(relpath)), data)

    def read_bytes(self, relpath: str) -> bytes:
        """Read an object; LakeError naming the URI if it does not exist."""
        try:
            return self.store.get(self._obj(_check_relpath(relpath)))
        except FileNotFoundError as err:
            raise LakeError(f"no object {self.uri(relpath)} in the lake") from err

    def read_tagged(self, relpath: str) -> tuple[bytes, str | None]:
        """An object's bytes and the tag `write_if` compares (``b"", None`` if absent)."""
        return self.store.get_tagged(self._obj(_check_relpath(relpath)))

    def write_if(self, relpath: str, data: bytes, tag: str | None) -> None:
        """Replace an object only if it still has ``tag`` (None: only if absent); else
        `StoreConflict`, writing nothing."""
        self.store.put_if(self._obj(_check_relpath(relpath)), data, tag)

    def exists(self, relpath: str) -> bool:
        """Whether an object is stored at ``relpath``."""
        return self.store.exists(self._obj(_check_relpath(relpath)))

    def snapshot_dates(self, prefix: str, name: str) -> list[dt.date]:
        """The sorted dates ``D`` that have an object ``<prefix>date=D/<name>`` (dated snapshots
        such as the catalogue's and the clusters')."""
        dates = []
        for key in self.list(prefix + "date="):
            folder, _, rest = key.removeprefix(prefix).partition("/")
            if rest != name:
                continue
            try:
                dates.append(dt.date.fromisoformat(folder.removeprefix("date=")))
            except ValueError:
                continue  # a foreign folder such as date=latest is not a snapshot
        return sorted(dates)

    def list(self, prefix: str = "") -> list[str]:
        """The sorted paths, relative to the root, of every object under ``prefix``."""
        keys = self.store.list(self._obj(_check_relpath(prefix, allow_empty=True)))
        return sorted(self._unobj(k) for k in keys)


def open_lake(settings: Settings) -> Lake:
    """The lake the settings name (``PRICING_LAKE_URI``, ``PRICING_S3_ENDPOINT_URL``): the one
    place the pipeline opens it. For a cluster's night (``settings.cluster``), that cluster's
    view (`Lake.for_cluster`: its own reports; `pipeline.nightly.steps.night_lake` narrows it
    to the cluster's SKUs)."""
    lake = Lake.from_uri(
        settings.lake, settings.s3_endpoint_url, settings.s3_max_attempts, settings.s3_timeout_s
    )
    return lake if settings.cluster is None else lake.for_cluster(settings.cluster)

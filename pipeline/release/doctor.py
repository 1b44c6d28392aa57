"""`pricing doctor`: do the champion alias, the promotion ledger and the registry agree?

Each check says what it found and what ``--repair`` would do. Repairs never pick a new champion:
they make the ledger say what serves (a move whose line was not written is recorded as a
``reconcile`` entry), set unreadable ledger lines aside in an object of their own (nothing is
deleted), restore a deleted ``champion`` alias to the champion the ledger names, and write a
missing ``promoted_at`` tag. What no repair can decide (a ledger naming a version the registry
lost, a champion whose files no longer match their hash) is reported with what to do.

The first repair, the only one that cannot wait for a person, also runs at the start of every
promotion (`Registry.promote`, `Registry.rollback`).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass

from pipeline.contracts import LEDGER_PATH
from pipeline.model.artifacts import ModelIntegrityError
from pipeline.release.ledger import LedgerContents, champion_stack, promotion_lock
from pipeline.release.registry import CHAMPION, Registry, RegistryError


@dataclass
class Finding:
    """One check: ``ok``, what was found, and what ``--repair`` does about it (None: nothing)."""

    check: str
    ok: bool
    detail: str
    repair: str | None = None
    repaired: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Diagnosis:
    findings: list[Finding]

    @property
    def healthy(self) -> bool:
        return all(f.ok or f.repaired for f in self.findings)

    def to_dict(self) -> dict[str, object]:
        return {"healthy": self.healthy, "findings": [f.to_dict() for f in self.findings]}


_Fix = Callable[[Registry, LedgerContents], None]


def _set_aside(registry: Registry, contents: LedgerContents) -> None:
    """Unreadable lines go to an object of their own; the ledger keeps its entries."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    aside = LEDGER_PATH.replace(".jsonl", f".set-aside-{stamp}.jsonl")
    lake = registry.ledger.store
    lake.write_if(aside, "".join(f"{line}\n" for _, line in contents.bad_lines).encode(), None)
    registry.ledger.rewrite(contents, contents.entries)


def _record_move(registry: Registry, contents: LedgerContents) -> None:
    registry.reconcile_ledger()


def _restore_alias(registry: Registry, contents: LedgerContents) -> None:
    stack = champion_stack(contents.entries)
    registry.client.set_registered_model_alias(registry.name, CHAMPION, stack[-1])


def _promoted_at(registry: Registry, contents: LedgerContents) -> None:
    # the entry exists: the "champion recorded" repair, which runs first, writes it if missing
    current = registry.champion_version()
    when = next(e.when for e in reversed(contents.entries) if e.to_version == current)
    registry.client.set_model_version_tag(registry.name, str(current), "promoted_at", when)


def _bad_lines(bad: list[tuple[int, str]]) -> str:
    if not bad:
        return ""
    if len(bad) == 1:
        return f"; line {bad[0][0]} is not an entry"
    return f"; lines {', '.join(str(n) for n, _ in bad[:5])}{'…' if len(bad) > 5 else ''} are not entries"


def _checks(registry: Registry, contents: LedgerContents) -> list[tuple[Finding, _Fix | None]]:
    out: list[tuple[Finding, _Fix | None]] = []
    where = registry.ledger.store.uri(registry.ledger.path)
    bad = contents.bad_lines
    out.append(
        (
            Finding(
                "ledger readable",
                not bad,
                f"{len(contents.entries)} {'entry' if len(contents.entries) == 1 else 'entries'} "
                f"in {where}" + _bad_lines(bad),
                "set the unreadable lines aside in ledger.set-aside-<time>.jsonl" if bad else None,
            ),
            _set_aside if bad else None,
        )
    )
    stack = champion_stack(contents.entries)
    current = registry.champion_version()
    head = stack[-1] if stack else None
    if current == head:
        what = f"v{current} serves, as the ledger says" if current else "no champion yet"
        out.append((Finding("champion recorded", True, what), None))
    elif current is None:
        finding = Finding(
            "champion recorded",
            False,
            f"the ledger says v{head} serves, but the champion alias is gone (deleted outside "
            "pricing?)",
            f"point the champion alias back at v{head}",
        )
        out.append((finding, _restore_alias))
    else:
        finding = Finding(
            "champion recorded",
            False,
            f"the champion alias points at v{current}, the ledger ends at "
            f"{'v' + head if head else 'no champion'} (a move whose ledger line was not written)",
            f"record the move to v{current} in the ledger (action reconcile)",
        )
        out.append((finding, _record_move))
    out.extend(_registry_checks(registry, contents, current))
    return out


def _registry_checks(
    registry: Registry, contents: LedgerContents, current: str | None
) -> list[tuple[Finding, _Fix | None]]:
    out: list[tuple[Finding, _Fix | None]] = []
    named = {e.to_version for e in contents.entries} | {
        e.from_version for e in contents.entries if e.from_version
    }
    missing = []
    for version in sorted(named, key=int):
        try:
            registry.version(version)
        except RegistryError:
            missing.append(version)
    out.append(
        (
            Finding(
                "ledger versions exist",
                not missing,
                "every version the ledger names is registered"
                if not missing
                else f"the ledger names {', '.join('v' + v for v in missing)}, which the registry "
                "no longer has: restore the registry from its backup (the ledger keeps the "
                "history either way)",
            ),
            None,
        )
    )
    if current is None:
        return out
    try:
        with tempfile.TemporaryDirectory() as tmp:
            registry.download_verified(current, tmp)
        verified = Finding("champion verifiable", True, f"v{current}'s files match their hash")
    except ModelIntegrityError as err:
        verified = Finding(
            "champion verifiable",
            False,
            f"{err}: roll back (`pricing rollback`) or promote a version that verifies",
        )
    out.append((verified, None))
    tags = registry.version(current).tags
    has_tag = "promoted_at" in tags
    out.append(
        (
            Finding(
                "promoted_at tag",
                has_tag,
                f"v{current} promoted at {tags['promoted_at']}"
                if has_tag
                else f"v{current} has no promoted_at tag (its promotion was interrupted)",
                None if has_tag else "copy the time of its ledger entry",
            ),
            None if has_tag else _promoted_at,
        )
    )
    return out


def diagnose(registry: Registry) -> Diagnosis:
    """Every check, without changing anything."""
    return Diagnosis([finding for finding, _ in _checks(registry, registry.ledger.read())])


def repair(registry: Registry) -> Diagnosis:
    """Every check, and the repairs of what failed, under the promotion lock (no promotion can
    interleave). Each repair re-reads what it changes; the diagnosis says what was repaired."""
    with promotion_lock(registry.settings):
        findings = []
        for finding, fix in _checks(registry, registry.ledger.read()):
            if not finding.ok and fix is not None:
                # a repair sees what the ones before it wrote
                fix(registry, registry.ledger.read())
                finding.repaired = True
            findings.append(finding)
    return Diagnosis(findings)

"""`pricing promote`, `pricing rollback`: manual champion moves, behind the admin token;
`pricing doctor`: do the alias, the ledger and the registry agree (repairs behind the token)."""

from __future__ import annotations

import hmac
from typing import Annotated

import typer

from pipeline.cli import render
from pipeline.cli.app import TokenOpt, app, console, fail, settings
from pipeline.errors import ExitCode
from pipeline.settings import Settings


def _require_token(config: Settings, token: str | None) -> None:
    if not config.admin_token:
        fail(
            "manual champion moves are disabled: set PRICING_ADMIN_TOKEN where the pipeline "
            "runs, then pass it with --token (or PRICING_TOKEN)"
        )
    if not token or not hmac.compare_digest(token, config.admin_token):
        fail("the admin token is missing or wrong (--token or PRICING_TOKEN)", ExitCode.DENIED)


@app.command()
def promote(
    version: Annotated[str, typer.Option(help="version number, or 'challenger'")],
    reason: Annotated[str, typer.Option(help="why, for the ledger")],
    token: TokenOpt = None,
    who: Annotated[str | None, typer.Option(help="who, for the ledger")] = None,
    dry_run: Annotated[bool, typer.Option(help="show what would happen")] = False,
) -> None:
    """Make a version the champion (admin). Same path as the nightly gate: lock, compare-and-set,
    ledger."""
    _manual_move("promote", reason, token, version, who, dry_run)


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="why, for the ledger")],
    token: TokenOpt = None,
    who: Annotated[str | None, typer.Option(help="who, for the ledger")] = None,
    dry_run: Annotated[bool, typer.Option(help="show what would happen")] = False,
) -> None:
    """Point the champion back at the version it replaced (admin)."""
    _manual_move("rollback", reason, token, None, who, dry_run)


def _manual_move(
    action: str, reason: str, token: str | None, version: str | None, who: str | None, dry: bool
) -> None:
    from pipeline.data.lake import open_lake
    from pipeline.release.registry import Registry
    from pipeline.tracking import require_tracking

    config = settings()
    _require_token(config, token)
    require_tracking(config)
    move = Registry(config, open_lake(config)).manual_move(
        action, reason, version, who=who, dry_run=dry
    )
    done = "promoted" if action == "promote" else "rolled back"
    head = "dry run: champion would move" if dry else f"{done}: champion"
    console.print(f"{head} v{move['from']} → v{move['to']} ({reason})")


@app.command()
def doctor(
    repair: Annotated[
        bool, typer.Option(help="fix what can be fixed (admin): the champion is never changed")
    ] = False,
    token: TokenOpt = None,
) -> None:
    """Check that the champion alias, the promotion ledger and the registry agree; exit 2 while
    a problem remains. --repair records a move the ledger misses, sets unreadable ledger lines
    aside, restores a deleted champion alias, and writes a missing promoted_at tag."""
    from pipeline.data.lake import open_lake
    from pipeline.release import doctor as checks
    from pipeline.release.registry import Registry
    from pipeline.tracking import require_tracking

    config = settings()
    if repair:
        _require_token(config, token)
    require_tracking(config)
    registry = Registry(config, open_lake(config))
    diagnosis = checks.repair(registry) if repair else checks.diagnose(registry)
    findings = [f.to_dict() for f in diagnosis.findings]
    render.doctor(findings, f"{config.model_name}: alias, ledger and registry")
    if not diagnosis.healthy:
        fixable = any(not f.ok and f.repair for f in diagnosis.findings) and not repair
        hint = "; `pricing doctor --repair --token …` fixes what the table says" if fixable else ""
        fail(f"the promotion records disagree{hint}", ExitCode.STOPPED)
    repaired = any(f.repaired for f in diagnosis.findings)
    console.print("healthy, after the repairs above" if repaired else "healthy")

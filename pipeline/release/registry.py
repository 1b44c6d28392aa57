"""The MLflow model registry: candidate versions with lineage, aliases, a ledger, and safe loading.

- Every trained agent is logged as a pyfunc model (see `pipeline.release.pyfunc_agent`) and registered as a
  new version of ``settings.model_name`` with lineage tags (``data_sha256``, ``validation_report``,
  ``sim_params_sha256``, ``git_commit``, ``model_sha256``, ``logical_date``, ``algo``).
- ``challenger`` points at the night's best candidate; ``champion`` at what serves customers.
- Alias moves are serialised by a lock that works across processes (a PostgreSQL advisory lock when
  MLflow runs on PostgreSQL, so across hosts too; a file lock otherwise), and are compare-and-set: a
  move is refused if ``champion`` changed since the decision was computed. MLflow's own
  ``set_registered_model_alias`` is last-writer-wins, hence the lock.
- Every move appends a line to the promotion ledger (who, what, why, when, from → to): the alias
  moves first, then the line is appended; a move whose line could not be written is recorded
  (action ``reconcile``) at the start of the next move, or by ``pricing doctor --repair``.
- Nothing is unpickled before its SHA-256 is verified: the whole model directory against the
  version's ``model_sha256`` tag, then the SB3 file against the manifest.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from pipeline.data.lake import open_lake
from pipeline.errors import PricingError, Unavailable
from pipeline.model.agents import Agent
from pipeline.model.artifacts import ModelIntegrityError, directory_sha256, load_agent, save_agent
from pipeline.model.planner import Planner, load_planner, save_planner
from pipeline.release.ledger import (
    ByteStore,
    Ledger,
    LedgerEntry,
    LedgerError,
    Lock,
    champion_stack,
    promotion_lock,
)
from pipeline.settings import Settings
from pipeline.tracking import tracking
from sim.market import observation_columns
from sim.world import World, load_world

log = logging.getLogger("pricing.registry")

CHAMPION = "champion"
CHALLENGER = "challenger"


class PromotionConflict(PricingError, RuntimeError):
    """The champion changed between the decision and the move; nothing was changed."""


class RegistryError(PricingError, RuntimeError):
    """A version or alias does not exist, or the requested move is not possible."""


# What MLflow answers for a model, version or alias that does not exist (the only errors that
# mean "absent"; anything else, a server that does not answer above all, is not "no champion").
_ABSENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _absent_or_raise(err: MlflowException, uri: str) -> None:
    """Return if ``err`` says "does not exist"; else raise `Unavailable` naming the registry."""
    if err.error_code in _ABSENT:
        return
    first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
    raise Unavailable(
        f"the model registry at {uri} did not answer ({first}); nothing was changed — check that "
        "it runs (MLFLOW_TRACKING_URI), then retry"
    ) from err


@dataclass(frozen=True)
class LoadedVersion:
    version: str
    model: Agent  # an SB3 model or the planner
    world: World
    tags: dict[str, str]


class Registry:
    """The registered model ``settings.model_name`` and its aliases."""

    def __init__(self, settings: Settings, ledger_store: ByteStore) -> None:
        self.settings = settings
        self.name = settings.model_name
        # progress bars of artifact downloads are noise in task logs
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
        self.ledger = Ledger(ledger_store)

    # ---- versions --------------------------------------------------------------------------
    def find_version(self, logical_date: str, algo: str) -> ModelVersion | None:
        """The version already registered for this night and algorithm (idempotent re-runs)."""
        try:
            versions = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException as err:
            _absent_or_raise(err, self.settings.tracking_uri)
            return None
        for mv in versions:
            if mv.tags.get("logical_date") == logical_date and mv.tags.get("algo") == algo:
                return mv
        return None

    def register_candidate(
        self, model: Agent, world: World, algo: str, lineage: dict[str, str]
    ) -> ModelVersion:
        """Log the agent (an SB3 model, or the planner as its table) as a pyfunc model in the
        active run and register a new version."""
        with tracking(self.settings):
            return self._register_candidate(model, world, algo, lineage)

    def _register_candidate(
        self, model: Agent, world: World, algo: str, lineage: dict[str, str]
    ) -> ModelVersion:
        with tempfile.TemporaryDirectory() as tmp:
            if isinstance(model, Planner):
                agent_path = Path(tmp) / "agent.npz"
                agent_sha = save_planner(model, agent_path)
            else:
                agent_path = Path(tmp) / "agent.zip"
                agent_sha = save_agent(model, agent_path)
            world_path = Path(tmp) / "world.json"
            world_path.write_text(world.to_json())
            columns = observation_columns(world)
            manifest = {
                "agent_sha256": agent_sha,
                "agent_file": agent_path.name,
                "algo": algo,
                "observation_columns": columns,
                "world_sha256": world.fingerprint(),
            }
            manifest_path = Path(tmp) / "manifest.json"
            manifest_path.write_text(json.dumps(manifest, indent=2))
            signature = ModelSignature(
                inputs=Schema(
                    [
                        *(ColSpec("double", c) for c in [*columns, "current_price", "ref_price"]),
                        # the planner looks its table up by SKU: it needs to know which one
                        *([ColSpec("string", "sku")] if isinstance(model, Planner) else []),
                    ]
                ),
                outputs=Schema(
                    [
                        ColSpec("long", "action"),
                        ColSpec("double", "move"),
                        ColSpec("double", "price"),
                    ]
                ),
            )
            with warnings.catch_warnings():
                # the signature documents the input; an example would load the agent at log time
                warnings.filterwarnings("ignore", message=".*input example was not provided.*")
                info = mlflow.pyfunc.log_model(
                    name="agent",
                    python_model=str(Path(__file__).with_name("pyfunc_agent.py")),
                    artifacts={
                        "agent": str(agent_path),
                        "world": str(world_path),
                        "manifest": str(manifest_path),
                    },
                    signature=signature,
                    pip_requirements=[],
                )
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=tmp)
            model_sha = directory_sha256(local)
        tags = {**lineage, "algo": algo, "model_sha256": model_sha, "agent_sha256": agent_sha}
        return mlflow.register_model(info.model_uri, self.name, tags=tags)

    def label(self, version: str | int) -> str:
        """``v<number> <algorithm>``, as every table names a version (``v2 ppo``)."""
        algo = self.version(version).tags.get("algo", "")
        return f"v{version} {algo}".rstrip()

    def version(self, version: str | int) -> ModelVersion:
        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException as err:
            _absent_or_raise(err, self.settings.tracking_uri)
            raise RegistryError(f"{self.name} has no version {version}") from None

    def alias(self, alias: str) -> ModelVersion | None:
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as err:
            _absent_or_raise(err, self.settings.tracking_uri)
            return None

    def resolve(self, ref: str) -> ModelVersion:
        """A version number or an alias (``champion``, ``challenger``)."""
        if ref.isdigit():
            return self.version(ref)
        mv = self.alias(ref)
        if mv is None:
            raise RegistryError(f"{self.name} has no alias @{ref}")
        return mv

    def download_verified(self, version: str | int, dst: str | Path) -> Path:
        """Download a version's model directory and check it against its ``model_sha256`` tag."""
        mv = self.version(version)
        expected = mv.tags.get("model_sha256")
        if not expected:
            raise ModelIntegrityError(f"{self.name} v{mv.version} has no model_sha256 tag")
        with tracking(self.settings):
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{self.name}/{mv.version}", dst_path=str(dst)
                )
            )
        actual = directory_sha256(local)
        if actual != expected:
            raise ModelIntegrityError(
                f"{self.name} v{mv.version}: model files hash to {actual[:12]}…, the registry "
                f"recorded {expected[:12]}…; refusing to load a changed or corrupted model"
            )
        return local

    def load(self, version: str | int) -> LoadedVersion:
        """Verify, then load the agent (SB3 model or planner) and the world it was trained in."""
        mv = self.version(version)
        with tempfile.TemporaryDirectory() as tmp:
            local = self.download_verified(mv.version, tmp)
            agent, world = load_version_dir(local)
        return LoadedVersion(str(mv.version), agent, world, dict(mv.tags))

    def load_pyfunc(self, version: str | int, dst: str | Path) -> Any:
        """The pyfunc model of a version, after the directory hash check."""
        local = self.download_verified(version, dst)
        return mlflow.pyfunc.load_model(str(local))

    # ---- aliases -----------------------------------------------------------------------------
    def set_challenger(self, version: str) -> None:
        self.client.set_registered_model_alias(self.name, CHALLENGER, str(version))

    def champion_version(self) -> str | None:
        mv = self.alias(CHAMPION)
        return None if mv is None else str(mv.version)

    def promote(
        self,
        version: str,
        expected_champion: str | None,
        reason: str,
        who: str | None = None,
        decision: dict[str, Any] | None = None,
    ) -> LedgerEntry:
        """Move ``champion`` to ``version`` if it still points at ``expected_champion``."""
        if not reason.strip():
            raise RegistryError("a reason is required for every champion move")
        self.version(version)  # exists?
        with promotion_lock(self.settings) as lock:
            self.reconcile_ledger()
            return self._move(lock, version, expected_champion, reason, who, decision, "promote")

    def rollback(self, reason: str, who: str | None = None) -> LedgerEntry:
        """Point ``champion`` back at the version it replaced (from the ledger)."""
        if not reason.strip():
            raise RegistryError("a reason is required for every champion move")
        with promotion_lock(self.settings) as lock:
            self.reconcile_ledger()
            current = self.champion_version()
            return self._move(lock, self.rollback_target(), current, reason, who, None, "rollback")

    def manual_move(
        self,
        action: str,
        reason: str,
        version: str | None = None,
        who: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """A promotion or rollback asked for by a person (`pricing promote/rollback`, the
        ``pricing_promote`` DAG): resolve the target, then move under the lock unless ``dry_run``.

        Returns ``{action, from, to, reason, who, dry_run}``; raises `RegistryError` (unknown
        version or action, nothing to roll back to, no reason) or `PromotionConflict`."""
        if action not in ("promote", "rollback"):
            raise RegistryError(f"action must be 'promote' or 'rollback' (got {action!r})")
        if not reason.strip():
            raise RegistryError("a reason is required for every champion move")
        current = self.champion_version()
        if action == "rollback":
            target = self.rollback_target()
        elif version is None:
            raise RegistryError("promote needs a version: a number, or 'challenger'")
        else:
            target = str(self.resolve(version).version)
        plan: dict[str, Any] = {
            "action": action,
            "from": current,
            "to": target,
            "reason": reason,
            "who": who,
            "dry_run": dry_run,
        }
        if dry_run:
            return plan
        if action == "rollback":
            entry = self.rollback(reason, who=who)
        else:
            entry = self.promote(target, current, reason, who=who)
        return {**plan, "from": entry.from_version, "to": entry.to_version}

    def _move(
        self,
        lock: Lock,
        version: str,
        expected_champion: str | None,
        reason: str,
        who: str | None,
        decision: dict[str, Any] | None,
        action: str,
    ) -> LedgerEntry:
        # The caller holds the promotion lock: read, compare, set and log cannot interleave.
        current = self.champion_version()
        if current != expected_champion:
            raise PromotionConflict(
                f"champion is v{current} but the decision assumed v{expected_champion}; "
                "nothing changed — re-run the gate"
            )
        if current == str(version):
            raise RegistryError(f"v{version} is already the champion")
        lock.check()  # a lock lost since it was taken (a dropped connection) moves nothing
        self.client.set_registered_model_alias(self.name, CHAMPION, str(version))
        entry = LedgerEntry(
            when=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            who=who or os.environ.get("PRICING_ACTOR") or getpass.getuser(),
            action=action,
            from_version=current,
            to_version=str(version),
            reason=reason,
            decision=decision,
        )
        try:
            self.ledger.append(entry)
        except Exception as err:
            raise LedgerError(
                f"champion moved v{current} → v{version}, but its ledger line could not be "
                f"written ({err}); the next promotion records it, or run `pricing doctor --repair`"
            ) from err
        self._tag_promoted(str(version), entry.when)
        return entry

    def reconcile(self) -> LedgerEntry | None:
        """`reconcile_ledger` under the promotion lock."""
        with promotion_lock(self.settings):
            return self.reconcile_ledger()

    def reconcile_ledger(self, who: str = "pricing doctor") -> LedgerEntry | None:
        """Record a champion move the ledger misses (the alias moved, its line was never
        written): the ledger is made to say what serves; the champion itself is not moved.
        Call it under the promotion lock. Returns the entry written, or None."""
        current = self.champion_version()
        stack = champion_stack(self.ledger.entries())
        if current is None or (stack and stack[-1] == current):
            return None
        entry = LedgerEntry(
            when=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            who=who,
            action="reconcile",
            from_version=stack[-1] if stack else None,
            to_version=current,
            reason=(
                f"the champion alias points at v{current} but the ledger ends at "
                f"{'v' + stack[-1] if stack else 'no champion'}: a move whose ledger line was "
                "not written (an interrupted promotion, or a move outside pricing), recorded now"
            ),
        )
        self.ledger.append(entry)
        if "promoted_at" not in self.version(current).tags:  # the interrupted move's last step
            self._tag_promoted(current, entry.when)
        return entry

    def _tag_promoted(self, version: str, when: str) -> None:
        try:
            self.client.set_model_version_tag(self.name, version, "promoted_at", when)
        except MlflowException as err:  # the move is whole without it; `pricing doctor` adds it
            log.warning("v%s serves, but its promoted_at tag was not written: %s", version, err)

    def rollback_target(self) -> str:
        """The champion before the current one: the ledger replayed as a stack (a promotion
        pushes, a rollback pops), so repeated rollbacks walk back through earlier champions."""
        current = self.champion_version()
        if current is None:
            raise RegistryError("there is no champion to roll back")
        stack = champion_stack(self.ledger.entries())
        if not stack or stack[-1] != current:
            raise RegistryError(
                f"the ledger does not end with v{current} as champion (was the alias moved "
                "outside `pricing promote`?); promote the version you want explicitly"
            )
        if len(stack) < 2:
            raise RegistryError(
                f"v{current} was the first champion; there is nothing to roll back to"
            )
        return stack[-2]


def load_version_dir(local: Path) -> tuple[Agent, World]:
    """The agent and world of a downloaded (and verified) model directory: the manifest names
    the agent's file and its SHA-256, checked again before the file is read."""
    artifacts = local / "artifacts"
    manifest = json.loads((artifacts / "manifest.json").read_text())
    world = load_world(artifacts / "world.json")
    name = manifest.get("agent_file", "agent.zip")
    if name == "agent.npz":
        return load_planner(artifacts / name, world, manifest["agent_sha256"]), world
    return load_agent(artifacts / "agent.zip", manifest["agent_sha256"]), world


def load_registered(uri: str) -> tuple[Agent, World]:
    """The verified agent of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` and the world it
    was trained in, from the registry the settings name (`pipeline.model.evaluation.Registered`)."""
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, version = ref.split("@", 1)
    elif "/" in ref:
        name, version = ref.split("/", 1)
    else:
        raise RegistryError(f"{uri}: use models:/NAME@ALIAS or models:/NAME/VERSION")
    settings = Settings(model_name=name)
    registry = Registry(settings, open_lake(settings))
    try:
        loaded = registry.load(registry.resolve(version).version)
        return loaded.model, loaded.world
    except RegistryError as err:
        raise RegistryError(f"{uri}: {err} (tracking URI {settings.tracking_uri})") from None

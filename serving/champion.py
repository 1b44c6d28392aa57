"""The champion, safely: loaded through the registry's hash-verified path, followed without a
restart, and replaced by the rule-based pricer whenever there is none to serve.

`ChampionHolder.refresh` reads the ``champion`` alias; when it names another version, that version
is downloaded, its files checked against the hash the registry recorded, its network exported to
numpy (a planner: its table) and checked against the live world, and only then swapped in (one
assignment: a request sees the old champion or the new one, never half of each). A failed load
keeps what was served before and is counted; with nothing loaded, the fallback answers and
``reason`` says why.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from pipeline.model.agents import ServedPolicy, served_policy
from pipeline.release.registry import CHAMPION, Registry
from pipeline.settings import Settings
from sim.world import World

log = logging.getLogger("pricing.serve")


@dataclass(frozen=True)
class Champion:
    version: str
    label: str
    policy: ServedPolicy
    world: World


class ChampionHolder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: Champion | None = None
        self.reason = "not loaded yet"
        self.failed_loads = 0
        self._registry: Registry | None = None
        self._lock = threading.Lock()  # one refresh at a time

    def _open(self) -> Registry:
        if self._registry is None:
            from pipeline.data.lake import open_lake

            self._registry = Registry(self.settings, open_lake(self.settings))
        return self._registry

    def refresh(self) -> bool:
        """Follow the alias; True when the served champion changed. Never raises."""
        with self._lock:
            try:
                registry = self._open()
                mv = registry.alias(CHAMPION)
            except Exception as err:  # the registry is down: keep serving what is loaded
                self.reason = f"the registry did not answer ({err.__class__.__name__}: {err})"
                log.warning("champion poll failed: %s", self.reason)
                return False
            if mv is None:
                if self.current is None:
                    self.reason = (
                        f"{self.settings.model_name} has no @{CHAMPION} yet: run a night "
                        "(`pricing nightly`) that promotes one"
                    )
                return False
            version = str(mv.version)
            if self.current is not None and self.current.version == version:
                # (a failed reload of another version is over: the alias is back)
                self.reason = f"serving {self.current.label} (@{CHAMPION})"
                return False
            try:
                loaded = registry.load(version)
                policy = served_policy(loaded.model)
                champion = Champion(version, registry.label(version), policy, loaded.world)
            except Exception as err:
                self.failed_loads += 1
                self.reason = (
                    f"loading {self.settings.model_name} v{version} failed "
                    f"({err.__class__.__name__}: {err})"
                    + (f"; still serving v{self.current.version}" if self.current else "")
                )
                log.error("champion load failed: %s", self.reason)
                return False
            self.current = champion
            self.reason = f"serving {champion.label} (@{CHAMPION})"
            log.info("champion is now v%s", version)
            return True

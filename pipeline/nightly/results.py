"""What each step of the night returns: small typed results, JSON-able for Airflow's XCom.

A step's result says where its outputs went and what the next steps need (the refit's lineage,
the trained version); the outputs themselves live in the lake and the registry. `to_dict` gives
the JSON an XCom carries, and ``from_dict`` rebuilds the result in the next task.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self

from pipeline.errors import ExitCode, PricingError


class NightStopped(PricingError, RuntimeError):
    """A gate stopped the night. ``step`` names it; the message says why and what to do."""

    exit_code = ExitCode.STOPPED

    def __init__(self, step: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.details = details or {}


@dataclass(frozen=True)
class StepResult:
    """Base of the step results: a flat record of JSON values."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Validated(StepResult):
    feeds: list[str]  # the feeds the night reads
    validated: list[str]  # "<feed>/<date>" validated now (earlier days keep their report)


@dataclass(frozen=True)
class Featured(StepResult):
    features_uri: str
    rows: int


@dataclass(frozen=True)
class Refitted(StepResult):
    world_uri: str
    sim_params_sha256: str
    data_sha256: str
    mode: str  # "decisions" or "transactions": what the simulator was fitted from
    catalogue: str  # where the catalogue came from
    validation_report: str  # lineage of the models trained on this fit

    def lineage(self) -> dict[str, str]:
        """The tags every model version trained on this fit carries."""
        return {
            "data_sha256": self.data_sha256,
            "sim_params_sha256": self.sim_params_sha256,
            "validation_report": self.validation_report,
        }


@dataclass(frozen=True)
class Faithful(StepResult):
    passed: bool
    conversion_error: float | None
    deviance_ratio: float | None


@dataclass(frozen=True)
class Trained(StepResult):
    algo: str
    version: str | None  # None: skipped (``skipped`` says why)
    reused: bool  # registered by an earlier run of the same night
    run_id: str | None = None
    init: str = "scratch"  # or "champion:v<N>": the weights training started from
    skipped: str | None = None


@dataclass(frozen=True)
class Evaluated(StepResult):
    challenger: str
    challenger_label: str
    incumbent: str
    diff_mean: float
    diff_ci95: list[float]


@dataclass(frozen=True)
class Gated(StepResult):
    """The promotion gate's decision, as written to ``reports/gate/date=D/decision.json``."""

    promote: bool
    moved: bool
    reason: str
    checks: dict[str, dict[str, Any]]
    evidence: dict[str, Any]
    champion: str | None
    champion_label: str | None
    note: str | None = None


@dataclass(frozen=True)
class Stopped(StepResult):
    """What a step that stopped the night leaves in `NightResult.steps`."""

    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"stopped": True, "reason": self.reason, **self.details}

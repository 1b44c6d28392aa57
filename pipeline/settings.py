"""One settings object for the whole pipeline: environment variables with the ``PRICING_`` prefix,
or a ``.env`` file in the working directory. MLflow's own ``MLFLOW_TRACKING_URI`` is honoured.

Embedded defaults run on a laptop (SQLite MLflow and a local lake under ``./data``); production
sets ``PRICING_LAKE_URI=s3://bucket/prefix``, ``PRICING_S3_ENDPOINT_URL`` (MinIO) and
``MLFLOW_TRACKING_URI`` (the tracking server).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.contracts import ALGORITHMS, DEFAULT_ALGOS, EXPERIMENT_DESIGNS, TRAIN_INITS

if TYPE_CHECKING:
    from sim.served import Guardrails

# Values that .env.example and tutorials use: a secret set to one of them is refused.
PLACEHOLDERS = frozenset({"change-me", "changeme", "secret", "password", "token", "admin"})


class ServedAs(BaseSettings):
    """How the pricing service serves a policy (``PRICING_SERVE_*``): the A/B split,
    exploration and the guardrails every answer goes through. The service's settings extend
    these (`serving.config.ServeSettings`); the night evaluates its candidates through them
    (`sim.served.AsServed`), so that what is evaluated is what is served."""

    model_config = SettingsConfigDict(
        env_prefix="PRICING_SERVE_", env_file=".env", extra="ignore", frozen=True
    )

    # A/B split
    treatment_share: float = Field(
        0.05, ge=0.0, le=1.0, description="share of customers priced by the champion"
    )
    salt: str = Field("pricing-ab-1", min_length=1, description="salt of the arms' hashes")
    experiment: str = Field(
        "visitor",
        description="the A/B design: visitor (customers split by hash; valid only where stock "
        "does not bind), sku (each SKU in one arm, stratified by category) or switchback (every "
        "SKU alternates arms by blocks of periods); see serving/arms.py",
    )
    switchback_hours: int | None = Field(
        None, ge=1, description="a switchback block, in hours; default: a selling season"
    )
    washout_hours: int = Field(
        0, ge=0, description="switchback: hours after an arm change left out of the analysis"
    )
    # exploration
    epsilon: float = Field(
        0.05, ge=0.0, le=1.0, description="treatment: chance of a uniformly random price move"
    )
    epsilon_min: float = Field(0.01, ge=0.0, le=1.0, description="floor of the decaying epsilon")
    epsilon_halflife_hours: float = Field(
        168.0, gt=0.0, description="epsilon halves every this many hours of service"
    )
    control_epsilon: float = Field(
        0.02, ge=0.0, le=1.0, description="control: exploration of the rule-based pricer"
    )
    explore_skus: tuple[str, ...] = Field(
        (), description="SKU ids or category prefixes ('backpack-') that may explore; empty: all"
    )
    # guardrails
    margin_floor: float = Field(
        0.05, ge=0.0, le=1.0, description="never price below unit cost x (1 + margin_floor)"
    )
    max_step_levels: int = Field(
        2, ge=0, description="largest price move per decision period, in ladder steps"
    )
    min_price_ratio: float = Field(0.0, ge=0.0, description="lowest price / reference price")
    max_price_ratio: float = Field(10.0, gt=0.0, description="highest price / reference price")
    # the season clock
    season_start: dt.datetime | None = Field(
        None,
        description="start of a selling season (UTC); seasons repeat every horizon; default: "
        "midnight of the lake's first catalogue snapshot",
    )

    @model_validator(mode="after")
    def _check_served(self) -> ServedAs:
        if self.min_price_ratio >= self.max_price_ratio:
            raise ValueError(
                "PRICING_SERVE_MIN_PRICE_RATIO must be below PRICING_SERVE_MAX_PRICE_RATIO"
            )
        if self.epsilon_min > self.epsilon:
            raise ValueError("PRICING_SERVE_EPSILON_MIN must not exceed PRICING_SERVE_EPSILON")
        if self.experiment not in EXPERIMENT_DESIGNS:
            raise ValueError(
                f"PRICING_SERVE_EXPERIMENT: {self.experiment!r} is not one of "
                f"{', '.join(EXPERIMENT_DESIGNS)}"
            )
        if self.switchback_hours and self.washout_hours >= self.switchback_hours:
            raise ValueError(
                "PRICING_SERVE_WASHOUT_HOURS must be below PRICING_SERVE_SWITCHBACK_HOURS"
            )
        return self

    def explores(self, sku: str) -> bool:
        """Whether ``sku`` may explore (PRICING_SERVE_EXPLORE_SKUS: ids or id prefixes)."""
        allowed = self.explore_skus
        return not allowed or any(sku == a or sku.startswith(a) for a in allowed)

    @property
    def guardrails(self) -> Guardrails:
        from sim.served import Guardrails  # numpy: not at import (DAG files read settings)

        return Guardrails(
            self.max_step_levels, self.min_price_ratio, self.max_price_ratio, self.margin_floor
        )


class Settings(BaseSettings):
    """Every knob of the nightly loop. Invalid values fail at construction, naming the variable."""

    model_config = SettingsConfigDict(
        env_prefix="PRICING_", env_file=".env", extra="ignore", frozen=True
    )

    data_dir: Path = Field(Path("data"), description="root of the embedded defaults")
    lake_uri: str = Field("", description="local path or s3://bucket/prefix; default data_dir/lake")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto)")
    s3_max_attempts: int = Field(
        5, ge=1, le=20, description="attempts per S3 request (botocore's retries, with back-off)"
    )
    s3_timeout_s: float = Field(10.0, gt=0, description="connect and read timeout of S3 requests")
    world_file: Path | None = Field(None, description="catalogue and base world; default bundled")
    model_name: str = Field("pricing-agent", min_length=1, description="registered model name")
    mlflow_tracking_uri: str = Field("", description="default: MLFLOW_TRACKING_URI or SQLite")
    experiment: str = Field("pricing-nightly", min_length=1)

    # training
    algos: tuple[str, ...] = Field(DEFAULT_ALGOS, description="algorithms trained each night")
    ppo_timesteps: int = Field(5_000_000, ge=1, description="PPO budget in SKU-steps")
    dqn_timesteps: int = Field(300_000, ge=1, description="DQN budget in SKU-steps")
    train_seed: int = 0
    train_init: str = Field(
        "scratch",
        description="model-free agents start from random weights (scratch), from the "
        "champion's (champion: fine-tuning on the latest refit, when the champion is the same "
        "algorithm and fits the world), or imitating tonight's exact plan (planner: PPO only, "
        "where the solver can run)",
    )
    finetune_fraction: float = Field(
        0.3,
        gt=0,
        le=1,
        description="a warm-started night's budget (champion or planner), as a fraction of scratch's",
    )
    n_envs: int = Field(64, ge=1)

    # data windows
    train_days: int = Field(
        28, ge=2, description="days of logs in the window, held-out days included"
    )
    holdout_days: int = Field(
        7,
        ge=1,
        description="latest days held out for the fidelity gate (a week: fewer days make "
        "the gate noisy enough to stop correct worlds)",
    )

    # clusters of SKUs, one agent each (pipeline.data.clusters)
    skus_per_cluster: int = Field(
        500, ge=1, le=100_000, description="target SKUs in a cluster (a category is cut to it)"
    )
    cluster_days: int = Field(
        14, ge=1, le=365, description="days of features the clustering measures demand on"
    )
    night_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="cluster nights `pricing nightly --clusters` runs side by side, each in a "
        "process of its own (the DAG's cluster tasks go to the Celery workers instead)",
    )
    cluster: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,79}$",
        description="the cluster a night prices (set by the fan-out, see for_cluster)",
    )

    # which SKUs a transactions-only (POS) night prices: the rest keep their shelf price
    pos_min_units_per_day: float = Field(
        0.5,
        ge=0,
        description="a POS SKU is priced when it sells at least this many units a day on "
        "average (thinner ones: mostly zeros, no demand curve can be fitted or checked)",
    )
    pos_max_skus: int | None = Field(
        None, ge=1, description="at most this many POS SKUs priced, the highest-volume first"
    )
    pos_holidays: str | None = Field(
        None,
        description="country (ISO 3166 code: US, GB, DE, ...) whose public holidays a POS refit "
        "leaves out of its estimates and the fidelity gate expects at their own traffic",
    )

    # fidelity gate
    fidelity_max_conversion_error: float = Field(
        0.03, gt=0, description="max abs error of conversion by price bucket (weighted mean)"
    )
    fidelity_max_deviance_ratio: float = Field(
        1.75,
        gt=0,
        description="max held-out Poisson deviance of daily units per SKU over the deviance "
        "expected if the refit world were exact (1.0 = as good as sampling noise allows)",
    )

    # evaluation and promotion gate
    eval_episodes: int = Field(300, ge=10)
    eval_seed: int = 12345
    bootstrap_samples: int = Field(2000, ge=100)
    promotion_margin: float = Field(
        0.0, ge=0, description="required lower CI bound of (candidate - champion) profit/episode"
    )
    margin_floor: float = Field(
        0.0, description="minimum (revenue - cost) / revenue of the candidate in evaluation"
    )
    max_price_changes_per_day: float = Field(
        12.0, gt=0, description="guardrail on the candidate's price-change rate"
    )
    min_ope_support: float = Field(
        30.0, ge=0, description="effective sample size under which off-policy estimates are ignored"
    )
    admin_token: str | None = Field(None, description="required by manual promote/rollback if set")
    lock_uri: str = Field(
        "",
        description="PostgreSQL URL whose advisory lock serialises champion moves across hosts; "
        "default: the tracking URI when it is PostgreSQL, else a file lock under data_dir",
    )

    # the pricing service, as the rollout and the replay call it
    service_url: str = Field(
        "http://127.0.0.1:8000", description="the running pricing service (`pricing serve`)"
    )
    rollout_min_visitors: int = Field(
        500, ge=1, description="visitors per arm in a day under which the rollout holds its share"
    )

    # monitoring (the hourly monitor DAG)
    drift_psi_threshold: float = Field(
        0.2, gt=0, description="PSI of any monitored feature above this is drift"
    )
    monitor_min_rows: int = Field(
        500, ge=1, description="prices shown in a window below which drift is not judged"
    )
    retrain_on_drift: bool = Field(
        True, description="drift emits the pricing://drift asset event that starts a retrain"
    )
    pushgateway_url: str = Field(
        "", description="Prometheus Pushgateway the monitor pushes to (empty: not pushed)"
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.admin_token and self.admin_token.strip().lower() in PLACEHOLDERS:
            raise ValueError(
                "PRICING_ADMIN_TOKEN is a placeholder, which anyone could guess; generate one: "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if self.holdout_days >= self.train_days:
            raise ValueError(
                f"PRICING_HOLDOUT_DAYS ({self.holdout_days}) must be below PRICING_TRAIN_DAYS "
                f"({self.train_days}): the refit needs days of its own"
            )
        if self.lock_uri and not self.lock_uri.startswith("postgresql"):
            raise ValueError(
                f"PRICING_LOCK_URI must be a PostgreSQL URL such as "
                f"postgresql+psycopg2://user@host:5432/db (got {self.lock_uri.split(':', 1)[0]}://…)"
            )
        if self.pos_holidays:
            import holidays

            if self.pos_holidays not in holidays.list_supported_countries():
                raise ValueError(
                    f"PRICING_POS_HOLIDAYS: {self.pos_holidays!r} is not a country the holidays "
                    "package knows; use an ISO 3166 code such as US, GB or DE"
                )
        if self.train_init not in TRAIN_INITS:
            raise ValueError(
                f"PRICING_TRAIN_INIT: {self.train_init!r} is not one of {', '.join(TRAIN_INITS)}"
            )
        bad = [a for a in self.algos if a not in ALGORITHMS]
        if bad:
            raise ValueError(
                f"PRICING_ALGOS: unknown algorithm {bad[0]!r}; use {' and/or '.join(ALGORITHMS)}"
            )
        return self

    @property
    def lake(self) -> str:
        return self.lake_uri or str(self.data_dir / "lake")

    def for_cluster(self, cluster: str) -> Settings:
        """The settings of one cluster's night: its own registered model
        (``<model_name>--<cluster>``, so its own champion, lock and ledger) and lake view."""
        if self.cluster is not None:
            raise ValueError(f"these settings are already cluster {self.cluster!r}'s")
        data = self.model_dump()
        data.update(cluster=cluster, model_name=f"{self.model_name}--{cluster}")
        return type(self).model_validate(data)

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return (self.data_dir / "mlartifacts").resolve()

    @property
    def runtime_dir(self) -> Path:
        """Locks and the promotion ledger's local copy live here."""
        return self.data_dir / "run"

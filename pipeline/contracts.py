"""The names stages share: where things live in the lake, the Airflow assets, pool and XCom keys,
and the night's step order. Each is defined here once and imported everywhere else.

Standard library only: the DAG files import this module when Airflow parses them, and must stay
light (`bench/dag_parse.py`). The feeds' columns are contracts too; they live beside the
simulator that writes synthetic logs (`sim.feeds`).
"""

from __future__ import annotations

import datetime as dt

# ---------------------------------------------------------------------------------------------
# the lake: {lake}/{zone}/{feed}/date=YYYY-MM-DD/ (part-*.parquet + _manifest.json), and these
# ---------------------------------------------------------------------------------------------
ZONES = ("raw", "quarantine", "features", "reports")


REPORTS_PREFIX = "reports/"


def cluster_reports_prefix(cluster: str) -> str:
    """Where one cluster's night keeps what others keep under ``reports/`` (its own reports,
    fitted world and ledger): ``reports/cluster=<cluster>/``."""
    return f"{REPORTS_PREFIX}cluster={cluster}/"


def report_path(kind: str, date: dt.date, name: str) -> str:
    """``reports/<kind>/date=D/<name>``: what a step wrote about night ``D``."""
    return f"reports/{kind}/date={date.isoformat()}/{name}"


# what each step of night D writes under reports/
def validation_report_path(feed: str, date: dt.date) -> str:
    return report_path(f"validation/{feed}", date, "validation.json")


def fitted_world_path(date: dt.date) -> str:
    return report_path("sim", date, "world.json")


def fit_report_path(date: dt.date) -> str:
    return report_path("sim", date, "fit_report.json")


def fidelity_report_path(date: dt.date) -> str:
    return report_path("sim", date, "fidelity.json")


def evaluation_report_path(date: dt.date) -> str:
    return report_path("evaluation", date, "report.json")


def gate_decision_path(date: dt.date) -> str:
    return report_path("gate", date, "decision.json")


def parity_report_path(date: dt.date) -> str:
    """The night's served parity of day ``date`` (`pipeline.release.parity`)."""
    return report_path("parity", date, "parity.json")


LEDGER_PATH = "reports/promotions/ledger.jsonl"  # every champion move, one JSON line each
ROLLOUT_LEDGER_PATH = "reports/rollout/ledger.jsonl"  # every move of the A/B treatment share
ROLLOUT_STAGES = (0.05, 0.10, 0.25, 0.50)  # the treatment shares a rollout steps through
REPLAY_SHELF_PATH = "reports/replay/shelf.json"  # the world's state a replay leaves for the next

MONITOR_PREFIX = "reports/monitor"
MONITOR_WATERMARK = f"{MONITOR_PREFIX}/watermark.json"  # end of the last published window

MAX_PRICE_FACTOR = 20.0
"""A price more than this many times its reference (or its SKU's median that day) is a data error:
the lake's validation stops the day on it; `pricing ingest` rejects the line with its reason."""

CATALOGUE_PREFIX = "catalogue/"
CATALOGUE_NAME = "catalogue.json"
CLUSTERS_PREFIX = "clusters/"  # clusters/date=D/clusters.json: the night's clusters of SKUs
CLUSTERS_NAME = "clusters.json"
# slices/<feed>/date=D/: each cluster's rows of a raw day, cut once a night (pipeline.data.slices)
SLICES_PREFIX = "slices/"


def catalogue_path(date: dt.date) -> str:
    """The catalogue snapshot in force from ``date`` on."""
    return f"{CATALOGUE_PREFIX}date={date.isoformat()}/{CATALOGUE_NAME}"


def ingest_quarantine(stem: str) -> str:
    """Where `pricing ingest` keeps a source file's rejected rows and its summary."""
    return f"quarantine/ingest/{stem}/"


# ---------------------------------------------------------------------------------------------
# Airflow
# ---------------------------------------------------------------------------------------------
PROMOTION_POOL = "pricing_promotion"  # one slot: champion moves, night or manual, one at a time
PROMOTION_POOL_DOC = "champion moves: pricing_promote and the nightly gate"

FEATURES_ASSET = "pricing://features"
CANDIDATE_MODEL_ASSET = "pricing://candidate-model"
CHAMPION_ASSET = "pricing://champion"
DRIFT_ASSET = "pricing://drift"  # the monitor's drift alarm; it starts a night
CHAMPION_MOVES_ALIAS = "pricing-champion-moves"  # events on the champion only when it moves
DRIFT_ALIAS = "pricing-drift-events"

STOP_XCOM_KEY = "night_stopped"  # a gated step's record of why it stopped the night
STOP_TASK = "night_stopped"  # the task that repeats that record (its return value)

# ---------------------------------------------------------------------------------------------
# the night: its steps in order (`pipeline.nightly.run` and the DAG both read this)
# ---------------------------------------------------------------------------------------------
NIGHT_STEPS = ("validate", "features", "refit", "fidelity", "train", "evaluate", "gate")
#: with clusters (PRICING_CLUSTERS): the catalogue's steps, then each cluster's
CATALOGUE_STEPS = ("validate", "features")
CLUSTER_STEPS = ("refit", "fidelity", "train", "evaluate", "gate")
GATED_STEPS = ("validate", "features", "refit", "fidelity")  # may stop the night

# what a night can train: the exact plan of the refit world (`pipeline.model.planner`, where the
# solver can run) and the model-free agents of `pipeline.model.algos.ALGOS`
ALGORITHMS = ("planner", "ppo", "dqn")
# trained unless PRICING_ALGOS says otherwise; DQN stays below the best fixed price (README)
DEFAULT_ALGOS = ("planner", "ppo")
TRAIN_INITS = (
    "scratch",
    "champion",
)  # a model-free night starts from random weights or the champion

# ---------------------------------------------------------------------------------------------
# MLflow
# ---------------------------------------------------------------------------------------------
MONITOR_EXPERIMENT = "pricing-monitor"

# The A/B designs the pricing service can run (PRICING_SERVE_EXPERIMENT; serving.arms) and each
# one's unit of analysis (pipeline.ops.experiment).
EXPERIMENT_DESIGNS = ("visitor", "sku", "switchback")

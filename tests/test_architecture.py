"""The rules that keep the house livable (docs/architecture.md), checked on the source itself.

- Each contract is one object, and every stage uses that object, not a copy.
- sim/ knows no MLflow, Airflow or S3; pipeline/ knows no Airflow (but the module that runs it);
  a DAG file imports the pipeline only inside its tasks, but for the stdlib-only contracts.
- No module over 500 lines, no function over 80.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, runs at import) for every import in ``path``: not inside a function, nor under
    ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    deferred = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        or (isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    ]
    nested = {id(sub) for node in deferred for sub in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) not in nested) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) not in nested))
    return found


def _sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _root(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("path", _sources("sim"), ids=lambda p: str(p.relative_to(REPO)))
def test_sim_knows_no_mlflow_airflow_s3_or_pipeline(path: Path) -> None:
    banned = {"mlflow", "airflow", "boto3", "botocore", "pipeline", "great_expectations"}
    assert not {_root(m) for m, _ in _imports(path)} & banned


@pytest.mark.parametrize("path", _sources("pipeline"), ids=lambda p: str(p.relative_to(REPO)))
def test_the_pipeline_does_not_import_the_service(path: Path) -> None:
    """The service sits above the pipeline; `pricing serve` starts it by import string and only
    checks its settings (inside the command)."""
    for module, at_import in _imports(path):
        if _root(module) == "serving":
            assert path.relative_to(REPO).as_posix() == "pipeline/cli/serve.py", module
            assert module == "serving.config" and not at_import


@pytest.mark.parametrize("path", _sources("serving"), ids=lambda p: str(p.relative_to(REPO)))
def test_the_service_knows_no_airflow_nor_data_validation(path: Path) -> None:
    banned = {"airflow", "great_expectations"}
    assert not {_root(m) for m, at_import in _imports(path) if at_import} & banned


@pytest.mark.parametrize("path", _sources("pipeline"), ids=lambda p: str(p.relative_to(REPO)))
def test_pipeline_knows_no_airflow_but_where_it_runs_it(path: Path) -> None:
    if path.relative_to(REPO).as_posix() == "pipeline/orchestration/airflow_run.py":
        return  # runs a DAG in-process (`pricing nightly --airflow`): imports Airflow lazily
    assert "airflow" not in {_root(m) for m, _ in _imports(path)}


@pytest.mark.parametrize("path", sorted((REPO / "dags").glob("*.py")), ids=lambda p: p.name)
def test_dags_import_the_pipeline_only_inside_tasks(path: Path) -> None:
    top = [m for m, module_level in _imports(path) if module_level]
    heavy = [m for m in top if _root(m) in ("pipeline", "sim") and m != "pipeline.contracts"]
    assert heavy == [], f"{path.name} imports {heavy} at parse time"


def test_contracts_is_standard_library_only() -> None:
    import sys

    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    assert {_root(m) for m, _ in _imports(REPO / "pipeline" / "contracts.py")} <= stdlib


@pytest.mark.parametrize(
    "path",
    [*_sources("pipeline"), *_sources("sim"), *_sources("serving")],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_no_module_over_500_lines_or_function_over_80(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= 500, f"{path} has {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= 80, f"{path}:{node.lineno} {node.name} has {length} lines"


# ------------------------------------------------------------------------------ one contract each
def test_every_stage_reads_the_feed_contract_objects() -> None:
    """The generator, the validation suites, the features, the refit, OPE, the monitor and ingest
    use the contract objects of sim.feeds themselves (no copies that could drift)."""
    from pipeline.data import features, ingest, suites
    from pipeline.model import logged
    from pipeline.ops import monitor
    from sim import feeds, history
    from sim.fit import panel

    assert history.DECISION_COLUMNS is feeds.DECISION_COLUMNS
    assert suites.CONTRACTS["decisions"] is feeds.DECISIONS
    assert suites.CONTRACTS["transactions"] is feeds.TRANSACTIONS
    assert suites.CONTRACTS["features"] is features.FEATURES
    assert ingest.TRANSACTION_COLUMNS is feeds.TRANSACTION_COLUMNS
    assert features.CARTED is feeds.CARTED and panel.OUTCOMES is feeds.OUTCOMES
    # the column subsets a stage reads are checked against the contract when it is imported
    for subset in (logged.REQUIRED_DECISION_COLUMNS, monitor.NEEDED_COLUMNS, panel.DECISION_FIELDS):
        assert set(subset) <= set(feeds.DECISIONS.names)
    with pytest.raises(KeyError, match="has no column"):
        feeds.DECISIONS.subset("price")


def test_the_generated_feeds_follow_their_contracts(tiny_world: object) -> None:
    import datetime as dt

    from sim.feeds import DECISIONS, TRANSACTIONS
    from sim.history import generate_history

    (day,) = generate_history(tiny_world, 1, 0, dt.date(2026, 1, 5))  # type: ignore[arg-type]
    for frame, feed in ((day.decisions, DECISIONS), (day.transactions, TRANSACTIONS)):
        assert tuple(frame.columns) == feed.names
        assert not frame[feed.required].isna().any().any()


def test_one_name_for_each_shared_thing() -> None:
    """Paths, assets, pool and step order come from pipeline.contracts wherever they are used."""
    from pipeline import contracts
    from pipeline.model.algos import ALGOS
    from pipeline.model.planner import PLANNER
    from pipeline.orchestration import airflow_run
    from pipeline.release import ledger

    assert (PLANNER, *ALGOS) == contracts.ALGORITHMS
    assert airflow_run.PROMOTION_POOL is contracts.PROMOTION_POOL
    assert ledger.LEDGER_PATH is contracts.LEDGER_PATH
    for path in itertools.chain((REPO / "pipeline").rglob("*.py"), (REPO / "dags").glob("*.py")):
        if path.name == "contracts.py":
            continue
        text = path.read_text()
        for literal in ('"pricing_promotion"', '"pricing://', '"reports/', '"night_stopped"'):
            assert literal not in text, f"{path.relative_to(REPO)} spells out {literal}"


# Lower layers never import higher ones (function-local imports included).
LAYERS = {
    "pipeline.contracts": 0,
    "pipeline.errors": 0,
    "pipeline.settings": 1,
    "pipeline.tracking": 2,
    "pipeline.data": 3,
    "pipeline.model": 4,
    "pipeline.release": 5,
    "pipeline.ops": 6,
    "pipeline.nightly": 6,
    "pipeline.orchestration": 7,
    "pipeline.cli": 8,
}


def _layer(module: str) -> int | None:
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


@pytest.mark.parametrize("path", _sources("pipeline"), ids=lambda p: str(p.relative_to(REPO)))
def test_a_layer_imports_only_layers_below_it(path: Path) -> None:
    module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    own = _layer(module)
    if own is None:
        return  # pipeline/__init__.py
    for imported, _ in _imports(path):
        other = _layer(imported)
        if other is None:
            continue
        same_package = imported.split(".")[:2] == module.split(".")[:2]
        assert other < own or (other == own and same_package), f"{module} imports {imported}"


def test_the_command_line_starts_light() -> None:
    """`pricing --help` and a mistyped option answer at once: the CLI imports no heavy library
    until a command needs it."""
    import subprocess
    import sys

    heavy = ("mlflow", "torch", "stable_baselines3", "great_expectations", "airflow", "pandas")
    code = f"import sys, pipeline.cli; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

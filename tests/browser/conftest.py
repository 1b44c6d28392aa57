"""Browser tests of the Airflow UI: Debian's Chromium against the stack `make up` starts.

`pricing up` runs as a subprocess over a temporary data dir (Airflow standalone with a SQLite
metadata DB in ``<data>/airflow``, the repo's ``dags/``, SimpleAuthManager; an MLflow server);
Airflow is never imported in the pytest process, where the in-process DAG tests set up their own
home. Screenshots land in ``test-artifacts/screenshots/`` at the repo root, replaced on every run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pipeline.orchestration.procs import ProcessTree

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
APT_INSTALL = (
    "apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver"
)
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    # The test machines have no internet: without these Chromium keeps opening connections
    # to Google's services, which the closed network refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
)

UI_PORT = 18090
MLFLOW_PORT = 15090
SERVE_PORT = 18091
UI_USER = "admin"
UI_PASSWORD = "admin-password"
DAG_IDS = ("pricing_nightly", "pricing_promote", "pricing_monitor")
PRICING = Path(sys.executable).with_name("pricing")
STOPPED_NIGHT = dt.date(2026, 1, 10)
STARTUP_DEADLINE_S = 300.0  # Airflow standalone and MLflow on a loaded 2-core machine
WAIT_S = 90.0  # explicit waits in the browser

T = TypeVar("T")


# --------------------------------------------------------------------------- Chromium


@pytest.fixture(scope="session")
def chromedriver() -> Path:
    """Debian's Chromium and ChromeDriver, installed with apt-get when missing (as root)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return CHROMEDRIVER
    if os.geteuid() != 0:
        pytest.fail(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing; install them as root with:\n  {APT_INSTALL}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["sh", "-c", APT_INSTALL], env=env, capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0 or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            f"`{APT_INSTALL}` failed (exit code {done.returncode}):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return CHROMEDRIVER


# --------------------------------------------------------------------------- Airflow


@dataclass(frozen=True)
class AirflowUI:
    url: str
    home: Path
    mlflow_url: str
    log: Path  # what `pricing up` printed

    @property
    def db(self) -> Path:
        return self.home / "airflow.db"

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the metadata DB directly (SQLite, read-only), without importing Airflow."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return conn.execute(sql, args).fetchall()


def _tail(path: Path, chars: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as err:
        return f"({path} unreadable: {err})"


def _port_is_free(port: int) -> bool:
    """Nothing listens on the port (connections in TIME_WAIT from a previous run don't count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _dags_parsed(home: Path) -> bool:
    db = home / "airflow.db"
    if not db.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT dag_id FROM dag").fetchall()
    except sqlite3.Error:
        return False
    return {r[0] for r in rows} >= set(DAG_IDS)


STOP_DEADLINE_S = 60.0  # `pricing up` promises to stop within its grace (10 s) + 5 s


def stack_processes(data: Path) -> list[Any]:
    """Live processes of the stack over ``data``: those that carry its PRICING_DATA_DIR, and
    whatever listens on its ports (a server that rewrites its title may overwrite its
    environment)."""
    import psutil

    found = {}
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get("PRICING_DATA_DIR") == str(data.resolve()):
                found[proc.pid] = proc
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in (
            UI_PORT,
            MLFLOW_PORT,
            SERVE_PORT,
        ):
            with contextlib.suppress(psutil.Error, TypeError):
                found.setdefault(conn.pid, psutil.Process(conn.pid))
    return list(found.values())


def stop_pricing_up(proc: subprocess.Popen[bytes], data: Path, log: Path) -> None:
    """Ctrl-C for `pricing up`; fails if it is not gone, with everything it started, in time.

    Whatever happens, nothing is left running: a stuck `pricing up` is killed (its watchdog then
    stops the stack), and whatever still carries the stack's data dir after that is killed too.
    """
    problems = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        problems.append(f"`pricing up` did not stop within {STOP_DEADLINE_S:.0f} s of Ctrl-C")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while (left := stack_processes(data)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        problems.append(f"{len(left)} process(es) of the stack outlived `pricing up`")
        for p in left:
            with contextlib.suppress(Exception):
                p.kill()
    if problems:
        pytest.fail("; ".join(problems) + f":\n{_tail(log)}")


def stopped_night(data: Path, env: dict[str, str]) -> None:
    """A night whose raw decisions fail validation, run through Airflow in the stack's metadata
    DB before the UI starts (`pricing nightly --airflow`: exit 2, the reason and the task grid
    printed, the partition in quarantine), for the UI to explain."""
    from pipeline.data.lake import Lake
    from sim.history import generate_history
    from sim.world import World
    from tests.conftest import tiny_world_dict
    from tests.dags.test_nightly_dag import TINY

    world = data / "world.json"
    world.write_text(json.dumps(tiny_world_dict()))
    lake = Lake.from_uri(str(data / "lake"))
    for day in generate_history(
        World.model_validate(tiny_world_dict()), 6, 3, STOPPED_NIGHT - dt.timedelta(days=5)
    ):
        lake.write_partition("raw", "decisions", day.date, day.decisions)
        lake.write_partition("raw", "transactions", day.date, day.transactions)
    bad = lake.read_partition("raw", "decisions", STOPPED_NIGHT)
    bad.loc[0, "price_shown"] = -5.0
    lake.write_partition("raw", "decisions", STOPPED_NIGHT, bad)
    night_env = {**env, **TINY, "PRICING_WORLD_FILE": str(world)}
    cmd = [
        str(PRICING),
        "nightly",
        "--date",
        str(STOPPED_NIGHT),
        "--data-dir",
        str(data),
        "--airflow",
    ]
    done = subprocess.run(cmd, env=night_env, cwd=data, capture_output=True, text=True, timeout=600)
    tail = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if done.returncode != 2:
        pytest.fail(f"the stopped night exited {done.returncode}, not 2:\n{tail}")
    # the command line says it too: the step, the grid, and the partition in quarantine
    assert f"night {STOPPED_NIGHT} stopped at validate" in done.stderr, tail
    assert "upstream_failed" in done.stdout, tail
    assert lake.has_partition("quarantine", "decisions", STOPPED_NIGHT)


# Package scope: the stack stops once the browser tests are done, not at the end of the session.
@pytest.fixture(scope="package")
def airflow_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowUI]:
    """`pricing up` (what `make up` runs) over a fresh data dir: Airflow standalone on
    127.0.0.1:18090, MLflow on :15090 and the pricing service on :18091, with the admin password
    set in advance."""
    for port in (UI_PORT, MLFLOW_PORT, SERVE_PORT):
        if not _port_is_free(port):
            pytest.fail(f"port {port} is in use: stop whatever listens there and run again")
    data = tmp_path_factory.mktemp("pricing-up")
    home = data / "airflow"
    home.mkdir()
    # `pricing up` keeps the password it finds in Airflow's password file
    passwords = home / "simple_auth_manager_passwords.json.generated"
    passwords.write_text(json.dumps({UI_USER: UI_PASSWORD}))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PRICING_", "MLFLOW"))
    }
    env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    # the DAG files do not change during the tests: parse them once, not every 30 s
    env.update(
        {
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        }
    )
    stopped_night(data, env)
    log = data / "up.log"
    cmd = [
        str(PRICING),
        "up",
        "--data-dir",
        str(data),
        "--airflow-port",
        str(UI_PORT),
        "--mlflow-port",
        str(MLFLOW_PORT),
        "--serve-port",
        str(SERVE_PORT),
    ]
    # In a process tree of the test's: should pytest be killed, its watchdog stops `pricing up`
    # (which stops the stack; its own watchdog does if it cannot).
    tree = ProcessTree(grace_s=STOP_DEADLINE_S)
    proc = tree.spawn(cmd, env, log, cwd=data)
    ui = AirflowUI(f"http://127.0.0.1:{UI_PORT}", home, f"http://127.0.0.1:{MLFLOW_PORT}", log)
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while "running on localhost" not in _tail(log) or not _dags_parsed(home):
            if proc.poll() is not None:
                pytest.fail(f"`pricing up` exited ({proc.returncode}):\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"`pricing up` not ready (URLs printed, DAGs parsed) after "
                    f"{STARTUP_DEADLINE_S:.0f} s:\n{_tail(log)}\n{_tail(home / 'standalone.log')}"
                )
            time.sleep(1)
        yield ui
    finally:
        try:
            stop_pricing_up(proc, data, log)
        finally:
            tree.stop()
    assert all(map(_port_is_free, (UI_PORT, MLFLOW_PORT, SERVE_PORT))), "servers left running"


@pytest.fixture(scope="package")
def browser_tree() -> Iterator[ProcessTree]:
    """The browsers' process tree: ChromeDriver and Chromium never outlive the tests."""
    with ProcessTree(grace_s=5) as tree:
        yield tree


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """``test-artifacts/screenshots/``, emptied of the previous run's screenshots and pages."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in [*SCREENSHOTS.glob("*.png"), *SCREENSHOTS.glob("*.html")]:
        old.unlink()
    return SCREENSHOTS


class Browser:
    """A Chrome WebDriver with explicit waits that leave a screenshot and the page on failure."""

    def __init__(self, driver: Any, base_url: str, shots: Path) -> None:
        self.driver = driver
        self.base_url = base_url
        self.shots = shots

    def open(self, path: str) -> None:
        self.driver.get(f"{self.base_url}{path}")

    def screenshot(self, name: str) -> Path:
        path = self.shots / name
        assert self.driver.save_screenshot(str(path)), f"no screenshot written to {path}"
        print(f"screenshot: {path}")
        return path

    def wait(self, name: str, condition: Callable[[Any], T], timeout: float = WAIT_S) -> T:
        """``WebDriverWait(...).until(condition)``; on a timeout saves ``failure-<name>.png`` and
        ``failure-<name>.html`` before re-raising."""
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
            TimeoutException,
        )
        from selenium.webdriver.support.wait import WebDriverWait

        # React re-renders replace elements under the finger: retry instead of failing.
        ignored = (NoSuchElementException, StaleElementReferenceException)
        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.25, ignored_exceptions=ignored)
        try:
            return wait.until(condition, message=f"waiting for {name}")
        except TimeoutException:
            self.save_failure(name)
            raise

    def save_failure(self, name: str) -> None:
        png, html = self.shots / f"failure-{name}.png", self.shots / f"failure-{name}.html"
        try:
            self.driver.save_screenshot(str(png))
            html.write_text(self.driver.page_source)
            print(f"failure artifacts: {png} {html}")
        except Exception as err:  # the browser may be gone; the original error matters more
            print(f"could not save the failure artifacts for {name}: {err}")


@pytest.fixture
def browser(
    browser_tree: ProcessTree,
    chromedriver: Path,
    airflow_ui: AirflowUI,
    screenshots: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Browser]:
    """Headless Debian Chromium with a fresh profile; never downloads a driver or a browser."""
    # The driver path is explicit, so Selenium Manager is skipped; offline, should it ever run.
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # ChromeDriver and Chromium carry the stack's tag: they stop with it if pytest is killed
    service = Service(
        str(chromedriver),
        log_output=str(tmp_path / "chromedriver.log"),
        env=browser_tree.tagged_env(os.environ),
    )
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield Browser(driver, airflow_ui.url, screenshots)
    finally:
        driver.quit()

"""Browser tests of the Airflow UI: Debian's Chromium, and an Airflow of its own serving the DAGs.

Airflow runs as subprocesses with an explicit environment (a temporary ``AIRFLOW_HOME``, a SQLite
metadata DB, the repo's ``dags/``, SimpleAuthManager with a known user); it is never imported in the
pytest process, where the in-process DAG tests set up their own home. Screenshots land in
``test-artifacts/screenshots/`` at the repo root, replaced on every run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

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
UI_USER = "admin"
UI_PASSWORD = "admin"
STARTUP_DEADLINE_S = 240.0  # api-server start on a loaded 2-core machine
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

    @property
    def db(self) -> Path:
        return self.home / "airflow.db"

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the metadata DB directly (SQLite, read-only), without importing Airflow."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return conn.execute(sql, args).fetchall()


def airflow_env(home: Path) -> dict[str, str]:
    """The environment of the Airflow subprocesses: the caller's, minus any Airflow settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({UI_USER: UI_PASSWORD}) + "\n")
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{UI_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(UI_PORT),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _tail(path: Path, chars: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as err:
        return f"({path} unreadable: {err})"


def _airflow(env: dict[str, str], log: Path, *args: str, timeout: float = 600) -> None:
    """One ``airflow`` CLI command, its output appended to ``log``; fails the test on error."""
    with log.open("a") as out:
        out.write(f"\n$ airflow {' '.join(args)}\n")
        out.flush()
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=env,
            cwd=env["AIRFLOW_HOME"],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    if done.returncode != 0:
        pytest.fail(f"`airflow {' '.join(args)}` failed ({done.returncode}):\n{_tail(log)}")


def _port_is_free(port: int) -> bool:
    """Nothing listens on the port (connections in TIME_WAIT from a previous run don't count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as resp:
            health = json.load(resp)
        return resp.status == 200 and health["metadatabase"]["status"] == "healthy"
    except (OSError, ValueError, KeyError, urllib.error.URLError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ends the api-server's whole process group (uvicorn's workers with it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    # what did not stop in time, and workers that outlived their parent
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


# Package scope: the server stops once the browser tests are done, not at the end of the session.
@pytest.fixture(scope="package")
def airflow_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowUI]:
    """``airflow api-server`` on 127.0.0.1:18090 over a fresh SQLite DB holding the repo's DAGs."""
    if not _port_is_free(UI_PORT):
        pytest.fail(f"port {UI_PORT} is in use: stop whatever listens there and run again")
    home = tmp_path_factory.mktemp("airflow-ui")
    env = airflow_env(home)
    setup_log = home / "setup.log"
    _airflow(env, setup_log, "db", "migrate")
    _airflow(env, setup_log, "dags", "reserialize")

    url = f"http://127.0.0.1:{UI_PORT}"
    server_log = home / "api-server.log"
    with server_log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "--port", str(UI_PORT)],
            env=env,
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended as a whole
        )
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while not _ready(url):
            if proc.poll() is not None:
                pytest.fail(f"airflow api-server exited ({proc.returncode}):\n{_tail(server_log)}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"airflow api-server not ready at {url} after {STARTUP_DEADLINE_S:.0f} s:\n"
                    f"{_tail(server_log)}"
                )
            time.sleep(1)
        yield AirflowUI(url=url, home=home)
    finally:
        _stop(proc)


# --------------------------------------------------------------------------- Selenium


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
    service = Service(str(chromedriver), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield Browser(driver, airflow_ui.url, screenshots)
    finally:
        driver.quit()

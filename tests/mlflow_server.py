"""A real ``mlflow server`` on a free port (SQLite backend, local artifacts), killed and
restarted on demand; optionally MLflow's basic-auth app, as infra/ runs it."""

from __future__ import annotations

import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.orchestration.procs import ProcessTree
from tests.conftest import _free_port


class MlflowServer:
    """``mlflow server`` on a free port, killed and restarted on demand.

    ``auth_config``: an ini file for MLflow's basic-auth app (``--app-name basic-auth``), with
    ``env`` holding its admin password and secret key."""

    def __init__(
        self, root: Path, auth_config: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tree: ProcessTree | None = None
        self.auth_config = auth_config
        self.env = env or {}

    def start(self, timeout_s: float = 120.0) -> None:
        mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
        cmd = [
            mlflow,
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--default-artifact-root",
            (self.root / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        env = {**os.environ, **self.env}
        if self.auth_config is not None:
            cmd += ["--app-name", "basic-auth"]
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self.auth_config)
        self.tree = ProcessTree(grace_s=2.0)
        self.tree.spawn(cmd, env, self.root / "server.log")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError((self.root / "server.log").read_text()[-3000:])
            time.sleep(0.3)

    def kill(self) -> None:
        if self.tree is not None:
            self.tree.stop()
            self.tree = None

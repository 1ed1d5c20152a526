"""Real parts for the Python suite: a redis-server, a wsgate process built
from this repository (WSGATE_BIN, or `go build ./cmd/wsgate`), and the
example AI service under uvicorn as wsgate's upstream. Every process is
started on a free loopback port and killed at teardown.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import pytest

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent  # clients/python
REPO = PACKAGE.parent.parent
sys.path.insert(0, str(PACKAGE))

HMAC_SECRET = "python-suite-secret-" + secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(fn: Callable[[], object], what: str, timeout: float = 15.0, proc: Optional[subprocess.Popen] = None):
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            out = Path(proc.args_log).read_text(errors="replace") if hasattr(proc, "args_log") else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}:\n{out[-4000:]}")
        try:
            v = fn()
            if v:
                return v
        except Exception:  # not up yet: connection refused, redis.ConnectionError
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as res:
            return res.status
    except urllib.error.HTTPError as err:
        return err.code


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spawn(args: list[str], log: Path, **kw) -> subprocess.Popen:
    """Popen with stdout and stderr in log: a pipe nobody reads would block the child."""
    with open(log, "wb") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
    proc.args_log = str(log)
    return proc


class Process:
    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc, self.port = proc, port


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not on PATH (scripts/test-python.sh installs it)")
    port = free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = spawn(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(d), "--loglevel", "warning"],
        d / "redis.log",
    )
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    wait_until(lambda: r.ping(), "redis-server", proc=proc)
    r.close()
    yield f"redis://127.0.0.1:{port}/0"
    stop(proc)


@pytest.fixture()
def rdb(redis_url):
    import redis

    r = redis.Redis.from_url(redis_url)
    yield r
    r.close()


@pytest.fixture(scope="session")
def wsgate_bin(tmp_path_factory) -> str:
    if os.environ.get("WSGATE_BIN"):
        return os.environ["WSGATE_BIN"]
    out = tmp_path_factory.mktemp("bin") / "wsgate"
    subprocess.run(["go", "build", "-o", str(out), "./cmd/wsgate"], cwd=REPO, check=True)
    return str(out)


@pytest.fixture(scope="session")
def mint(wsgate_bin) -> Callable[..., str]:
    """mint(sub, tenant=..., sid=..., ttl=...) runs `wsgate token` with the suite's secret."""

    def mint(sub: str = "alice", tenant: Optional[str] = "acme", sid: Optional[str] = None, ttl: str = "5m") -> str:
        args = [wsgate_bin, "token", "--secret", HMAC_SECRET, "--sub", sub, "--ttl", ttl]
        if tenant:
            args += ["--tenant", tenant]
        if sid:
            args += ["--claim", f"sid={sid}"]
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()

    return mint


def start_service(tmp: Path, env: dict[str, str]) -> Process:
    """The example AI service under uvicorn on a free port."""
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(PACKAGE / "examples"), "ai_service:app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        tmp / "ai_service.log",
        env={**os.environ, "PYTHONPATH": str(PACKAGE), "AI_TOKEN_DELAY": "0.01", **env},
    )
    wait_until(lambda: http_status(f"http://127.0.0.1:{port}/healthz") == 200, "ai_service /healthz", proc=proc)
    return Process(proc, port)


@pytest.fixture(scope="session")
def ai_service(redis_url, tmp_path_factory):
    svc = start_service(tmp_path_factory.mktemp("svc"), {"WSGATE_REDIS_URL": redis_url, "WSGATE_HISTORY_SIZE": "100"})
    yield svc
    stop(svc.proc)


class Gate:
    def __init__(self, proc: subprocess.Popen, port: int, admin_port: int):
        self.proc, self.port, self.admin_port = proc, port, admin_port
        self.ws = f"ws://127.0.0.1:{port}"
        self.admin = f"http://127.0.0.1:{admin_port}"


def start_gate(wsgate_bin: str, tmp: Path, redis_url: str, upstream_port: int) -> Gate:
    port, admin_port = free_port(), free_port()
    # JSON is YAML: the config the README documents, without a YAML writer.
    config = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{admin_port}",
        "shutdown_grace": "1s",
        "auth": {"hmac_secret": HMAC_SECRET},
        "redis": {"url": redis_url},
        "limits": {"handshakes_per_second_per_ip": -1},
        "routes": [
            {"path": "/ws/ai/stream/{session}", "subscribe": ["ai:stream:{session}"],
             "require": {"session": "sid"}, "history": {"size": 100, "ttl": "10m"}},
            {"path": "/ws/chat", "upstream": f"ws://127.0.0.1:{upstream_port}/ws/chat"},
        ],
    }
    path = tmp / "wsgate.yaml"
    path.write_text(json.dumps(config, indent=2))
    proc = spawn([wsgate_bin, "serve", "--config", str(path)], tmp / "wsgate.log")
    wait_until(lambda: http_status(f"http://127.0.0.1:{admin_port}/readyz") == 200, "wsgate /readyz", proc=proc)
    return Gate(proc, port, admin_port)


@pytest.fixture(scope="session")
def gate(wsgate_bin, tmp_path_factory, redis_url, ai_service):
    g = start_gate(wsgate_bin, tmp_path_factory.mktemp("gate"), redis_url, ai_service.port)
    yield g
    stop(g.proc)


@pytest.fixture()
def session_id() -> str:
    return "s" + secrets.token_hex(6)

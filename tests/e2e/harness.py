"""Runs the real Worker under `wrangler dev` for the end-to-end tests.

Each `WorkerInstance` gets a temporary directory with a wrangler config derived from the
repository's wrangler.toml (same bindings and vars, absolute paths, optional overrides),
its own `.dev.vars` with test secrets, its own persisted D1/R2 state with migrations
applied, and free loopback ports. The Worker is built once (scripts/build.sh) and shared.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
WRANGLER = ROOT / "node_modules" / ".bin" / "wrangler"
OUTPUT_DIR = ROOT / "test-output"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_once() -> None:
    """Builds the Worker unless a build already exists and NANOBANANA_SKIP_BUILD=1."""
    if os.environ.get("NANOBANANA_SKIP_BUILD") == "1" and (ROOT / "build" / "index.js").exists():
        return
    subprocess.run(["bash", "scripts/build.sh"], cwd=ROOT, check=True, env={**os.environ, "NANOBANANA_SKIP_BUILD": ""})


def wrangler_env() -> dict:
    env = dict(os.environ)
    env["WRANGLER_SEND_METRICS"] = "false"
    env["NANOBANANA_SKIP_BUILD"] = "1"  # built once by build_once()
    env["CI"] = "true"  # no interactive prompts
    return env


class WorkerInstance:
    def __init__(self, name: str, vars: dict | None = None, secrets_: dict | None = None, r2: bool = True,
                 drop_vars: tuple = (), root: Path = ROOT):
        """`root` is the checkout whose build/, migrations and wrangler.toml run (the cost
        benchmark compares another checkout's build against this one)."""
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"nb-e2e-{name}-"))
        self.state = self.dir / "state"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.secrets = dict(secrets_ or {})
        self.log_path = OUTPUT_DIR / f"wrangler-{name}.log"

        config = tomllib.loads((root / "wrangler.toml").read_text())
        config["main"] = str(root / config["main"])
        config.pop("build", None)
        for db in config.get("d1_databases", []):
            db["migrations_dir"] = str(root / db["migrations_dir"])
        if "assets" in config:
            config["assets"]["directory"] = str(root / config["assets"]["directory"])
        if not r2:
            config.pop("r2_buckets", None)
        config["vars"] = {k: v for k, v in {**config.get("vars", {}), **(vars or {})}.items() if k not in drop_vars}
        self.config_path = self.dir / "wrangler.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        # wrangler dev reads secrets from .dev.vars beside the config file.
        (self.dir / ".dev.vars").write_text("".join(f"{k}={v}\n" for k, v in self.secrets.items()))
        self.proc: subprocess.Popen | None = None

    def wrangler(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(WRANGLER), *args, "-c", str(self.config_path)],
            cwd=self.dir, env=wrangler_env(), capture_output=True, text=True, check=check, timeout=120,
        )

    def start(self) -> "WorkerInstance":
        OUTPUT_DIR.mkdir(exist_ok=True)
        self.wrangler("d1", "migrations", "apply", "DB", "--local", "--persist-to", str(self.state))
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [str(WRANGLER), "dev", "-c", str(self.config_path), "--local", "--ip", "127.0.0.1",
             "--port", str(self.port), "--inspector-port", str(free_port()), "--persist-to", str(self.state),
             "--show-interactive-dev-session=false", "--log-level", "log", "--test-scheduled"],
            cwd=self.dir, env=wrangler_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wrangler dev exited early; see {self.log_path}")
            try:
                if requests.get(self.base_url + "/health", timeout=2).status_code in (200, 503):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"wrangler dev did not become ready in 90 s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- the local D1, read and written beside the running Worker ---

    def sql(self, command: str, params: tuple | list = ()) -> list[dict]:
        """Runs SQL on the local D1 with `?` parameters. Reads open the SQLite file
        read-only; writes open it read-write with a busy timeout, so that a write that
        meets workerd's own transaction waits for it instead of failing (as `wrangler d1
        execute`, a second miniflare on the same file, once did). A write may hold several
        statements; its parameters are inlined as SQL literals by `bind_literals`."""
        if command.lstrip().upper().startswith("SELECT"):
            return self._read(command, params)
        db = sqlite3.connect(self._d1_path(), timeout=30)
        try:
            db.executescript(bind_literals(command, params))
            db.commit()
        finally:
            db.close()
        return []

    def _d1_path(self) -> Path:
        [path] = [p for p in (self.state / "v3" / "d1").rglob("*.sqlite") if p.name != "metadata.sqlite"]
        return path

    def _read(self, query: str, params=()) -> list[dict]:
        db = sqlite3.connect(f"file:{self._d1_path()}?mode=ro", uri=True, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in db.execute(query, tuple(params)).fetchall()]
        finally:
            db.close()

    def log_entries(self, needle: str = "") -> list[dict]:
        """The Worker's JSON log lines (those containing `needle`), parsed. wrangler wraps
        console.error lines in terminal colours; those codes are dropped first."""
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            line = ANSI.sub("", line)
            start = line.find('{"')
            if start < 0 or needle not in line:
                continue
            try:
                entry, _ = json.JSONDecoder().raw_decode(line[start:])
            except ValueError:
                continue
            entries.append(entry)
        return entries

    def request_log(self, request_id: str) -> dict:
        """The Worker's one-line JSON log of a request (`event: request`)."""
        deadline = time.time() + 5
        while time.time() < deadline:
            for entry in self.log_entries(request_id):
                if entry.get("event") == "request" and entry.get("request_id") == request_id:
                    return entry
            time.sleep(0.1)
        raise AssertionError(f"no request log line for {request_id} in {self.log_path}")

    def d1_files(self) -> list[Path]:
        return [p for p in (self.state / "v3" / "d1").rglob("*") if p.is_file()]

    def r2_objects(self, prefix: str = "") -> list[dict]:
        """What the local R2 holds under `prefix`: key, size, http and custom metadata, bytes.
        Read from miniflare's own store (SQLite index + blob files), read-only."""
        root = self.state / "v3" / "r2"
        objects = []
        for index in (root / "miniflare-R2BucketObject").glob("*.sqlite") if root.exists() else []:
            if index.name == "metadata.sqlite":
                continue
            db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
            try:
                rows = db.execute(
                    "SELECT key, blob_id, size, http_metadata, custom_metadata FROM _mf_objects WHERE key LIKE ?",
                    (prefix + "%",)).fetchall()
            except sqlite3.OperationalError:
                rows = []
            finally:
                db.close()
            for key, blob_id, size, http_metadata, custom_metadata in rows:
                blob = root / "nanobanana-images" / "blobs" / blob_id
                objects.append({"key": key, "size": size, "http_metadata": json.loads(http_metadata),
                                "custom_metadata": json.loads(custom_metadata), "bytes": blob.read_bytes()})
        return objects


    def r2_forget(self, prefix: str) -> int:
        """Makes the local R2 forget the objects under `prefix` (their index rows; the blobs
        stay, unreachable): what a Worker that died before storing them would have left."""
        root = self.state / "v3" / "r2" / "miniflare-R2BucketObject"
        removed = 0
        for index in root.glob("*.sqlite") if root.exists() else []:
            if index.name == "metadata.sqlite":
                continue
            db = sqlite3.connect(index, timeout=30)
            try:
                removed += db.execute("DELETE FROM _mf_objects WHERE key LIKE ?", (prefix + "%",)).rowcount
                db.commit()
            finally:
                db.close()
        return removed


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, found through /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children + [d for child in children for d in descendants(child)]


def workerd_pids(root_pid: int) -> list[int]:
    """The workerd processes a `wrangler dev` (process `root_pid`) runs."""
    pids = []
    for pid in descendants(root_pid):
        try:
            if b"workerd" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            pass
    return pids


def sql_literal(value) -> str:
    """A Python value as an SQLite literal: NULL, an integer, or a quoted string."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("NUL in an SQL string")
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def bind_literals(command: str, params) -> str:
    """Replaces each `?` outside quotes with the next parameter as a literal."""
    params = list(params)
    out, quoted = [], False
    for ch in command:
        if ch == "'":
            quoted = not quoted
        if ch == "?" and not quoted:
            if not params:
                raise ValueError("more ? than parameters")
            out.append(sql_literal(params.pop(0)))
        else:
            out.append(ch)
    if params:
        raise ValueError("more parameters than ?")
    return "".join(out)


def new_secret() -> str:
    return secrets.token_hex(32)

"""Test fixtures: a real `arqonbus serve` on a free loopback port, and an asyncio test helper.

The server binary is `$ARQONBUS_BIN`, else `<repo>/target/debug/arqonbus`, else
`<repo>/target/release/arqonbus`. Tests that need it fail (they do not skip) when none is
found: a green run must mean the SDK talked to a real server.

A server may also listen on TLS, WebSocket and secure WebSocket (`ServerProcess(tls=...,
ws=True)`), with a CA, server and client certificates made for the session by `trustme`
(`tls_files`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

SDK_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = SDK_DIR.parents[1]
EXAMPLES_DIR = SDK_DIR / "examples"

# The SDK under test is the one in this tree, installed or not.
if str(SDK_DIR) not in sys.path:
    sys.path.insert(0, str(SDK_DIR))


def find_server_binary() -> Path:
    env = os.environ.get("ARQONBUS_BIN")
    if env:
        path = Path(env)
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"ARQONBUS_BIN={env} is not an executable file", pytrace=False)
        return path
    for candidate in (REPO_DIR / "target" / "debug" / "arqonbus", REPO_DIR / "target" / "release" / "arqonbus"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "no arqonbus server binary: set ARQONBUS_BIN or build it (cargo build) so that "
        f"{REPO_DIR}/target/debug/arqonbus exists",
        pytrace=False,
    )
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_socket_owned_by(pid: int, port: int) -> Optional[bool]:
    """Whether process `pid` holds a socket listening on 127.0.0.1:`port` (Linux /proc); None
    where that cannot be told. Other programs on this machine pick free ports too, and may
    take the one chosen here between the choice and the server's bind."""
    try:
        with open("/proc/net/tcp") as table:
            rows = table.read().splitlines()[1:]
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    wanted = {"0100007F:%04X" % port, "00000000:%04X" % port}
    inodes = {f"socket:[{cols[9]}]" for cols in (r.split() for r in rows) if cols[1] in wanted and cols[3] == "0A"}
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class TlsFiles:
    """PEM files made for the test session: the CA the server's certificate chains to, the
    server's certificate (for 127.0.0.1 and localhost, its key in the same file), a client
    certificate of that CA (common name `lab/ada`, key included), and a CA and a client
    certificate that the server does not know. `ca_obj`, `client_obj` are the `trustme` objects
    (to build an `ssl.SSLContext` by hand)."""

    ca: Path
    server: Path
    client: Path
    other_ca: Path
    stranger_client: Path
    ca_obj: Any
    client_obj: Any


class ServerProcess:
    """One `arqonbus serve --listen 127.0.0.1:PORT --shards 2` process, logging to a file.

    With `tls` it also listens on TLS and secure WebSocket (`[tls]` with those files; the
    client CA too, so client certificates are verified, and required with
    `require_client_cert`); with `ws` on plain WebSocket. `url_for(scheme)` gives each URL."""

    def __init__(
        self,
        binary: Path,
        log_path: Path,
        port: Optional[int] = None,
        shards: int = 2,
        config: Optional[str] = None,
        tls: Optional[TlsFiles] = None,
        require_client_cert: bool = False,
        ws: bool = False,
    ):
        self.binary = binary
        self.log_path = log_path
        # The server runs in the log's folder, so a relative data_dir stays out of the tree.
        self.workdir = log_path.parent
        self.port = port or free_port()
        self.shards = shards
        self.extra_args: List[str] = []
        # The other listeners: scheme -> port (the plain TCP one is `port`).
        self.extra_ports: Dict[str, int] = {}
        if tls is not None:
            self.extra_ports["tls"] = free_port()
            self.extra_ports["wss"] = free_port()
            config = (config or "") + (
                "\n[tls]\n"
                f'cert_path = "{tls.server}"\n'
                f'key_path = "{tls.server}"\n'
                f'client_ca_path = "{tls.ca}"\n'
                f"require_client_cert = {'true' if require_client_cert else 'false'}\n"
            )
        if ws:
            self.extra_ports["ws"] = free_port()
        if config is not None:
            config_path = self.workdir / "arqonbus.toml"
            config_path.write_text(config)
            self.extra_args += ["--config", str(config_path)]
        self.proc: Optional[subprocess.Popen] = None
        # A restart must keep the port (clients reconnect to it); a first start may move.
        self.started_once = False

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def url_for(self, scheme: str) -> str:
        """The URL of this server's `scheme` listener (`tcp`, `tls`, `ws`, `wss`)."""
        if scheme == "tcp":
            return self.url
        if scheme not in self.extra_ports:
            raise AssertionError(f"this server has no {scheme}:// listener")
        return f"{scheme}://127.0.0.1:{self.extra_ports[scheme]}"

    @property
    def all_ports(self) -> List[int]:
        return [self.port, *self.extra_ports.values()]

    @property
    def args(self) -> List[str]:
        listeners: List[str] = []
        for scheme, port in self.extra_ports.items():
            listeners += [f"--{scheme}-listen", f"127.0.0.1:{port}"]
        return [
            str(self.binary),
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            *listeners,
            "--shards",
            str(self.shards),
            # The admin listener defaults to 127.0.0.1:4721; servers running side by side each
            # take a free port instead.
            "--admin-listen",
            "127.0.0.1:0",
            *self.extra_args,
        ]

    def _choose_ports(self) -> None:
        self.port = free_port()
        for scheme in self.extra_ports:
            self.extra_ports[scheme] = free_port()

    def start(self, timeout: float = 30.0, attempts_left: int = 3) -> "ServerProcess":
        # A server killed a moment ago can keep its listening socket for some milliseconds
        # (io_uring releases it asynchronously): it still accepts, then resets, and a new server
        # refuses to bind. Wait until the port is really free before restarting on it.
        if self.started_once:
            self.wait_port_free()
        else:
            while any(port_accepts(p) for p in self.all_ports):  # someone else listens there
                self._choose_ports()
        log = open(self.log_path, "ab")
        log.write(f"\n=== {' '.join(self.args)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=str(self.workdir))
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if not self.started_once and attempts_left > 0 and "already in use" in self.log_tail(5):
                    # Another program took a port after free_port() chose it: choose again.
                    self._choose_ports()
                    return self.start(timeout, attempts_left - 1)
                pytest.fail(
                    f"arqonbus serve exited with {self.proc.returncode} before accepting:\n{self.log_tail()}",
                    pytrace=False,
                )
            if all(
                port_accepts(p) and listening_socket_owned_by(self.proc.pid, p) is not False for p in self.all_ports
            ):
                self.started_once = True
                return self
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"arqonbus serve did not accept on ports {self.all_ports} within {timeout}s:\n{self.log_tail()}")
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        """Stops the server abruptly (SIGKILL), like a crash."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def wait_port_free(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for port in self.all_ports:
            while port_accepts(port):
                if time.monotonic() > deadline:
                    pytest.fail(f"port {port} still accepts connections {timeout}s after the server stopped")
                time.sleep(0.02)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def server_binary() -> Path:
    return find_server_binary()


@pytest.fixture(scope="session")
def server(server_binary: Path, tmp_path_factory: pytest.TempPathFactory):
    """The shared server for the session. Tests must not stop it (use `private_server`)."""
    proc = ServerProcess(server_binary, tmp_path_factory.mktemp("server") / "arqonbus.log").start()
    yield proc
    proc.stop()


@pytest.fixture
def private_server(server_binary: Path, tmp_path: Path):
    """A server of the test's own, which the test may stop and restart."""
    proc = ServerProcess(server_binary, tmp_path / "arqonbus.log").start()
    yield proc
    proc.stop()


@pytest.fixture
def server_factory(server_binary: Path, tmp_path: Path):
    """Starts servers of the test's own with a given configuration (TOML text) and, as keyword
    arguments, the listeners of `ServerProcess` (`tls=tls_files`, `require_client_cert`, `ws`)."""
    started: List[ServerProcess] = []

    def start(config: Optional[str] = None, **listeners: Any) -> ServerProcess:
        folder = tmp_path / f"server{len(started)}"
        folder.mkdir()
        proc = ServerProcess(server_binary, folder / "arqonbus.log", config=config, **listeners)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    try:
        import trustme
    except ImportError:
        pytest.fail("the TLS tests need trustme: pip install -e 'sdk/python[test]'", pytrace=False)
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA(organization_name="arqonbus tests")
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    # The bus reads the identity `tenant/subject` from the client certificate's common name.
    client = ca.issue_cert("ada@lab.example", common_name="lab/ada")
    other_ca = trustme.CA(organization_name="someone else")
    stranger = other_ca.issue_cert("eve@elsewhere.example", common_name="lab/eve")
    files = TlsFiles(
        ca=folder / "ca.pem",
        server=folder / "server.pem",
        client=folder / "client.pem",
        other_ca=folder / "other-ca.pem",
        stranger_client=folder / "stranger.pem",
        ca_obj=ca,
        client_obj=client,
    )
    ca.cert_pem.write_to_path(str(files.ca))
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(files.server))
    client.private_key_and_cert_chain_pem.write_to_path(str(files.client))
    other_ca.cert_pem.write_to_path(str(files.other_ca))
    stranger.private_key_and_cert_chain_pem.write_to_path(str(files.stranger_client))
    return files


@pytest.fixture
def url(server: ServerProcess) -> str:
    return server.url


@pytest.fixture
def reality(request: pytest.FixtureRequest) -> str:
    """A reality of the test's own on the shared server, so tests do not see each other."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:80]
    return f"t-{name}-{uuid.uuid4().hex[:8]}"


def aio(timeout: float = 30.0) -> Callable:
    """Runs an `async def` test in a fresh event loop, failing it after `timeout` seconds."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def runner(*args, **kwargs):
            async def bounded():
                try:
                    return await asyncio.wait_for(fn(*args, **kwargs), timeout)
                except asyncio.TimeoutError:
                    pytest.fail(f"test did not finish within {timeout}s")

            return asyncio.run(bounded())

        return runner

    return wrap


def python_subprocess(script: Path, *args: str, **popen_kwargs) -> subprocess.Popen:
    """Starts one of the example scripts with this interpreter and the SDK on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SDK_DIR), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        **popen_kwargs,
    )


def run_researcher(*args: str, timeout: float = 60) -> str:
    """Runs examples/researcher.py with `args` to the end; returns its output (stdout and stderr)
    after checking it exited 0."""
    proc = python_subprocess(EXAMPLES_DIR / "researcher.py", *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.decode()
    assert proc.returncode == 0, text
    return text


async def read_all(sub, idle: float = 0.5) -> list:
    """Every pulse a subscription delivers until none comes for `idle` seconds."""
    import arqonbus

    out = []
    while True:
        try:
            out.append(await sub.get(timeout=idle))
        except arqonbus.ArqonTimeout:
            return out


class LineReader:
    """Collects a subprocess's stdout lines on a thread, so tests can wait for one with a
    time-out."""

    def __init__(self, proc: subprocess.Popen):
        import queue
        import threading

        self.proc = proc
        self.lines: List[str] = []
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._queue.put(raw.decode(errors="replace").rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float = 20.0) -> str:
        import queue

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line containing {needle!r} within {timeout}s; got {self.lines}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"process exited ({self.proc.poll()}) before printing {needle!r}; got {self.lines}"
                )
            self.lines.append(line)
            if needle in line:
                return line


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def operator(server: ServerProcess, reality: str):
    """The reference operator (examples/nvm_operator.py) serving the test's reality."""
    proc = python_subprocess(
        EXAMPLES_DIR / "nvm_operator.py",
        "--url",
        server.url,
        "--reality",
        reality,
        "--steps",
        "3",
        "--step-delay",
        "0.01",
        stdout=subprocess.PIPE,
    )
    lines = LineReader(proc)
    try:
        lines.wait_for("ready", timeout=30)
        yield lines
    finally:
        stop_process(proc)

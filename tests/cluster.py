"""A simulated cluster on one machine: PostgreSQL, a Prefect server on it, and process workers on their own "hosts".

What runs where:

- PostgreSQL (the database production Prefect servers run on) listens on 127.0.0.1 only: the server is
  its one client. As root, it runs as the ``postgres`` user (``nobody`` where there is none), as
  PostgreSQL refuses to run as root; ``infra/install-postgres.sh`` installs it when it is missing.
- The Prefect server (and the test's S3-compatible endpoint) listen on the cluster's host address.
- Each worker runs in a network namespace of its own (``node-1``, ``node-2``, …), joined to the host by a
  bridge, so it reaches the API and S3 over an interface as another machine would, and its flow runs
  start in that namespace too. Where namespaces cannot be made (not root, no ``ip``, no CAP_NET_ADMIN,
  a firewall in the way; or LEPTON_CLUSTER_NETNS=0), the workers share the host's loopback, and
  ``Network.reason`` says why (the test warns).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.integration.conftest import PREFECT, PROJECT, PrefectServer, running_server

INSTALL_HINT = "run infra/install-postgres.sh (make test does), or set LEPTON_PG_BIN to the folder holding initdb and postgres"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path:
    """The folder holding PostgreSQL's ``initdb`` and ``postgres``: LEPTON_PG_BIN, the PATH, or Debian's layout.

    Raises:
        RuntimeError: no PostgreSQL server binaries here; the message says how to install them.
    """
    candidates = [os.environ.get("LEPTON_PG_BIN", "")]
    if found := shutil.which("initdb"):
        candidates.append(str(Path(found).resolve().parent))
    # Debian's postgresql package keeps the server binaries off the PATH, one folder per major version.
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    candidates += [str(p) for p in sorted(versions, key=lambda p: int(p.parent.name), reverse=True)]
    for folder in filter(None, candidates):
        if all(os.access(Path(folder) / name, os.X_OK) for name in ("initdb", "postgres")):
            return Path(folder)
    raise RuntimeError(f"no PostgreSQL server binaries (initdb, postgres) found: {INSTALL_HINT}")


def _unprivileged() -> dict:
    """subprocess arguments that run PostgreSQL as an ordinary user when this process is root (initdb refuses root)."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root and there is no postgres or nobody user to run PostgreSQL as")


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a ``prefect`` database; yields its SQLAlchemy asyncpg URL.

    The cluster lives in a fresh folder under the system temp dir (pytest's own are private to root,
    which the ``postgres`` user cannot enter) and is stopped and deleted on exit.
    """
    import asyncpg

    binaries, as_user = postgres_bin(), _unprivileged()
    root = Path(tempfile.mkdtemp(prefix="lepton-pg-"))
    data, log_path = root / "data", root / "postgres.log"
    if as_user:
        os.chown(root, as_user["user"], as_user["group"])
    process = None
    try:
        init = subprocess.run(
            [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, timeout=120, **as_user,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        port = free_port()
        with open(log_path, "w") as log:
            if as_user:
                os.chown(log_path, as_user["user"], as_user["group"])
            # In the foreground, as this process's child, so it is stopped by its pid whatever happens. A test
            # database: no fsync (durability is not what is tested; concurrency and the SQL dialect are).
            process = subprocess.Popen(
                [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(root),
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **as_user,
            )

        async def create_database() -> None:
            deadline = time.monotonic() + 60
            while True:
                try:
                    connection = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres")
                    break
                except (OSError, asyncpg.PostgresError):
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"postgres did not start; log:\n{log_path.read_text()[-3000:]}") from None
                    await asyncio.sleep(0.2)
            try:
                await connection.execute("CREATE DATABASE prefect")
            finally:
                await connection.close()

        asyncio.run(create_database())
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        if process is not None:
            _stop(process, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(root, ignore_errors=True)


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal a process group started with ``start_new_session``; kill it if it has not exited within ``timeout``."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass


@dataclass
class Network:
    """Where the cluster's services listen and how a node's command is started in its namespace."""

    host: str
    namespaces: list[str] = field(default_factory=list)
    isolated: bool = False
    reason: str = ""

    def on_node(self, index: int, command: list[str]) -> list[str]:
        """``command`` as started on node ``index`` (0-based)."""
        if not self.isolated:
            return command
        return ["ip", "netns", "exec", self.namespaces[index], *command]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale() -> None:
    """Namespaces and bridges of earlier test processes that were killed before their clean-up ran."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        if (match := re.match(r"lepton-(\d+)-node\d+\b", line)) and not _alive(int(match.group(1))):
            _ip("netns", "delete", match.group(0), check=False)
    for match in re.finditer(r"^\d+: (lptbr(\d+))[:@]", _ip("-o", "link", "show", "type", "bridge", check=False).stdout, re.M):
        if not _alive(int(match.group(2))):
            _ip("link", "delete", match.group(1), check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    used = [ipaddress.ip_interface(a).network for a in re.findall(r"inet (\S+)", _ip("-4", "-o", "addr", check=False).stdout)]
    for third in range(213, 256):
        subnet = ipaddress.ip_network(f"10.213.{third}.0/24")
        if not any(subnet.overlaps(u) for u in used):
            return subnet
    raise OSError("no free 10.213.x.0/24 subnet for the cluster bridge")


def _reachable(network: Network) -> None:
    """Each namespace can open a TCP connection to the host address (a host firewall could drop it)."""
    with socket.socket() as listener:
        listener.bind((network.host, 0))
        listener.listen(len(network.namespaces))
        probe = f"import socket; socket.create_connection(('{network.host}', {listener.getsockname()[1]}), timeout=5).close()"
        for index in range(len(network.namespaces)):
            command = network.on_node(index, [sys.executable, "-c", probe])
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            if result.returncode != 0:
                raise OSError(f"node {index + 1} cannot reach {network.host}: {result.stderr.strip()[-300:]}")


@contextmanager
def node_network(nodes: int) -> Iterator[Network]:
    """A network namespace per node on one bridge (host address .1, node i at .i+1), or the shared loopback.

    Named after this process's pid, so a later run removes what a killed one left behind.
    """
    if os.environ.get("LEPTON_CLUSTER_NETNS") == "0":
        yield Network(host="127.0.0.1", reason="LEPTON_CLUSTER_NETNS=0: the workers share the host's loopback")
        return
    if os.geteuid() != 0 or shutil.which("ip") is None:
        yield Network(host="127.0.0.1", reason="network namespaces need root and iproute2's ip")
        return
    tag = str(os.getpid())
    bridge = f"lptbr{tag}"
    network = Network(host="", namespaces=[f"lepton-{tag}-node{i + 1}" for i in range(nodes)], isolated=True)
    try:
        _remove_stale()
        _make(network, bridge)
    except (OSError, subprocess.SubprocessError) as exc:
        _remove(network, bridge)
        network = Network(host="127.0.0.1", reason=f"no network namespaces here ({exc}); the workers share the host's loopback")
    if not network.isolated:
        yield network
        return
    try:
        yield network
    finally:
        _remove(network, bridge)


def _make(network: Network, bridge: str) -> None:
    subnet = _free_subnet()
    hosts = list(subnet.hosts())
    network.host = str(hosts[0])
    _ip("link", "add", bridge, "type", "bridge")
    _ip("addr", "add", f"{hosts[0]}/{subnet.prefixlen}", "dev", bridge)
    _ip("link", "set", bridge, "up")
    for index, namespace in enumerate(network.namespaces):
        veth = f"{bridge.replace('br', '', 1)}n{index + 1}"
        _ip("netns", "add", namespace)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("link", "set", veth, "master", bridge, "up")
        _ip("-n", namespace, "addr", "add", f"{hosts[index + 1]}/{subnet.prefixlen}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
    _reachable(network)


def _remove(network: Network, bridge: str) -> None:
    # Deleting a namespace deletes its end of each veth pair, and with it the host's end.
    for namespace in network.namespaces:
        _ip("netns", "delete", namespace, check=False)
    _ip("link", "delete", bridge, check=False)


@contextmanager
def prefect_server(database_url: str, host: str, home: Path, env: dict[str, str]) -> Iterator[PrefectServer]:
    """``prefect server start`` on ``database_url``, listening on ``host``; its log is ``home/server.log``.

    ``env`` is the base environment for the server and for every CLI call and worker pointed at it.
    """
    port = free_port(host)
    server_env = {
        **env,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://{host}:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        # The runs a test looks at are the ones it creates: no scheduled runs of the deployments' schedules.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "LEPTON_PROJECT_DIR": str(PROJECT),
        # The API and S3 are on the cluster's address; a proxy from the environment must not get them.
        "NO_PROXY": ",".join(filter(None, [env.get("NO_PROXY"), host])),
        "no_proxy": ",".join(filter(None, [env.get("no_proxy"), host])),
    }
    home.mkdir(parents=True, exist_ok=True)
    with running_server(server_env, host, port, home) as server:
        yield server


@dataclass
class Worker:
    """A ``prefect worker start`` process on one node, and its console log."""

    name: str
    process: subprocess.Popen
    log: Path

    def console(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def process_workers(
    server: PrefectServer, network: Network, pool: str, root: Path, count: int, limit: int = 1
) -> Iterator[list[Worker]]:
    """``count`` process workers on ``pool``, worker i named ``node-i`` on node i, each with its own PREFECT_HOME.

    ``limit`` flow runs at a time per worker. Returns once the server lists every worker as online.
    """
    with ExitStack() as stack:
        workers = []
        for index in range(count):
            name = f"node-{index + 1}"
            home = root / name
            home.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(open(home / "worker.log", "w"))
            process = subprocess.Popen(
                network.on_node(index, [PREFECT, "worker", "start", "--pool", pool, "--type", "process",
                                        "--name", name, "--limit", str(limit)]),
                cwd=home, env={**server.env, "PREFECT_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            stack.callback(_stop, process)
            workers.append(Worker(name, process, home / "worker.log"))
        deadline = time.monotonic() + 120
        while True:
            listed = httpx.post(f"{server.api_url}/work_pools/{pool}/workers/filter", json={}, timeout=10).json()
            online = {w["name"] for w in listed if w.get("status") == "ONLINE"}
            if online >= {w.name for w in workers}:
                break
            dead = [w for w in workers if w.process.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(
                    "workers did not come online: "
                    + "; ".join(f"{w.name}: {w.console()[-1500:]}" for w in (dead or workers))
                )
            time.sleep(0.5)
        yield workers


def s3_endpoint(host: str):  # noqa: ANN201 - tests.s3_endpoint.S3Endpoint
    """The tests' S3-compatible endpoint (moto), listening on ``host`` rather than 127.0.0.1 so nodes reach it."""
    from tests.s3_endpoint import S3Endpoint

    endpoint = S3Endpoint()
    endpoint._ip_address = host  # where moto's ThreadedMotoServer binds; S3Endpoint sets 127.0.0.1
    return endpoint

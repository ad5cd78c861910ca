"""A real S3 server for tests: moto's server in a subprocess, reached through a TCP proxy.

`stop()` simulates a storage outage: the proxy stops listening and drops every open connection,
so clients see refused and reset connections, while moto keeps running and keeps its data (a
restarted moto would come back empty, unlike a restarted MinIO). `start()` listens again on the
same port, so clients configured with `endpoint` recover by themselves.

`running_s3_server(authenticate=True)` makes moto check credentials as S3 and MinIO do: only
keys of its IAM users work, each within its policy. The server's own keys are then an admin
user's, and `tenant_keys()` makes a user whose policy is Trainyard's `tenant_storage_policy`.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from trainyard.storage.config import S3StorageConfig, StorageCredentials
from trainyard.storage.s3 import RetryPolicy
from trainyard.tenancy.storage_policy import tenant_storage_policy

HOST = "127.0.0.1"
ACCESS_KEY = "trainyard-test"  # moto accepts any credentials, unless it authenticates
SECRET_KEY = "trainyard-test-secret"
REPO_ROOT = Path(__file__).resolve().parents[1]
# For stores in tests: a fault shows up within a second instead of after production's 20 s.
FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.05, max_wait=0.2, deadline=1.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _close(sock: socket.socket) -> None:
    """Shut down first: that wakes a thread blocked in accept() or recv() on `sock`."""
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class _Proxy:
    """Forwards each connection on `port` to moto, one thread per direction."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0  # chosen by the first start(), then kept
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.create_server((HOST, self.port))  # SO_REUSEADDR: rebinding works
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            doomed = [*self._sockets, *([self._listener] if self._listener else [])]
            self._listener = None
            self._sockets.clear()
        for sock in doomed:
            _close(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # stop() closed the listener
                return
            try:
                upstream = socket.create_connection((HOST, self.upstream_port))
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # stopped while connecting
                    _close(client)
                    _close(upstream)
                    return
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
        with self._lock:
            self._sockets.difference_update((src, dst))
        _close(src)
        _close(dst)


_ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


class S3Server:
    """A running moto S3 server; use `running_s3_server()` to get one."""

    def __init__(self, proxy: _Proxy) -> None:
        self._proxy = proxy
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY

    def _iam(self) -> Any:
        import boto3

        return boto3.client(
            "iam",
            endpoint_url=f"http://{self.endpoint}",
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def iam_user(self, name: str, policy: dict[str, Any]) -> StorageCredentials:
        """A new IAM user with `policy` (inline), and its keys."""
        iam = self._iam()
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return StorageCredentials(key["AccessKeyId"], key["SecretAccessKey"])

    def tenant_keys(self, tenant: str, storage: S3StorageConfig) -> StorageCredentials:
        """Keys of a user allowed exactly what `trainyard tenants policy` prints for `storage`."""
        return self.iam_user(f"trainyard-{tenant}", tenant_storage_policy(storage))

    def _authenticate(self) -> None:
        """From now on, only the keys of IAM users work: the server's own become an admin's."""
        self.access_key, self.secret_key = self.iam_user("trainyard-admin", _ADMIN_POLICY)
        connection = http.client.HTTPConnection(HOST, self._proxy.port, timeout=10)
        try:
            connection.request("POST", "/moto-api/reset-auth", body=b"0")
            response = connection.getresponse()
            assert response.status == 200, response.read()
        finally:
            connection.close()

    @property
    def endpoint(self) -> str:
        """host:port for clients; stable across stop() and start()."""
        return f"{HOST}:{self._proxy.port}"

    def stop(self) -> None:
        """Begin an outage: refuse new connections and cut the open ones."""
        self._proxy.stop()

    def start(self) -> None:
        """End an outage; the data from before it is still there."""
        self._proxy.start()

    def env(self, credentials_env: str = "TRAINYARD_S3") -> dict[str, str]:
        """Credential variables that `S3StorageConfig.credentials()` reads."""
        return {
            f"{credentials_env}_ACCESS_KEY": self.access_key,
            f"{credentials_env}_SECRET_KEY": self.secret_key,
        }

    def config(self, bucket: str, prefix: str = "") -> S3StorageConfig:
        return S3StorageConfig(endpoint=self.endpoint, bucket=bucket, prefix=prefix)


def _wait_until_answering(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}:\n{log.read_text()}")
        connection = http.client.HTTPConnection(HOST, port, timeout=1)
        try:
            connection.request("GET", "/")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
        finally:
            connection.close()
    raise RuntimeError(f"moto server did not answer on port {port} within 30 s:\n{log.read_text()}")


@contextmanager
def running_s3_server(log_dir: Path, *, authenticate: bool = False) -> Iterator[S3Server]:
    """Start moto on a free port (its output goes to `log_dir`), yield it, then terminate it.

    `authenticate`: moto checks keys and IAM policies (see the module docstring).
    """
    port = free_port()
    log = log_dir / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            # moto's server with conditional writes made atomic, as on S3 and MinIO.
            [sys.executable, "-m", "devkit.moto_server", "-H", HOST, "-p", str(port)],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proxy = _Proxy(port)
    try:
        _wait_until_answering(process, port, log)
        proxy.start()
        server = S3Server(proxy)
        if authenticate:
            server._authenticate()
        yield server
    finally:
        proxy.stop()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

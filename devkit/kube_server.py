"""A small fake Kubernetes API server with a fake kubelet, for tests and the chaos soak
(bench/soak.py) without a cluster: it lives in the dev package, not under tests/, because the
benchmarks may not import the tests (import-linter).

It serves, over HTTP on 127.0.0.1, exactly the core/v1 endpoints that the provider's
KubernetesPodOperator and PodManager (cncf-kubernetes 10.25, deferrable mode) and its trigger's
async client (kubernetes_asyncio: read and delete pods) call:

- pods: create, read, list by label selector, delete (graceful, `gracePeriodSeconds`), patch
  (JSON merge patch: the provider's "already checked" label);
- pod log: `container`, `follow` (a chunked stream that ends when the container does),
  `timestamps` (RFC 3339 prefix per line), `sinceSeconds`, `tailLines`;
- events: list by `fieldSelector=involvedObject.name=<pod>` (`resourceVersion` and
  `resourceVersionMatch` are accepted; the provider drops events it has seen by uid);
- services: create, read, delete (the headless Service of a multi-learner job).

The operator polls while it waits for its pods to start (`await_pod_start` reads the pod and
lists its events every `startup_check_interval_seconds`), and so does the deferred task's
trigger on the triggerer (the async client reads each pod of the group every `poll_interval`
and deletes pods), so no watch endpoint is needed.

Like a real API server, it rejects an invalid object: every pod and Service created is
validated against the OpenAPI schema of KUBERNETES_VERSION (`kubernetes-validate`, strict:
unknown fields too), and an invalid one gets 422 Invalid naming the field.

The kubelet runs each pod's container as a local process in the test's Python environment:
a known image maps to an entrypoint command (as the image's ENTRYPOINT), the container's
`command` replaces it and its `args` follow. The process gets the test's PATH, PYTHONPATH,
HOME, LANG and VIRTUAL_ENV (what the image would bake in) plus the container's env, with
`secretKeyRef` values read from Secrets registered with `add_secret`. Two rewrites stand in for
what a node gives a container: an env value under a volume's mount path points into a local
directory per pod and volume, and host names under `.svc` / `.svc.cluster.local` (cluster DNS,
which cannot resolve here) become 127.0.0.1.

A fake node with labels and an `nvidia.com/gpu` capacity schedules pods: a pod whose GPU
request does not fit, or whose node selector the node does not match, stays Pending with
PodScheduled False (Unschedulable), as the scheduler leaves it (the fake schedules each pod
once: a pod that did not fit stays Pending even after capacity frees up). Faults: `evict` (the
kubelet's eviction: SIGTERM, SIGKILL after the grace period, then phase Failed, reason Evicted
and a DisruptionTarget condition), `drain` (`kubectl drain`: every running pod evicted through
the Eviction API, DisruptionTarget EvictionByEvictionAPI, and deleted with its grace period),
`oom_kill` (SIGKILL, container reason OOMKilled), an unknown
image (ErrImagePull) or an invalid image name (InvalidImageName), a missing Secret
(CreateContainerConfigError). The kubelet also enforces what a node does: a container whose
processes hold more resident memory than its memory limit is OOMKilled (sampled with psutil,
as the local backend enforces `resources.memory`), and a container whose securityContext
(the pod's, overridden by the container's) asks for runAsNonRoot but would run as root
(runAsUser 0, or none and an image user of 0: `image_user`, by default the learner images'
USER) does not start (CreateContainerConfigError). Every created pod body is kept in
`created`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import psutil
import yaml

from devkit.http_server import serving
from trainyard.manifest.units import parse_memory

HOST = "127.0.0.1"
GPU = "nvidia.com/gpu"
#: The Kubernetes version whose OpenAPI schema every object sent is validated against.
KUBERNETES_VERSION = "1.36.0"
#: The user an image runs as when the pod names none: Trainyard's learner images' USER.
IMAGE_USER = 10001
#: How often the kubelet samples a container's memory against its limit.
MEMORY_SAMPLE_SECONDS = 0.2
#: Variables of the test's environment that a pod's process gets, as an image would bake them.
IMAGE_ENVIRONMENT = ("PATH", "PYTHONPATH", "HOME", "LANG", "VIRTUAL_ENV", "TMPDIR")
_SERVICE_HOST = re.compile(r"\b[a-z0-9]([-a-z0-9.]*[a-z0-9])?\.svc(\.cluster\.local)?\b")
_IMAGE_REFERENCE = re.compile(r"[a-z0-9]+([._/:@-][a-z0-9]+)*", re.ASCII)


def now() -> str:
    return timestamp(datetime.now(UTC))


def timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386: nested objects merge, null deletes, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = value


def matches(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass(frozen=True)
class FakeNode:
    """The one node pods are scheduled on."""

    name: str = "fake-node-1"
    labels: dict[str, str] = field(default_factory=dict)
    gpus: int = 0


class ApiError(Exception):
    def __init__(
        self,
        code: HTTPStatus,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": int(self.code),
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def not_found(kind: str, name: str) -> ApiError:
    return ApiError(HTTPStatus.NOT_FOUND, "NotFound", f'{kind} "{name}" not found')


def validate_object(kind: str, body: dict[str, Any]) -> None:
    """Reject `body` as the API server does an invalid object: 422, naming the field.

    Checked against the OpenAPI schema of KUBERNETES_VERSION, strictly (an unknown field is an
    error, as with the server's `fieldValidation=Strict`). Kind and apiVersion default to the
    endpoint's, as the server decodes a body into the endpoint's type.
    """
    body.setdefault("apiVersion", "v1")
    body.setdefault("kind", kind)
    try:
        kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        field = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
        ).lstrip(".")
        name = (body.get("metadata") or {}).get("name", "")
        raise ApiError(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            "Invalid",
            f'{kind} "{name}" is invalid: {field or "<root>"}: {error.message}',
            {
                "name": name,
                "kind": kind.lower() + "s",
                "causes": [
                    {"reason": "FieldValueInvalid", "message": error.message, "field": field}
                ],
            },
        ) from error


def run_as_root(pod: dict[str, Any], image_user: int) -> bool:
    """Whether the container must not start: it asks for a non-root user and would run as root.

    The container's securityContext overrides the pod's, field by field; without runAsUser the
    image's user runs it.
    """
    pod_context = pod["spec"].get("securityContext") or {}
    container_context = pod["spec"]["containers"][0].get("securityContext") or {}
    context = {**pod_context, **{k: v for k, v in container_context.items() if v is not None}}
    user = context.get("runAsUser")
    return bool(context.get("runAsNonRoot")) and (image_user if user is None else user) == 0


class FakePod:
    """A pod object and, once started, the local process of its one container."""

    def __init__(self, body: dict[str, Any], uid: str) -> None:
        self.body = body
        self.body["metadata"].update(uid=uid, creationTimestamp=now())
        self.body["status"] = {"phase": "Pending", "conditions": []}
        self.process: subprocess.Popen[bytes] | None = None
        self.log: list[tuple[datetime, bytes]] = []
        self.changed = threading.Condition()
        self.gone = False  # deleted: the kubelet stops working on it
        self.fault_reason: str | None = None  # OOMKilled, or Evicted
        self.grace_timer: threading.Timer | None = None
        self.signals: list[signal.Signals] = []  # what the kubelet sent its container

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def container(self) -> dict[str, Any]:
        return dict(self.body["spec"]["containers"][0])

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.body["status"])

    @property
    def gpus(self) -> int:
        limits = (self.container.get("resources") or {}).get("limits") or {}
        return int(limits.get(GPU, 0))

    @property
    def terminated(self) -> bool:
        return self.body["status"]["phase"] in ("Succeeded", "Failed")

    def set_condition(self, kind: str, status: str, reason: str = "", message: str = "") -> None:
        conditions = [c for c in self.body["status"]["conditions"] if c["type"] != kind]
        condition = {"type": kind, "status": status, "lastTransitionTime": now()}
        condition.update({k: v for k, v in (("reason", reason), ("message", message)) if v})
        self.body["status"]["conditions"] = [*conditions, condition]

    def set_container_state(self, state: dict[str, Any], *, ready: bool = False) -> None:
        container = self.container
        self.body["status"]["containerStatuses"] = [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": ready,
                "restartCount": 0,
                "started": "running" in state,
                "state": state,
            }
        ]

    def signal(self, sig: signal.Signals) -> None:
        self.signals.append(sig)
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def lines(self, since: datetime | None) -> list[tuple[datetime, bytes]]:
        return [line for line in self.log if since is None or line[0] >= since]


class FakeKubernetes:
    """The API server's state and the kubelet; `running_kube_server` serves it over HTTP."""

    def __init__(
        self,
        root: Path,
        images: dict[str, list[str]],
        node: FakeNode,
        image_user: int = IMAGE_USER,
    ) -> None:
        self.root = root
        self.images = images
        self.node = node
        self.image_user = image_user
        self.created: list[dict[str, Any]] = []
        self.pods: dict[tuple[str, str], FakePod] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.events: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self._versions = itertools.count(1)
        self.url = ""

    # --- what tests use -------------------------------------------------------------------

    def add_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        with self.lock:
            self.secrets[(namespace, name)] = dict(data)

    def pods_of(self, **labels: str) -> list[FakePod]:
        """Pods (not yet deleted) whose labels include `labels`."""
        with self.lock:
            return [
                pod
                for pod in self.pods.values()
                if labels.items() <= (pod.body["metadata"].get("labels") or {}).items()
            ]

    def created_pods(self, **labels: str) -> list[dict[str, Any]]:
        """Bodies of every pod created so far whose labels include `labels`."""
        with self.lock:
            return [
                body
                for body in self.created
                if labels.items() <= (body["metadata"].get("labels") or {}).items()
            ]

    def evict(self, pod: FakePod, grace_seconds: float | None = None) -> None:
        """The kubelet evicts the pod (node pressure): it ends Failed, reason Evicted."""
        with self.lock:
            pod.fault_reason = "Evicted"
            pod.set_condition(
                "DisruptionTarget",
                "True",
                "TerminationByKubelet",
                "The node was low on resource: memory.",
            )
            self._event(pod, "Warning", "Evicted", "The node was low on resource: memory.")
            self._terminate(pod, grace_seconds)

    def drain(self) -> list[FakePod]:
        """`kubectl drain` of the node: each running pod is evicted through the Eviction API
        (condition DisruptionTarget, reason EvictionByEvictionAPI; deleted with its grace
        period). The node takes new pods again at once, as its replacement would."""
        with self.lock:
            running = [
                pod
                for pod in self.pods.values()
                if pod.process is not None and not pod.terminated and not pod.gone
            ]
            for pod in running:
                pod.set_condition(
                    "DisruptionTarget",
                    "True",
                    "EvictionByEvictionAPI",
                    "Eviction API: evicting",
                )
                self.delete_pod(pod.namespace, pod.name, None)
        return running

    def oom_kill(self, pod: FakePod) -> None:
        """The container outgrew its memory limit: the kernel kills it at once."""
        with self.lock:
            pod.fault_reason = "OOMKilled"
            self._event(pod, "Warning", "OOMKilling", "Memory cgroup out of memory: Killed process")
            pod.signal(signal.SIGKILL)

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    def shutdown(self) -> None:
        """Kill every container still running (a test that failed may leave some)."""
        with self.lock:
            pods = list(self.pods.values())
        for pod in pods:
            pod.gone = True
            pod.signal(signal.SIGKILL)

    # --- API ------------------------------------------------------------------------------

    def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("metadata", {}).get("name")
        if not name:
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "Invalid", "metadata.name: Required")
        validate_object("Pod", body)
        with self.lock:
            if (namespace, name) in self.pods:
                raise ApiError(
                    HTTPStatus.CONFLICT, "AlreadyExists", f'pods "{name}" already exists'
                )
            self.created.append(json.loads(json.dumps(body)))
            body["metadata"]["namespace"] = namespace
            pod = FakePod(body, str(uuid.uuid4()))
            self._version(pod.body)
            self.pods[(namespace, name)] = pod
        threading.Thread(target=self._kubelet, args=(pod,), daemon=True).start()
        return pod.body

    def pod(self, namespace: str, name: str) -> FakePod:
        with self.lock:
            pod = self.pods.get((namespace, name))
        if pod is None:
            raise not_found("pods", name)
        return pod

    def list_pods(self, namespace: str, selector: str) -> dict[str, Any]:
        with self.lock:
            items = [
                pod.body
                for (ns, _), pod in self.pods.items()
                if ns == namespace and matches(pod.body["metadata"].get("labels") or {}, selector)
            ]
            return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}

    def patch_pod(self, namespace: str, name: str, patch: Any) -> dict[str, Any]:
        if not isinstance(patch, dict):
            raise ApiError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", "merge patches only"
            )
        with self.lock:
            pod = self.pod(namespace, name)
            merge_patch(pod.body, {"metadata": patch.get("metadata") or {}})
            self._version(pod.body)
            return pod.body

    def delete_pod(self, namespace: str, name: str, grace: float | None) -> dict[str, Any]:
        with self.lock:
            pod = self.pod(namespace, name)
            running = pod.process is not None and pod.process.poll() is None
            if not running:
                self._remove(pod)
                return pod.body
            if pod.body["metadata"].get("deletionTimestamp") is None:
                pod.body["metadata"]["deletionTimestamp"] = now()
                self._event(pod, "Normal", "Killing", f"Stopping container {pod.container['name']}")
                self._terminate(pod, grace)
            return pod.body

    def list_events(self, namespace: str, field_selector: str) -> dict[str, Any]:
        wanted = dict(term.split("=", 1) for term in field_selector.split(",") if "=" in term)
        with self.lock:
            items = [
                event
                for event in self.events
                if event["metadata"]["namespace"] == namespace
                and all(
                    event["involvedObject"].get(key.removeprefix("involvedObject.")) == value
                    for key, value in wanted.items()
                )
            ]
            version = str(next(self._versions))
        return {
            "kind": "EventList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": version},
            "items": items,
        }

    def create_service(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        validate_object("Service", body)
        name = body["metadata"]["name"]
        with self.lock:
            if (namespace, name) in self.services:
                raise ApiError(
                    HTTPStatus.CONFLICT, "AlreadyExists", f'services "{name}" already exists'
                )
            body["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()))
            self._version(body)
            self.services[(namespace, name)] = body
            return body

    def service(self, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            if (namespace, name) not in self.services:
                raise not_found("services", name)
            return self.services[(namespace, name)]

    def delete_service(self, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            body = self.service(namespace, name)
            del self.services[(namespace, name)]
            return body

    # --- the kubelet ----------------------------------------------------------------------

    def _kubelet(self, pod: FakePod) -> None:
        with self.lock:
            if pod.gone or not self._schedule(pod) or not self._pull(pod):
                return
            env = self._environment(pod)
            if env is None or not self._user_allowed(pod):
                return
            command = [*(pod.container.get("command") or self.images[pod.container["image"]])]
            command += pod.container.get("args") or []
            workdir = self.root / "pods" / pod.namespace / pod.name
            workdir.mkdir(parents=True, exist_ok=True)
            pod.process = subprocess.Popen(
                command,
                env=env,
                cwd=workdir,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            pod.body["status"].update(phase="Running", startTime=now(), podIP=HOST)
            pod.set_condition("Initialized", "True")
            pod.set_condition("Ready", "True")
            pod.set_container_state({"running": {"startedAt": now()}}, ready=True)
            self._event(pod, "Normal", "Started", f"Started container {pod.container['name']}")
            self._version(pod.body)
        started = datetime.now(UTC)
        limit = ((pod.container.get("resources") or {}).get("limits") or {}).get("memory")
        if limit is not None:
            threading.Thread(
                target=self._enforce_memory, args=(pod, parse_memory(limit)), daemon=True
            ).start()
        assert pod.process.stdout is not None
        for line in pod.process.stdout:
            with pod.changed:
                pod.log.append((datetime.now(UTC), line))
                pod.changed.notify_all()
        code = pod.process.wait()
        self._finish(pod, code, started)

    def _enforce_memory(self, pod: FakePod, limit: int) -> None:
        """The memory cgroup's limit: once the container's processes hold more resident
        memory than `limit` bytes, the kernel kills them (the container ends OOMKilled)."""
        while pod.process is not None and pod.process.poll() is None:
            used = 0
            for process in container_processes(pod):
                with contextlib.suppress(psutil.NoSuchProcess):
                    used += process.memory_info().rss
            if used > limit:
                self.oom_kill(pod)
                return
            time.sleep(MEMORY_SAMPLE_SECONDS)

    def _user_allowed(self, pod: FakePod) -> bool:
        """The kubelet refuses to start a runAsNonRoot container that would run as root."""
        if not run_as_root(pod.body, self.image_user):
            return True
        message = (
            f'container has runAsNonRoot and image will run as root (pod: "{pod.name}", '
            f"container: {pod.container['name']})"
        )
        pod.set_container_state(
            {"waiting": {"reason": "CreateContainerConfigError", "message": message}}
        )
        self._event(pod, "Warning", "Failed", f"Error: {message}")
        self._version(pod.body)
        return False

    def _schedule(self, pod: FakePod) -> bool:
        selector = pod.body["spec"].get("nodeSelector") or {}
        used = sum(
            other.gpus
            for other in self.pods.values()
            if other is not pod and other.process is not None and not other.terminated
        )
        problem = None
        if not selector.items() <= self.node.labels.items():
            problem = "1 node(s) didn't match Pod's node affinity/selector"
        elif pod.gpus > self.node.gpus - used:
            problem = f"1 Insufficient {GPU}"
        if problem is not None:
            message = (
                f"0/1 nodes are available: {problem}. preemption: 0/1 nodes are available: "
                "1 No preemption victims found for incoming pod."
            )
            pod.set_condition("PodScheduled", "False", "Unschedulable", message)
            self._event(pod, "Warning", "FailedScheduling", message)
            self._version(pod.body)
            return False
        pod.body["spec"]["nodeName"] = self.node.name
        pod.set_condition("PodScheduled", "True")
        self._event(pod, "Normal", "Scheduled", f"Successfully assigned to {self.node.name}")
        return True

    def _pull(self, pod: FakePod) -> bool:
        image = pod.container["image"]
        if not _IMAGE_REFERENCE.fullmatch(image):
            reason, message = "InvalidImageName", f'Failed to apply default image tag "{image}"'
        elif image in self.images:
            self._event(pod, "Normal", "Pulled", f'Container image "{image}" already present')
            return True
        else:
            reason = "ErrImagePull"
            message = (
                f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
                f"{image}: not found"
            )
        pod.set_container_state({"waiting": {"reason": reason, "message": message}})
        self._event(pod, "Warning", "Failed", f"Failed to pull image {image!r}: {message}")
        self._version(pod.body)
        return False

    def _environment(self, pod: FakePod) -> dict[str, str] | None:
        """The container's env as its process sees it, or None if a Secret is missing."""
        env = {name: os.environ[name] for name in IMAGE_ENVIRONMENT if name in os.environ}
        mounts = {
            mount["mountPath"]: self.root / "pods" / pod.namespace / pod.name / mount["name"]
            for mount in pod.container.get("volumeMounts") or []
        }
        for path in mounts.values():
            path.mkdir(parents=True, exist_ok=True)
        for variable in pod.container.get("env") or []:
            reference = (variable.get("valueFrom") or {}).get("secretKeyRef")
            if reference is None:
                env[variable["name"]] = self._rewrite(variable.get("value") or "", mounts)
                continue
            secret = self.secrets.get((pod.namespace, reference["name"]))
            if secret is None or reference["key"] not in secret:
                message = f'secret "{reference["name"]}" not found'
                if secret is not None:
                    message = f"couldn't find key {reference['key']} in Secret {reference['name']}"
                pod.set_container_state(
                    {"waiting": {"reason": "CreateContainerConfigError", "message": message}}
                )
                self._event(pod, "Warning", "Failed", f"Error: {message}")
                self._version(pod.body)
                return None
            env[variable["name"]] = secret[reference["key"]]
        return env

    @staticmethod
    def _rewrite(value: str, mounts: dict[str, Path]) -> str:
        for mount_path, local in mounts.items():
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                value = str(local) + value[len(mount_path.rstrip("/")) :]
        return _SERVICE_HOST.sub(HOST, value)

    def _terminate(self, pod: FakePod, grace: float | None) -> None:
        """SIGTERM now, SIGKILL once the grace period is over (the pod's, unless given)."""
        if grace is None:
            grace = float(pod.body["spec"].get("terminationGracePeriodSeconds", 30))
        pod.signal(signal.SIGTERM)
        pod.grace_timer = threading.Timer(grace, pod.signal, args=(signal.SIGKILL,))
        pod.grace_timer.daemon = True
        pod.grace_timer.start()

    def _finish(self, pod: FakePod, code: int, started: datetime) -> None:
        if pod.grace_timer is not None:
            pod.grace_timer.cancel()
        exit_code = code if code >= 0 else 128 - code
        reason = "Completed" if exit_code == 0 else "Error"
        if pod.fault_reason == "OOMKilled":
            reason = "OOMKilled"
        with self.lock:
            pod.set_container_state(
                {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": reason,
                        "startedAt": timestamp(started),
                        "finishedAt": now(),
                    }
                }
            )
            pod.body["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            pod.set_condition("Ready", "False", "PodCompleted")
            if pod.fault_reason == "Evicted":
                pod.body["status"].update(
                    reason="Evicted", message="The node was low on resource: memory."
                )
            self._version(pod.body)
            if pod.body["metadata"].get("deletionTimestamp") is not None:
                self._remove(pod)
        with pod.changed:
            pod.changed.notify_all()

    def _remove(self, pod: FakePod) -> None:
        pod.gone = True
        self.pods.pop((pod.namespace, pod.name), None)
        with pod.changed:
            pod.changed.notify_all()

    def _event(self, pod: FakePod, kind: str, reason: str, message: str) -> None:
        metadata = pod.body["metadata"]
        self.events.append(
            {
                "metadata": {
                    "name": f"{pod.name}.{uuid.uuid4().hex[:16]}",
                    "namespace": pod.namespace,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": str(next(self._versions)),
                },
                "involvedObject": {
                    "kind": "Pod",
                    "name": pod.name,
                    "namespace": pod.namespace,
                    "uid": metadata.get("uid"),
                    "fieldPath": f"spec.containers{{{pod.container['name']}}}",
                },
                "reason": reason,
                "message": message,
                "type": kind,
                "count": 1,
                "firstTimestamp": now(),
                "lastTimestamp": now(),
                "source": {"component": "kubelet", "host": self.node.name},
            }
        )

    def _version(self, body: dict[str, Any]) -> None:
        body["metadata"]["resourceVersion"] = str(next(self._versions))


def _log_line(moment: datetime, line: bytes, timestamps: bool) -> bytes:
    if not timestamps:
        return line
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f000Z ").encode() + line


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the records
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body: Any = json.loads(self.rfile.read(length)) if length else None
        api = self.server.api
        parts = url.path.strip("/").split("/")
        try:
            if parts[:3] != ["api", "v1", "namespaces"] or len(parts) < 5:
                raise ApiError(HTTPStatus.NOT_FOUND, "NotFound", f"no route for {url.path}")
            namespace, kind, rest = parts[3], parts[4], parts[5:]
            match (method, kind, rest):
                case ("POST", "pods", []):
                    self._json(api.create_pod(namespace, body), HTTPStatus.CREATED)
                case ("GET", "pods", []):
                    self._json(api.list_pods(namespace, query.get("labelSelector", "")))
                case ("GET", "pods", [name]):
                    self._json(api.pod(namespace, name).body)
                case ("PATCH", "pods", [name]):
                    self._json(api.patch_pod(namespace, name, body))
                case ("DELETE", "pods", [name]):
                    grace = query.get("gracePeriodSeconds") or (body or {}).get(
                        "gracePeriodSeconds"
                    )
                    self._json(
                        api.delete_pod(namespace, name, None if grace is None else float(grace))
                    )
                case ("GET", "pods", [name, "log"]):
                    self._log(api.pod(namespace, name), query)
                case ("GET", "events", []):
                    self._json(api.list_events(namespace, query.get("fieldSelector", "")))
                case ("POST", "services", []):
                    self._json(api.create_service(namespace, body), HTTPStatus.CREATED)
                case ("GET", "services", [name]):
                    self._json(api.service(namespace, name))
                case ("DELETE", "services", [name]):
                    self._json(api.delete_service(namespace, name))
                case _:
                    raise ApiError(
                        HTTPStatus.METHOD_NOT_ALLOWED, "MethodNotAllowed", f"{method} {url.path}"
                    )
        except ApiError as error:
            self._json(error.status(), error.code)
        except Exception as error:  # a bug here shows up as the API's 500, as on a cluster
            failure = ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "InternalError", repr(error))
            self._json(failure.status(), failure.code)

    def _json(self, document: Any, code: HTTPStatus = HTTPStatus.OK) -> None:
        data = json.dumps(document).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _log(self, pod: FakePod, query: dict[str, str]) -> None:
        if pod.process is None:
            waiting = (pod.status.get("containerStatuses") or [{}])[0].get("state", {})
            reason = (waiting.get("waiting") or {}).get("reason", "ContainerCreating")
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "BadRequest",
                f'container "{pod.container["name"]}" in pod "{pod.name}" is waiting to start: '
                f"{reason}",
            )
        since = None
        if query.get("sinceSeconds"):
            since = datetime.now(UTC) - timedelta(seconds=int(query["sinceSeconds"]))
        tail = int(query["tailLines"]) if query.get("tailLines") else 0
        stamps = query.get("timestamps", "").lower() == "true"
        follow = query.get("follow", "").lower() == "true"
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with pod.changed:
            lines = pod.lines(since)
        sent = max(0, len(lines) - tail) if tail else 0
        with contextlib.suppress(OSError):  # the client went away
            while True:
                for moment, line in lines[sent:]:
                    data = _log_line(moment, line, stamps)
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                sent = len(lines)
                with pod.changed:
                    ended = pod.terminated or pod.gone
                    if follow and not ended:
                        pod.changed.wait(timeout=1.0)
                    lines = pod.lines(since)
                if (not follow or ended) and len(lines) == sent:
                    break
            self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: FakeKubernetes) -> None:
        super().__init__((HOST, 0), _Handler)
        self.api = api


@contextmanager
def running_kube_server(
    root: Path, images: dict[str, list[str]], node: FakeNode, image_user: int = IMAGE_USER
) -> Iterator[FakeKubernetes]:
    """Serve a fake cluster on a free port until the block ends; then kill what still runs."""
    root.mkdir(parents=True, exist_ok=True)
    api = FakeKubernetes(root, images, node, image_user)
    try:
        with serving(_Server(api)) as api.url:
            yield api
    finally:
        api.shutdown()


def container_processes(pod: FakePod) -> list[psutil.Process]:
    """The live processes of a pod's container (the runtime and the user code it started)."""
    if pod.process is None or pod.process.poll() is not None:
        return []
    try:
        root = psutil.Process(pod.process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def wait_deleted(api: FakeKubernetes, timeout: float = 60) -> list[str]:
    """Names of pods still in the server after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while api.pods and time.monotonic() < deadline:
        time.sleep(0.2)
    return [pod.name for pod in api.pods.values()]

"""The sandbox of the user's command on the local backend: bubblewrap, set up in one place.

The command sees the system's programs and libraries and the framework environment (the
interpreter running the runtime, its prefix and base prefix) read-only, its own job's
workspace (code, data, checkpoints, results, the metrics file) read-write, a private `/tmp`,
its own PID, IPC, UTS and user namespaces (as `nobody`, with no capabilities and no way to
make a nested user namespace) and its own `/proc` and minimal `/dev`. A learner with GPUs also
gets exactly its leased GPUs' device nodes, the shared ones (`nvidiactl`, `nvidia-uvm`) and the
driver's user-space libraries (`gpu_binds`), no other GPU's. Nothing else of the machine is
there: not `$AIRFLOW_HOME`, not the deployment config, not other tenants' storage or other jobs'
workspaces, not the runtime's environment (which holds the storage keys). The runtime stays
outside and does all storage I/O. A deployment sandboxes user code unless its config says
`sandbox.enabled: false`; where bwrap is missing, its jobs are refused (`require_bwrap`), never
run unsandboxed by accident.

Network (`sandbox.network`): `none` gives the command a network namespace of its own (a
loopback and nothing else); `storage` is the same for user code, since the runtime outside
does every upload and download (bwrap cannot allow one host on a shared loopback); `all`
keeps the host's network. A multi-learner job keeps the host's network whatever the setting:
its ranks meet on 127.0.0.1 for the torch.distributed rendezvous. Each rank still has its own
IPC namespace and /dev/shm: gloo (and NCCL over sockets) works, NCCL's shared-memory and CUDA
IPC transports between sandboxed ranks of one machine do not.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import trainyard
from trainyard.failures import PlatformFault, ResourceError, UserError
from trainyard.runtime import sandbox_init

BWRAP = "bwrap"
INIT_IN_SANDBOX = "/run/trainyard/init.py"
#: The user inside the sandbox: nobody, in a user namespace of its own.
SANDBOX_UID = 65534
#: System directories bound read-only (symlinks such as /bin -> usr/bin are kept as links).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/sys")
#: What of /etc programs need (users, name resolution, the loader cache, certificates).
ETC_PATHS = (
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/mime.types",
)
#: Where the machine's device nodes are; a GPU's is `nvidia<minor>` (tests point at a fake one).
DEV_ROOT = Path("/dev")
#: Device nodes every CUDA process needs besides its GPUs' own, bound where they exist.
SHARED_GPU_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
#: The NVIDIA driver's user-space libraries a CUDA build loads (the driver, not the toolkit:
#: the CUDA wheels bring that), and where drivers install them besides the loader's cache.
DRIVER_LIBRARIES = ("libcuda.so*", "libnvidia-*.so*", "libcudadebugger.so*")
DRIVER_LIBRARY_DIRS = (
    Path("/usr/lib/x86_64-linux-gnu"),
    Path("/usr/lib64"),
    Path("/usr/local/nvidia/lib64"),
    Path("/run/nvidia/driver/usr/lib/x86_64-linux-gnu"),
)
#: What installs bubblewrap (Debian, Ubuntu), as root.
INSTALL_COMMAND = "apt-get install bubblewrap"
INSTALL_FIX = (
    f"install bubblewrap on every machine that runs local learners ({INSTALL_COMMAND}), or, "
    "to run tenants' code unsandboxed with the machine's files in reach, set sandbox.enabled: "
    "false in the deployment config"
)

#: What a learner's log and the deployment's start-up say when the config turned it off.
UNSANDBOXED = (
    "sandbox.enabled is false: tenants' code runs unsandboxed, as the user running the "
    "learners, with this machine's files in reach"
)


class SandboxNetwork(StrEnum):
    """What network user code gets (see the module docstring for what each one enforces)."""

    NONE = "none"
    STORAGE = "storage"
    ALL = "all"


def bwrap_available() -> bool:
    """Whether bubblewrap is installed here (on this PATH)."""
    return shutil.which(BWRAP) is not None


def require_bwrap() -> None:
    """Refuse to run user code where it would run unsandboxed by accident.

    Raises:
        ResourceError: bubblewrap is not installed here; the fix names the command that
            installs it, and the deliberate way out (`sandbox.enabled: false`).
    """
    if not bwrap_available():
        raise ResourceError(
            "sandbox.enabled: the deployment sandboxes tenants' code (auto, the default, or "
            "true), but bubblewrap (bwrap) is not installed on this machine, so no learner "
            "starts here",
            fix=INSTALL_FIX,
        )


def _framework_paths() -> list[Path]:
    """The interpreter's environment (a venv and the Python it was made from, plus the user
    site-packages where images such as Airflow's install with `pip --user`) and Trainyard's
    own package (for `trainyard.runtime.helpers`), without the rest of the checkout."""
    paths = [Path(sys.prefix), Path(sys.exec_prefix), Path(sys.base_prefix)]
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        paths.append(Path(site.getusersitepackages()))
    paths += [path.resolve() for path in paths]
    paths.append(Path(trainyard.__file__).resolve().parent)
    return list(dict.fromkeys(paths))


def driver_library_dirs() -> list[Path]:
    """Where the driver's libraries are here: the usual directories, plus libcuda's in the
    loader's cache (`ldconfig -p`)."""
    dirs = list(DRIVER_LIBRARY_DIRS)
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    with contextlib.suppress(OSError):
        cache = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False)
        for line in cache.stdout.splitlines():
            if line.strip().startswith("libcuda.so") and " => " in line:
                dirs.append(Path(line.rsplit(" => ", 1)[1]).parent)
    return list(dict.fromkeys(dirs))


def driver_libraries(dirs: Sequence[Path]) -> list[Path]:
    """The driver's libraries in `dirs` that the sandbox does not show already (outside its
    read-only system directories), each with the file its links resolve to."""
    found: list[Path] = []
    for directory in dirs:
        for pattern in DRIVER_LIBRARIES:
            for library in sorted(directory.glob(pattern)):
                found += [library, library.resolve()]
    shown = [Path(name) for name in SYSTEM_PATHS]
    return [
        path
        for path in dict.fromkeys(found)
        if not any(path.is_relative_to(system) for system in shown)
    ]


def gpu_binds(minors: Sequence[int], dev_root: Path, library_dirs: Sequence[Path]) -> list[str]:
    """bwrap's binds of exactly these GPUs (`/dev/nvidia<minor>`), the shared nodes that exist,
    and the driver's libraries (read-only); nothing when the learner has no GPU."""
    if not minors:
        return []
    args: list[str] = []
    nodes = [f"nvidia{minor}" for minor in minors] + list(SHARED_GPU_DEVICES)
    for node in nodes:
        source = dev_root / node
        if source.exists():
            args += ["--dev-bind", str(source), str(DEV_ROOT / node)]
    for library in driver_libraries(library_dirs):
        args += ["--ro-bind", str(library), str(library)]
    return args


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    return data


@dataclass(frozen=True)
class Sandbox:
    """How to sandbox one learner's command: its network and the paths it may write."""

    network: SandboxNetwork
    writable: Sequence[Path]
    num_learners: int = 1
    readable: Sequence[Path] = ()  # e.g. the runtime's Python hook on the command's PYTHONPATH
    gpus: Sequence[int] = ()  # minor numbers of the learner's leased GPUs (/dev/nvidia<minor>)
    dev_root: Path = DEV_ROOT
    library_dirs: Sequence[Path] | None = None  # None: driver_library_dirs()

    @property
    def own_network(self) -> bool:
        return self.network is not SandboxNetwork.ALL and self.num_learners == 1

    def argv(self, command: Sequence[str], cwd: Path, info_fd: int, status_fd: int) -> list[str]:
        """bwrap's command line that runs `command` in `cwd` under the sandbox's init."""
        args = [
            BWRAP,
            "--die-with-parent",
            "--new-session",
            "--unshare-user",
            "--disable-userns",  # no nested user namespace to regain capabilities in
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            *(["--unshare-net"] if self.own_network else []),
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--cap-drop",
            "ALL",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]
        for name in SYSTEM_PATHS:
            path = Path(name)
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), name]
            else:
                args += ["--ro-bind-try", name, name]
        for name in ETC_PATHS:
            args += ["--ro-bind-try", name, name]
        for path in _framework_paths():
            args += ["--ro-bind", str(path), str(path)]
        if self.gpus:
            dirs = driver_library_dirs() if self.library_dirs is None else self.library_dirs
            args += gpu_binds(self.gpus, self.dev_root, dirs)
        for path in self.readable:
            args += ["--ro-bind", str(path), str(path)]
        for path in self.writable:
            args += ["--bind", str(path), str(path)]
        return [
            *args,
            "--ro-bind",
            sandbox_init.__file__,
            INIT_IN_SANDBOX,
            "--setenv",
            "HOME",
            "/tmp",
            "--setenv",
            "TMPDIR",
            "/tmp",
            "--chdir",
            str(cwd),
            "--info-fd",
            str(info_fd),
            "--as-pid-1",
            "--",
            sys.executable,
            "-I",
            "-S",
            INIT_IN_SANDBOX,
            str(status_fd),
            *command,
        ]

    def launch(self, command: Sequence[str], cwd: Path) -> SandboxLaunch:
        """Prepare to start `command`; Popen the launch's `argv` with its `pass_fds`.

        Raises:
            ResourceError: bubblewrap is not installed.
        """
        require_bwrap()
        return SandboxLaunch(self, list(command), cwd)


@dataclass
class SandboxLaunch:
    """One sandboxed start: bwrap's arguments, then what the runtime needs to follow it.

    bwrap's `--info-fd` names its child (the init, seen from outside), which is whom to
    signal; the init's status pipe says whether the command started and how it ended.
    """

    sandbox: Sandbox
    command: list[str]
    cwd: Path
    _info: tuple[int, int] = field(default_factory=os.pipe)
    _status: tuple[int, int] = field(default_factory=os.pipe)

    @property
    def argv(self) -> list[str]:
        return self.sandbox.argv(self.command, self.cwd, self._info[1], self._status[1])

    @property
    def pass_fds(self) -> tuple[int, int]:
        return self._info[1], self._status[1]

    def started(self, bwrap: subprocess.Popen[bytes]) -> int:
        """Wait until the command runs; return the pid (outside) to send stop signals to.

        Raises:
            UserError: the command cannot start (no such program, say).
            PlatformFault: the sandbox itself could not be set up.
        """
        for _, write_end in (self._info, self._status):
            os.close(write_end)
        info = _read_all(self._info[0])
        os.close(self._info[0])
        self._status_file = os.fdopen(self._status[0], "r")
        first = self._status_file.readline().strip()
        if first == "started":
            return int(json.loads(info)["child-pid"])
        bwrap.wait()
        if first.startswith("error "):
            raise UserError(
                f"cannot start command {' '.join(self.command)!r}: {first.removeprefix('error ')}",
                fix="check the manifest's command and that its program exists in the image",
            )
        assert bwrap.stdout is not None
        output = bwrap.stdout.read().decode("utf-8", errors="replace").strip()
        raise PlatformFault(
            f"the sandbox of the command could not start (bwrap exited with {bwrap.returncode}): "
            f"{output}",
            fix="check that bwrap can create user namespaces on this machine "
            "(`bwrap --unshare-user --ro-bind / / true`), or set sandbox.enabled: false",
        )

    def returncode(self, bwrap_returncode: int) -> int:
        """The command's own return code (negative: its signal), as the init reported it.

        Without a report (the init was killed from outside), bwrap's 128 + N means signal N.
        """
        last = self._status_file.read().split()
        self._status_file.close()
        if last[:1] == ["returncode"]:
            return int(last[1])
        return 128 - bwrap_returncode if bwrap_returncode > 128 else bwrap_returncode

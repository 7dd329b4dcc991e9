"""The Overview's demo button: `python -m cnmc_core demo` in its own process, and how far it is.

The only thing in the read model that starts anything; a Streamlit script run never trains. Any
number of presses, from any number of sessions (or dashboards on one artifacts root), start one
build: the check "is one running?" and the start happen under an OS lock (flock) on a file in the
root's demo-build folder. The build itself takes the study's lock (`store.StudyLock`) as every
writer does, so a `demo` started from a terminal at the same time is refused, not mixed in.

The button is offered only on a dashboard bound to this machine (`build_allowed`): a build uses every core
for minutes, and on a server others can reach, anyone could start it. `CNMC_ALLOW_DEMO_BUILD=1` offers it there
too; `=0` never offers it (behind a reverse proxy the bind is local, but the users are not).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..progress import describe
from ..store import demo_build_dir, pid_alive, write_bytes

ALLOW_SETTING = "CNMC_ALLOW_DEMO_BUILD"  # "1": offer the button on any bind; "0": never; unset: local binds only
REPOSITORY = Path(__file__).resolve().parents[2]  # the build runs here, as `python -m cnmc_core` expects
_BUILDS: dict[str, subprocess.Popen] = {}  # builds started by this process, by demo-build folder (to reap them)


@dataclass
class BuildStatus:
    state: str  # none | running | done | failed
    fraction: float = 0.0  # 0..1
    text: str = ""  # one line for a person
    log: str = ""  # where the build's whole output is, when it failed


def is_local_address(address: str | None) -> bool:
    """Whether Streamlit's `server.address` binds to this machine only: localhost or a loopback address.
    Empty or unset means every interface (Streamlit's default), so not local."""
    text = (address or "").strip().strip("[]")
    if text.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:  # a host name or an empty value: reachable beyond this machine, as far as we know
        return False


def build_allowed(address: str | None, environ: dict | None = None) -> tuple[bool, str]:
    """Whether the dashboard bound to `address` may offer the demo build; when not, one line saying why and how."""
    setting = (os.environ if environ is None else environ).get(ALLOW_SETTING, "").strip()
    if setting == "0":
        return False, (f"The demo build is not offered here ({ALLOW_SETTING}=0). Build it in a terminal: "
                       "`python -m cnmc_core demo`.")
    if setting == "1" or is_local_address(address):
        return True, ""
    bound = f"server.address = {address!r}" if address else "server.address unset: every interface"
    return False, (f"The demo build is not offered here: this dashboard is served beyond this machine ({bound}). "
                   f"Build it in a terminal (`python -m cnmc_core demo`), or start the dashboard with "
                   f"{ALLOW_SETTING}=1 to offer the button.")


def demo_command(root: Path, progress_file: Path, extra_args: tuple[str, ...] = ()) -> list[str]:
    """The command line of one demo build under `root`."""
    return [sys.executable, "-m", "cnmc_core", "demo", "--artifacts", str(root), "--progress-file", str(progress_file),
            *extra_args]


def start_demo_build(base: str | None = None, extra_args: tuple[str, ...] = ()) -> BuildStatus:
    """Start the demo build under the artifacts root `base`, unless one is running already (then: its status)."""
    folder = demo_build_dir(base)
    with _start_lock(folder):
        status = demo_build_status(base)
        if status.state == "running":
            return status
        (folder / "progress.json").unlink(missing_ok=True)
        cmd = demo_command(folder.parent, folder / "progress.json", extra_args)
        with open(folder / "build.log", "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=REPOSITORY)
        _BUILDS[str(folder)] = proc
        write_bytes(folder / "pid", str(proc.pid).encode())  # atomic: a reader sees no pid or the whole pid
    return BuildStatus("running", 0.0, "starting …")


def demo_build_status(base: str | None = None) -> BuildStatus:
    """Where a demo build under this root stands, from its progress file and process."""
    folder = demo_build_dir(base)
    if not (folder / "pid").is_file():
        return BuildStatus("none")
    try:
        event = json.loads((folder / "progress.json").read_text())
    except (OSError, ValueError):
        event = None
    fraction, text = describe(event if isinstance(event, dict) else None)
    if isinstance(event, dict) and event.get("stage") == "done":
        return BuildStatus("done", 1.0, text)
    if _running(folder):
        return BuildStatus("running", fraction, text)
    try:
        lines = (folder / "build.log").read_text(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        lines = []
    last = next((line.strip() for line in reversed(lines) if line.strip()), "no output")
    return BuildStatus("failed", fraction, f"it stopped before it finished ({last[:300]})", str(folder / "build.log"))


@contextlib.contextmanager
def _start_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive flock on <folder>/start.lock for the block (threads and processes alike: each
    call opens its own file description). The kernel drops it if this process dies."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "start.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _running(folder: Path) -> bool:
    proc = _BUILDS.get(str(folder))
    if proc is not None:
        return proc.poll() is None  # also reaps it, so it does not linger as a zombie
    try:
        return pid_alive(int((folder / "pid").read_text()))
    except (OSError, ValueError):
        return False

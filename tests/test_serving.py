"""The dashboard is local by default: started with the project's own config, it listens on loopback only.

The addresses are read from the kernel's socket table (/proc/net/tcp and tcp6), never by connecting anywhere
but 127.0.0.1."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def _listening(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses with a listening TCP socket on `port`, from /proc/net/tcp and /proc/net/tcp6."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != LISTEN or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(ipaddress.ip_address(raw) if width == 8 else ipaddress.IPv6Address(raw))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_the_projects_config_binds_the_dashboard_to_loopback_only(tmp_path):
    port = _free_port()
    env = {**os.environ, "CNMC_ARTIFACTS": str(tmp_path)}
    # the project's config as it is: no --server.address on the command line
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        addresses = []
        while time.monotonic() < deadline and proc.poll() is None:
            addresses = _listening(port)
            if addresses:
                time.sleep(1.0)  # let every socket of the server open
                addresses = _listening(port)
                break
            time.sleep(0.3)
        assert proc.poll() is None, f"streamlit exited with {proc.returncode}"
        assert addresses, f"streamlit never listened on port {port}"
        assert all(a.is_loopback for a in addresses), f"listening beyond loopback: {addresses}"
    finally:  # nothing of the server needs a clean stop here
        proc.kill()
        proc.wait(10)


def test_the_socket_table_reader_sees_a_wildcard_listener():
    """The check above can fail: a socket bound to every interface is read as 0.0.0.0, not loopback."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        seen = _listening(port)
    assert seen and not any(a.is_loopback for a in seen)

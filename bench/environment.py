"""What the benchmark scripts record about where they ran: machine, commit, a free port."""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import socket
import subprocess
from pathlib import Path
from typing import Any

from web.auth import TOKEN_ENV

__all__ = ["ROOT", "admin_headers", "free_port", "git_state", "machine"]

ROOT = Path(__file__).resolve().parent.parent


def admin_headers() -> dict[str, str]:
    """The admin token header for the apps this run spawns.

    The token is put in this process's environment (``SAGA_ADMIN_TOKEN``, kept if
    already set), which every app started from here inherits and checks.
    """
    token = os.environ.setdefault(TOKEN_ENV, secrets.token_urlsafe(24))
    return {"Authorization": f"Bearer {token}"}


def machine() -> dict[str, Any]:
    """CPUs this process may use, the CPU model, Python and the platform."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    return {
        "nproc": nproc,
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_state() -> dict[str, Any]:
    """The commit the scripts run from and the tracked files modified in the working tree."""

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "modified": []}
    return {"commit": head, "modified": sorted(line[3:] for line in changed if line.strip())}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

"""The app as a real subprocess (``python main.py``), for the tests that kill it.

Every start appends to one log file, so a test that restarts the app several
times keeps the whole story; ``tail`` gives its end for a failure report.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx

__all__ = ["AppProcess", "free_port"]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class AppProcess:
    """One data dir served by successive runs of ``main.py``, one at a time."""

    def __init__(self, data_dir: Path, log_path: Path, *args: str) -> None:
        """``args`` are passed to every run (``start`` can add more)."""
        self.data_dir = data_dir
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *args: str) -> None:
        """Start a run on a fresh port; the previous run must have ended."""
        assert self.proc is None or self.proc.poll() is not None, "the app is still running"
        self.port = free_port()
        self.runs += 1
        command = [
            sys.executable,
            "main.py",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            *self.args,
            *args,
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n=== run {self.runs}: {' '.join(command[1:])}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_healthy(self, deadline: float = 20.0) -> None:
        """Poll ``/health`` until it answers 200; fail if the process exits first."""
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:
            while True:
                if not self.alive():
                    raise AssertionError(
                        f"the app exited with {self.returncode} before it was healthy"
                    )
                try:
                    response = await client.get("/health")
                except httpx.TransportError:
                    pass
                else:
                    if response.status_code == 200:
                        return
                if time.monotonic() - started > deadline:
                    raise AssertionError(f"the app was not healthy within {deadline} s")
                await anyio.sleep(0.05)

    async def wait_exit(self, deadline: float) -> int | None:
        """The return code once the process has ended; None if it still runs at the deadline."""
        with anyio.move_on_after(deadline):
            while True:
                if not self.alive():
                    break
                await anyio.sleep(0.02)
        return self.returncode

    def kill(self) -> int | None:
        """SIGKILL the running process (if any) and reap it."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Shut down cleanly (SIGTERM), or SIGKILL after ``timeout``.

        uvicorn re-raises the signal once it has shut down, so a clean stop
        ends with ``-SIGTERM``; the log says whether the shutdown completed.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return self.kill()
        return self.proc.returncode

    def tail(self, lines: int = 80) -> str:
        if not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

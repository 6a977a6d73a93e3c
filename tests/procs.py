"""Helpers shared by the multi-process tests."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

__all__ = ["WorkerProcess"]


class WorkerProcess:
    """A worker process whose stdout and stderr are drained by threads (select() cannot see Python's line buffer,
    and a full pipe would stall the worker); lines are stripped, ``READY`` sets :attr:`ready`."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.ready = threading.Event()
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._read_out), threading.Thread(target=self._read_err)]
        for thread in self._threads:
            thread.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "READY":
                self.ready.set()
            elif line.strip():
                self.lines.append(line.strip())

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.errors.append(self.proc.stderr.read())

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker did not start: {self.stop()}")

    def finish(self, timeout_s: float = 120.0) -> list[str]:
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running after {timeout_s} s: {self.stop()}")
        errors = self.stop()
        assert self.proc.returncode == 0, errors
        return self.lines

    def stop(self) -> str:
        """Kill the worker if it still runs, join the readers, close the pipes; returns its stderr."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for thread in self._threads:
            thread.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return "".join(self.errors)

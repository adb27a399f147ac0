"""One job per output directory: a lock file that names its holder.

A training job (``speechprompt train``, ``pretrain-ulm``, ``demo``, s3prl's runner in ``-m train``) holds
``<dir>/.speechprompt.lock`` for as long as it runs. A second job on the same directory is refused with one
line that names the holder (PID, host, start time, command), so two runs never write checkpoints, events and
predictions into one directory at the same time.

Liveness is the kernel's advisory lock (``fcntl.flock``) on that file, not the PID written in it: the kernel
drops the lock the moment its process dies, however it died (``kill -9``, OOM, a power cut on another NFSv4
client), and a recycled PID cannot make a dead job look alive. So a lock file left by a killed job is simply
taken over, with a notice that names the job that left it; ``--resume`` / ``-a`` continue as before. The JSON
in the file is only for the message. (On a filesystem without ``flock`` support the lock is taken but
protects nothing; Linux local filesystems and NFSv4 support it.)
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from s3prl_speechprompt.errors import DirectoryLockedError

LOCK_NAME = ".speechprompt.lock"


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when}"
            + (f": {holder['command']}" if holder.get("command") else ""))


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16)
    try:
        info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        info = {}
    return info if isinstance(info, dict) else {}


class RunLock:
    """``with RunLock(out, "speechprompt train"):`` holds ``out`` for one job (see the module docstring)."""

    def __init__(self, directory, command: str = "", notify: Optional[Callable[[str], None]] = None):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.command = command or " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])
        self.notify = notify or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._fd: Optional[int] = None
        self._created = False

    def acquire(self) -> "RunLock":
        self._created = not self.directory.exists()     # removed again at release if the job wrote nothing
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise DirectoryLockedError(
                    f"{self.directory}: another job is writing to this directory ({_describe(holder)}); wait for "
                    f"it to end, or give this job another output directory") from None
            # the holder before us may have removed the file between our open and our flock: retry on the new one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        left = _read(fd)
        if left.get("pid") is not None:
            self.notify(f"{self.directory}: taking over the lock left by a job that is no longer running "
                        f"({_describe(left)})")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": self.command}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode("utf-8"))
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)           # while still holding it: a waiter retries on a fresh file
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
        if self._created:
            try:
                self.directory.rmdir()         # a job refused before writing anything leaves no empty --out behind
            except OSError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

"""A full disk mid-save (atomic.py): the previous file stays whole, one line says so, the run resumes.

Two ways in: an injected ``ENOSPC`` (always), and a real 2 MiB tmpfs filled up under a `speechprompt train` run
(needs the right to mount, i.e. root in a container; skipped with the reason otherwise).
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from s3prl_speechprompt import atomic
from s3prl_speechprompt.errors import DiskFullError, is_user_error


def test_an_injected_enospc_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint_last.pt"
    atomic.atomic_write_bytes(target, b"old checkpoint")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(DiskFullError) as e:
        atomic.atomic_write_bytes(target, b"new checkpoint, larger")
    assert is_user_error(e.value) and e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert str(e.value).startswith(f"{target}: no space left") and "previous checkpoint_last.pt is intact" in str(e.value)
    assert target.read_bytes() == b"old checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pt"]
    with pytest.raises(DiskFullError, match="nothing was written"):
        atomic.atomic_write_text(tmp_path / "new.json", "{}")

    def broken(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomic.os, "fsync", broken)      # other OS errors pass through as they are
    with pytest.raises(OSError) as e:
        atomic.atomic_write_bytes(target, b"new")
    assert type(e.value) is OSError and e.value.errno == errno.EIO and target.read_bytes() == b"old checkpoint"


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", f"speechprompt-{uuid.uuid4().hex[:8]}", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here ({r.stderr.strip() or r.returncode}); the injected-ENOSPC "
                    f"test covers the write path")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_train_on_a_disk_that_fills_up_keeps_its_checkpoint_and_resumes_to_a_lone_runs_result(small_fs, tmp_path,
                                                                                            tiny_ulm_dir):
    import random
    import torch
    rng = random.Random(0)
    for name, n in (("train", 64), ("valid", 16)):
        (tmp_path / f"{name}.txt").write_text("".join(
            " ".join(str(rng.randrange(20)) for _ in range(rng.randrange(5, 15))) + f" <s> {rng.choice('ab')}\n"
            for _ in range(n)))
    args = ["--task", "ks", "--train", tmp_path / "train.txt", "--valid", tmp_path / "valid.txt", "--ulm", tiny_ulm_dir,
            "--valid-interval", "10", "--threads", "1"]

    def train(out, updates, *extra):
        return subprocess.run([sys.executable, "-m", "s3prl_speechprompt", "train", *map(str, args), "--out", str(out),
                               "--max-updates", str(updates), *extra], capture_output=True, text=True, timeout=600)

    run = small_fs / "run"
    assert train(run, 20).returncode == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (_free_bytes(small_fs) - 12288))     # room for small files, not for a checkpoint
    full = train(run, 60, "--resume")
    assert full.returncode == 2, full.stderr[-2000:]
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("speechprompt train: error: ") and "no space left on the device" in last, full.stderr[-2000:]
    assert "is intact" in last and "--resume" in last and "Traceback" not in full.stderr
    # the file that did not fit is whole: the checkpoint of the last validation that fitted (the run frees its stale
    # trained_task/ first, so an update may still be saved before the disk is full), or another file as it was
    failed = Path(last.split("error: ", 1)[1].split(": no space left", 1)[0])
    assert failed.parent == run
    if failed.name != "checkpoint_last.pt":
        assert failed.read_bytes() == before[failed.name] if failed.name in before else not failed.exists()
    saved = torch.load(run / "checkpoint_last.pt", weights_only=True)["progress"]["updates"]
    assert 20 <= saved < 60
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    filler.unlink()
    resumed = train(run, 60, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    alone = train(tmp_path / "alone", 60)
    assert alone.returncode == 0
    drop = ("exp", "seconds", "cpu_seconds")
    a, b = (json.loads(o.stdout.splitlines()[-1]) for o in (resumed, alone))
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    sa, sb = (torch.load(d / "prompt.pt", weights_only=True)["state_dict"] for d in (run, tmp_path / "alone"))
    assert all(sa[k].equal(sb[k]) for k in sa)

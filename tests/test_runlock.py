"""One job per output directory (s3prl_speechprompt/runlock.py): refusal naming the holder, stale-lock takeover."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from s3prl_speechprompt.errors import DirectoryLockedError, is_user_error
from s3prl_speechprompt.runlock import LOCK_NAME, RunLock

HOLD = """
import sys, time
from s3prl_speechprompt.runlock import RunLock
with RunLock(sys.argv[1], "holder-job --out x"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(tmp_path, seconds):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run"), str(seconds)], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_job_is_refused_naming_the_holder_and_gets_the_directory_once_it_ends(tmp_path):
    p = _holder(tmp_path, 30)
    try:
        with pytest.raises(DirectoryLockedError) as e:
            RunLock(tmp_path / "run", "second").acquire()
        msg = str(e.value)
        assert is_user_error(e.value)
        assert f"pid {p.pid} on {socket.gethostname()}" in msg and "holder-job --out x" in msg
        assert str(tmp_path / "run") in msg and "another output directory" in msg
    finally:
        p.terminate()
        p.wait()
    notices = []
    with RunLock(tmp_path / "run", "second", notify=notices.append) as lock:   # killed holder: lock is free
        held = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
        assert held["pid"] == os.getpid() and held["command"] == "second"
        assert lock._fd is not None
    assert notices and f"pid {p.pid}" in notices[0] and "no longer running" in notices[0]
    assert not (tmp_path / "run" / LOCK_NAME).exists()      # released: the file goes


def test_a_lock_file_left_by_a_dead_job_is_taken_over_with_a_notice(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "node7", "started": time.time() - 3600,
                                             "command": "speechprompt train --out run"}))
    notices = []
    with RunLock(run, "mine", notify=notices.append):
        pass
    assert len(notices) == 1 and "pid 999999 on node7" in notices[0] and "speechprompt train --out run" in notices[0]
    notices.clear()
    with RunLock(run, "again", notify=notices.append):      # a clean release leaves nothing to take over
        pass
    assert notices == []


def test_a_damaged_lock_file_is_taken_over_silently_and_release_is_idempotent(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_bytes(b"\x00\xff not json")
    notices = []
    lock = RunLock(run, "mine", notify=notices.append).acquire()
    lock.release()
    lock.release()
    assert notices == []


def test_the_same_process_cannot_take_its_own_directory_twice(tmp_path):
    with RunLock(tmp_path / "run", "first"):
        with pytest.raises(DirectoryLockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path / "run", "second").acquire()


# ------------------------------------------------------------------ through `speechprompt train`
def _unit_task(root, tiny_ulm_dir):
    """64 train / 16 dev utterances of random units (the tiny LM's 20), two classes: a few seconds of training."""
    import random
    rng = random.Random(0)
    paths = {}
    for name, n in (("train", 64), ("valid", 16)):
        lines = [" ".join(str(rng.randrange(20)) for _ in range(rng.randrange(5, 15))) + f" <s> {rng.choice('ab')}"
                 for _ in range(n)]
        paths[name] = root / f"{name}.txt"
        paths[name].write_text("\n".join(lines) + "\n")
    return ["--task", "ks", "--train", paths["train"], "--valid", paths["valid"], "--ulm", tiny_ulm_dir,
            "--max-updates", "60", "--valid-interval", "20", "--threads", "1"]


def _train(args, out, **kw):
    cmd = [sys.executable, "-m", "s3prl_speechprompt", "train", *map(str, args), "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(path, proc, seconds=120):
    end = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None and time.time() < end, f"{path} never appeared"
        time.sleep(0.05)


def _state(out):
    import torch
    return torch.load(out / "prompt.pt", map_location="cpu", weights_only=True)["state_dict"]


def test_two_train_jobs_on_one_out_the_second_is_refused_and_the_first_equals_a_lone_run(tmp_path, tiny_ulm_dir):
    import signal
    args = _unit_task(tmp_path, tiny_ulm_dir)
    first = _train(args, tmp_path / "run")
    _wait_for(tmp_path / "run" / LOCK_NAME, first)
    first.send_signal(signal.SIGSTOP)               # keep the first job mid-run while the second one starts
    try:
        second = _train(args, tmp_path / "run")
        out, err = second.communicate(timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("speechprompt train: error: ") and f"pid {first.pid}" in line and "Traceback" not in err
    assert out == ""
    out_first, err_first = first.communicate(timeout=600)
    assert first.returncode == 0, err_first[-2000:]
    alone = _train(args, tmp_path / "alone")
    out_alone, err_alone = alone.communicate(timeout=600)
    assert alone.returncode == 0, err_alone[-2000:]
    summary = {k: v for k, v in json.loads(out_first.splitlines()[-1]).items() if k not in ("exp", "seconds", "cpu_seconds")}
    lone = {k: v for k, v in json.loads(out_alone.splitlines()[-1]).items() if k not in ("exp", "seconds", "cpu_seconds")}
    assert summary == lone
    a, b = _state(tmp_path / "run"), _state(tmp_path / "alone")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_a_killed_train_job_leaves_a_lock_that_resume_takes_over_with_a_notice(tmp_path, tiny_ulm_dir):
    import signal
    args = _unit_task(tmp_path, tiny_ulm_dir)
    job = _train(args, tmp_path / "run")
    _wait_for(tmp_path / "run" / "checkpoint_last.pt", job)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert (tmp_path / "run" / LOCK_NAME).exists()
    resumed = _train([*args, "--resume"], tmp_path / "run")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    assert f"taking over the lock left by a job that is no longer running (pid {job.pid}" in err
    assert json.loads(out.splitlines()[-1])["updates"] == 60


def test_the_runner_refuses_a_second_training_job_on_a_held_expdir_before_writing_into_it(tmp_path):
    holder = _holder(tmp_path, 120)               # holds tmp_path/run, as a running `-m train` job would
    try:
        out = subprocess.run([sys.executable, "-m", "s3prl_speechprompt.s3prl_plugin.run_downstream", "-m", "train",
                              "-u", "fbank", "-d", "speechprompt_ks", "-p", str(tmp_path / "run"), "--device", "cpu"],
                             capture_output=True, text=True, timeout=600)
    finally:
        holder.terminate()
        holder.wait()
    assert out.returncode == 2, out.stderr[-2000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("speechprompt-run-downstream: error: ") and f"pid {holder.pid}" in line
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_NAME]    # nothing of the second job

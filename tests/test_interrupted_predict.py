"""An interrupted `speechprompt predict --out` (atomic.PartialLines): the output file is only ever complete; the same
command continues the partial file without duplicates; another job's partial file is not continued."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

from s3prl_speechprompt.atomic import PartialLines

PREDICT = [sys.executable, "-m", "s3prl_speechprompt", "predict"]


def test_partial_lines_keep_whole_groups_and_drop_a_torn_line(tmp_path):
    out = tmp_path / "p.jsonl"
    w = PartialLines(out, {"job": 1}, group=2)
    assert w.open() == 0
    w.write(["a1", "a2", "b1"])
    w._f.write(b'{"torn')                    # killed mid-line
    w.close()
    assert not out.exists()
    again = PartialLines(out, {"job": 1}, group=2)
    assert again.open() == 1                 # "a" complete; "b" had one of its two lines: redone
    again.write(["b1", "b2"])
    again.finish()
    assert out.read_text() == "a1\na2\nb1\nb2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]
    other = PartialLines(out, {"job": 1}, group=2)
    other.open()
    other.write(["x1", "x2"])
    other.close()
    assert PartialLines(out, {"job": 2}, group=2).open() == 0     # another job: starts over
    assert (tmp_path / "p.jsonl.partial").read_bytes() == b""


def test_a_killed_predict_is_continued_by_the_same_command_to_the_uninterrupted_output(tmp_path, tiny_engine_run):
    run, _ = tiny_engine_run
    rng = random.Random(1)
    units = tmp_path / "many.txt"
    units.write_text("".join(" ".join(str(rng.randrange(20)) for _ in range(rng.randrange(4, 12))) + " <s> a\n"
                             for _ in range(1500)))
    cmd = PREDICT + ["--ckpt", str(run), "--ckpt", str(run / "trained_task"), "--units", str(units),
                     "--batch-size", "1"]
    whole = subprocess.run(cmd + ["--out", str(tmp_path / "whole.jsonl")], capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = tmp_path / "p.jsonl"
    partial = tmp_path / "p.jsonl.partial"
    job = subprocess.Popen(cmd + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 300
    while not (partial.is_file() and partial.stat().st_size > 2000):
        assert job.poll() is None and time.time() < end, "predict ended before it could be interrupted"
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert not out.exists() and partial.is_file()
    done = len(partial.read_bytes().split(b"\n")) - 1
    again = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "continuing the interrupted" in again.stderr and " of 1500 utterances already predicted" in again.stderr
    assert out.read_text() == (tmp_path / "whole.jsonl").read_text()      # every line once, in order
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3000 and len({(r["file"], r["checkpoint"]) for r in lines}) == 3000 and done < 3000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.txt", "p.jsonl", "whole.jsonl"]

"""The embedded default's bookkeeping: test-accuracy counts, the Wilson interval, and ``--out`` reuse guards."""
from __future__ import annotations

import json

import pytest

from s3prl_speechprompt.commands.demo import _check_reuse, _count_correct, _wilson
from s3prl_speechprompt.errors import ConfigError


def test_count_correct_compares_labels_per_clip(tmp_path):
    (tmp_path / "p.txt").write_text("b _unknown_\na yes\nc no\n")
    (tmp_path / "t.txt").write_text("a yes\nb _silence_\nc no\n")
    assert _count_correct(tmp_path / "p.txt", tmp_path / "t.txt") == (2, 3)
    (tmp_path / "t.txt").write_text("a yes\nz no\n")
    with pytest.raises(ValueError, match="different clips"):
        _count_correct(tmp_path / "p.txt", tmp_path / "t.txt")


def test_wilson_interval_known_values():
    # Wilson (1927) score interval, z = 1.96: 70/120 -> [0.4939, 0.6676]; it stays inside [0, 1] at the edges
    low, high = _wilson(70, 120)
    assert low == pytest.approx(0.4939, abs=1e-4) and high == pytest.approx(0.6676, abs=1e-4)
    low, high = _wilson(120, 120)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.969, abs=1e-3)


def test_reuse_of_out_with_other_settings_is_refused(tmp_path):
    stamp = tmp_path / "ulm" / "demo_lm.json"
    stamp.parent.mkdir()
    stamp.write_text(json.dumps({"arch": "ulm_tiny", "updates": 300}))
    _check_reuse(stamp, {"arch": "ulm_tiny", "updates": 300}, lambda d: d)
    with pytest.raises(ConfigError, match="fresh --out"):
        _check_reuse(stamp, {"arch": "ulm_tiny", "updates": 900}, lambda d: d)
    with pytest.raises(ConfigError, match="unknown settings"):       # an LM without a stamp is not trusted
        _check_reuse(tmp_path / "missing.json", {"arch": "ulm_tiny"}, lambda d: d)

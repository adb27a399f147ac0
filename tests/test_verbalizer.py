"""Verbalizers: SpeechPrompt's released KS tables, every method's round trip, JSON shapes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from s3prl_speechprompt.cli import main
from s3prl_speechprompt.prompt.verbalizer import Verbalizer, build_verbalizer
from s3prl_speechprompt.ulm.dictionary import Dictionary
from s3prl_speechprompt.units.manifest import read_unit_file

from helpers import peer_dir

REPO = Path(__file__).resolve().parents[1]
UNIT_TYPES = ["hubert100", "cpc100"]
VOCAB = [str(i) for i in range(100)]


def _peer(unit_type):
    d = peer_dir(f"speechprompt-{unit_type}")
    if not (d / "ks" / "train.txt").is_file():
        pytest.skip(f"SpeechPrompt peer data {d / 'ks' / 'train.txt'} is absent (see shared/peer-data/SOURCE.md)")
    return d


@pytest.mark.parametrize("unit_type", UNIT_TYPES)
def test_freq_reproduces_speechprompt_table(unit_type):
    d = _peer(unit_type)
    recs = read_unit_file(d / "ks" / "train.txt")
    vocab = Dictionary.load(d / "dict.txt").units
    v = build_verbalizer("freq", [r.labels for r in recs], [r.units for r in recs], vocab)
    expected = json.loads((d / "verbal_ks.json").read_text())["KS"]
    assert v.to_dict()["codes"] == expected
    assert Verbalizer.load(d / "verbal_ks.json").codes == v.codes


@pytest.mark.parametrize("unit_type", UNIT_TYPES)
def test_cli_reproduces_speechprompt_file(unit_type, tmp_path):
    d = _peer(unit_type)
    out = tmp_path / "verbal.json"
    proc = subprocess.run(
        [sys.executable, "-m", "s3prl_speechprompt", "verbalize", "--train", str(d / "ks" / "train.txt"),
         "--dict", str(d / "dict.txt"), "--method", "freq", "--task-key", "KS", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "12 labels" in proc.stdout and "code length 1" in proc.stdout and str(out) in proc.stdout
    assert json.loads(out.read_text()) == json.loads((d / "verbal_ks.json").read_text())
    assert out.read_bytes() == (d / "verbal_ks.json").read_bytes()  # same layout too


def _cli_in_process(capsys, *flags):
    """The console script's parser, run() and error reporting, without paying for a new interpreter."""
    with pytest.raises(SystemExit) as done:
        main(["verbalize", *map(str, flags)], report_errors=True)
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def test_cli_without_dict_uses_seen_units(tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_text("3 10 3 <s> b\n10 2 <s> a\n", encoding="utf-8")
    out = tmp_path / "v.json"
    rc, stdout, stderr = _cli_in_process(capsys, "--train", train, "--verbalizer", "identity", "--out", out)
    assert rc == 0, stderr
    assert "no --dict" in stdout
    # seen units sorted numerically: 2, 3, 10
    assert Verbalizer.load(out).codes == {"a": ("2",), "b": ("3",)}


def test_cli_error_is_one_line(tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_text("".join(f"1 2 <s> {i}\n" for i in range(3)), encoding="utf-8")
    rc, _, stderr = _cli_in_process(capsys, "--train", train, "--out", tmp_path / "v.json")
    assert rc == 2 and stderr.count("\n") == 1 and stderr.startswith("speechprompt verbalize: error: ")
    assert "3 labels and only 2 units" in stderr and "--verbalizer multi" in stderr
    assert not (tmp_path / "v.json").exists()


def _toy():
    labels = [["2"], ["10"], ["2"], ["1"], ["2"], ["10"]]
    units = [["5", "7", "5"], ["7", "9"], ["5"], ["3"], ["9", "9", "9"], ["5"]]
    return labels, units


def test_freq_rule_and_unseen_units_follow_in_dict_order():
    labels, units = _toy()
    # label counts 2:3, 10:2, 1:1; unit counts 5:4, 9:4 (5 seen first), 7:2, 3:1
    v = build_verbalizer("freq", labels, units, VOCAB)
    assert v.codes == {"1": ("7",), "2": ("5",), "10": ("9",)}
    assert list(v.codes) == ["1", "2", "10"]  # natural label order on disk
    more = [[str(i)] for i in range(6)]
    v = build_verbalizer("freq", more, [["8"]], VOCAB)
    assert [v.codes[str(i)] for i in range(6)] == [("8",), ("0",), ("1",), ("2",), ("3",), ("4",)]


@pytest.mark.parametrize("method", ["freq", "random", "identity", "multi", "learnable"])
def test_encode_decode_round_trip(method):
    labels, units = _toy()
    v = build_verbalizer(method, labels, units, VOCAB, seed=3)
    assert v.method == method and v.code_length == 1
    seq = ["2", "1", "10", "2"]
    assert v.decode(v.encode(seq)) == seq
    assert len(set(v.codes.values())) == 3


def test_identity_random_details():
    labels, units = _toy()
    assert build_verbalizer("identity", labels, units, VOCAB).codes == {"1": ("0",), "2": ("1",), "10": ("2",)}
    a = build_verbalizer("random", labels, units, VOCAB, seed=1)
    assert a.codes == build_verbalizer("random", labels, units, VOCAB, seed=1).codes
    assert any(build_verbalizer("random", labels, units, VOCAB, seed=s).codes != a.codes for s in range(2, 6))
    chars = build_verbalizer("identity", [["b", "|", "a"]], [["1"]], VOCAB)
    assert chars.codes == {"a": ("0",), "b": ("1",), "|": ("2",)}


def test_multi_fits_1251_speakers_in_100_units():
    speakers = [[f"id{10001 + i}"] for i in range(1251)]
    v = build_verbalizer("multi", speakers, [["42", "42", "7"]], VOCAB)
    assert v.code_length == 2 and len(v.codes) == 1251
    assert len(set(v.codes.values())) == 1251
    # the most frequent (first-seen, all tied) speaker gets the two most frequent units' "00" digit
    assert v.codes["id10001"] == ("42", "42") and v.codes["id10002"] == ("42", "7")
    seq = ["id10500", "id11251", "id10001"]
    assert v.decode(v.encode(seq)) == seq
    assert build_verbalizer("multi", *_toy(), VOCAB).codes == build_verbalizer("freq", *_toy(), VOCAB).codes


def test_decode_unknown_and_partial_chunks():
    v = Verbalizer("multi", {"a": ("1", "2"), "b": ("2", "1")})
    assert v.decode(["2", "1", "3", "3", "1"]) == ["b", None, None]
    assert v.decode([]) == []


def test_encode_unknown_label_lists_known():
    v = Verbalizer("identity", {str(i): (str(i),) for i in range(30)})
    with pytest.raises(ValueError, match=r"no code for label 'x'; known labels: '0', '1'.*\(30 in total\)"):
        v.encode(["1", "x"])


@pytest.mark.parametrize("method", ["freq", "random", "identity", "learnable"])
def test_too_many_labels_suggests_multi(method):
    labels = [[str(i)] for i in range(101)]
    with pytest.raises(ValueError, match=r"101 labels and only 100 units.*--verbalizer multi"):
        build_verbalizer(method, labels, [["1"]], VOCAB)


def test_bad_inputs():
    with pytest.raises(ValueError, match="not in the unit vocabulary"):
        build_verbalizer("freq", [["a"]], [["100"]], VOCAB)
    with pytest.raises(ValueError, match="unknown verbalizer method 'kmeans'"):
        build_verbalizer("kmeans", [["a"]], [["1"]], VOCAB)
    with pytest.raises(ValueError, match="share the code"):
        Verbalizer("freq", {"a": ("1",), "b": ("1",)})
    with pytest.raises(ValueError, match="same length"):
        Verbalizer("multi", {"a": ("1",), "b": ("1", "2")})


def test_json_round_trip_and_speechprompt_shape(tmp_path):
    v = build_verbalizer("multi", [[str(i)] for i in range(150)], [["3"]], VOCAB)
    p = tmp_path / "v.json"
    v.save(p)
    d = json.loads(p.read_text())
    assert d["method"] == "multi" and d["code_length"] == 2 and d["codes"]["0"] == "3 3"
    assert Verbalizer.load(p) == v
    v.save(p, task_key="SID")
    assert list(json.loads(p.read_text())) == ["SID"]
    assert Verbalizer.load(p).codes == v.codes
    p.write_text(json.dumps({"KS": {"0": "53", "1": "93"}, "IC": {"0": "20 4 72"}}))
    assert Verbalizer.load(p, task_key="IC").codes == {"0": ("20", "4", "72")}
    with pytest.raises(ValueError, match="pass task_key"):
        Verbalizer.load(p)
    p.write_text(json.dumps({"method": "freq", "code_length": 2, "codes": {"0": "53"}}))
    with pytest.raises(ValueError, match=r"v\.json: code_length is 2 but the codes have 1"):
        Verbalizer.load(p)

"""Unit files are checked before any training: every unit a k-means index in the LM's dictionary, every bad
line named as ``file:line`` (all of them, up to 20 listed plus a count), for pretrain-ulm, train and evaluate."""
from __future__ import annotations

import random

import pytest

from s3prl_speechprompt.cli import main


def _cli(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv], report_errors=True)
    return e.value.code, capsys.readouterr().err


def _corpus(path, n=24, n_units=20, seed=0, labels=("yes", "no")):
    rng = random.Random(seed)
    lines = [" ".join(str(rng.randrange(n_units)) for _ in range(rng.randint(4, 9))) + f" <s> {labels[i % 2]}"
             for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return lines


def test_pretrain_refuses_symbols_that_are_not_unit_indices(tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_text("1 2 3 <s> yes\nfoo bar <s> no\n4 <unk> 5 <s> no\n\n7 -1 <s> yes\n6 6 <s> no\n")
    code, err = _cli(capsys, "pretrain-ulm", "--train", train, "--out", tmp_path / "lm", "--max-updates", "1")
    assert code == 2
    assert f"{train}: 3 of 5 lines have unit symbols that are not k-means unit indices" in err
    assert f"{train}:2: 'foo', 'bar' are not integer units" in err
    assert f"{train}:3: '<unk>' is not an integer unit" in err and f"{train}:5: '-1' is not" in err
    assert f"{train}:6" not in err
    assert not (tmp_path / "lm").exists()                       # stopped before anything was trained or written


def test_many_bad_lines_are_listed_up_to_20_and_counted(tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_text("".join(f"{i} x{i} <s> a\n" for i in range(25)) + "1 2 <s> b\n")
    code, err = _cli(capsys, "pretrain-ulm", "--train", train, "--out", tmp_path / "lm")
    assert code == 2 and "25 of 26 lines" in err and "... and 5 more" in err
    assert f"{train}:20:" in err and f"{train}:21:" not in err


def test_malformed_lines_are_all_reported(tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_text("1 2 <s> a\n1 2 a\n<s> b\n3 <s> a <s> b\n")
    code, err = _cli(capsys, "pretrain-ulm", "--train", train, "--out", tmp_path / "lm")
    assert code == 2 and f"{train}: 3 malformed lines" in err
    assert all(f"{train}:{n}:" in err for n in (2, 3, 4))


def test_pretrain_with_dict_refuses_units_outside_it(tmp_path, capsys):
    train, vocab = tmp_path / "train.txt", tmp_path / "dict.txt"
    vocab.write_text("".join(f"{u} 1\n" for u in range(10)))
    train.write_text("1 2 3 <s> yes\n1 12 07 <s> no\n9 9 <s> no\n")
    code, err = _cli(capsys, "pretrain-ulm", "--train", train, "--dict", vocab, "--out", tmp_path / "lm")
    assert code == 2
    assert "outside the LM's dictionary (dict.txt: 10 units, 0..9" in err
    assert f"{train}:2: units 12, 07 not in the dictionary" in err and f"{train}:3" not in err


def test_train_and_evaluate_check_units_against_the_lm(tiny_ulm_dir, tmp_path, capsys):
    train, dev = tmp_path / "train.txt", tmp_path / "dev.txt"
    lines = _corpus(train)
    _corpus(dev, n=6, seed=1)
    bad = lines[:]
    bad[2] = "1 25 3 <s> yes"                                   # the tiny LM has units 0..19
    bad[5] = "<pad> 4 <s> no"
    (tmp_path / "bad_train.txt").write_text("\n".join(bad) + "\n")
    code, err = _cli(capsys, "train", "--task", "ks", "--train", tmp_path / "bad_train.txt", "--valid", dev,
                     "--ulm", tiny_ulm_dir, "--out", tmp_path / "exp_bad", "--max-updates", "1", "--threads", "1")
    assert code == 2 and f"bad_train.txt:6: '<pad>' is not an integer unit" in err
    (tmp_path / "bad_train.txt").write_text("\n".join(bad[:5] + lines[5:]) + "\n")
    code, err = _cli(capsys, "train", "--task", "ks", "--train", tmp_path / "bad_train.txt", "--valid", dev,
                     "--ulm", tiny_ulm_dir, "--out", tmp_path / "exp_bad", "--max-updates", "1", "--threads", "1")
    assert code == 2 and "bad_train.txt:3: unit 25 not in the dictionary" in err and "0..19" in err
    assert not any((tmp_path / "exp_bad").glob("*.pt"))

    code, _ = _cli(capsys, "train", "--task", "ks", "--train", train, "--valid", dev, "--ulm", tiny_ulm_dir,
                   "--out", tmp_path / "exp", "--max-updates", "1", "--valid-interval", "1", "--threads", "1")
    assert code == 0
    test = tmp_path / "test.txt"
    test.write_text("1 2 <s> yes\n3 99 4 <s> no\n5 x <s> no\n")
    code, err = _cli(capsys, "evaluate", "--exp", tmp_path / "exp", "--split", "test", test, "--threads", "1")
    assert code == 2 and f"{test}:3: 'x' is not an integer unit" in err
    test.write_text("1 2 <s> yes\n3 99 4 <s> no\n")
    code, err = _cli(capsys, "evaluate", "--exp", tmp_path / "exp", "--split", "test", test, "--threads", "1")
    assert code == 2 and f"{test}:2: unit 99 not in the dictionary" in err
    assert not (tmp_path / "exp" / "test_predict.txt").exists()

"""Unit files: SpeechPrompt's `units <s> labels` lines and our TSV manifest."""
import pytest

from s3prl_speechprompt.units.manifest import UnitRecord, read_unit_file, write_unit_manifest


def test_read_speechprompt_format(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("71 12 57 <s> 9\n\n71 93 20 <s> 1 8 20\n", encoding="utf-8")
    recs = read_unit_file(p)
    assert recs == [UnitRecord("train-1", ("71", "12", "57"), ("9",)),
                    UnitRecord("train-3", ("71", "93", "20"), ("1", "8", "20"))]


def test_tsv_round_trip_keeps_strings(tmp_path):
    recs = [UnitRecord("a/b.wav", ("071", "12"), ("H", "I", "|", "Y", "O")),
            UnitRecord("c", ("5",), ())]
    p = tmp_path / "sub" / "m.tsv"
    write_unit_manifest(p, recs)
    assert p.read_text(encoding="utf-8").splitlines()[0] == "a/b.wav\t071 12\tH I | Y O"
    assert read_unit_file(p) == recs
    assert [f.name for f in p.parent.iterdir()] == ["m.tsv"]  # no temp file left behind


@pytest.mark.parametrize("line, why", [
    ("71 12 57 9", "no '<s>'"),
    ("<s> 9", "no units"),
    ("71 <s> 12 <s> 9", "2 '<s>' separators"),
])
def test_malformed_speechprompt_line_names_file_and_line(tmp_path, line, why):
    p = tmp_path / "bad.txt"
    p.write_text("71 12 <s> 9\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as e:
        read_unit_file(p)
    msg = str(e.value)
    assert f"{p}:2" in msg and why in msg and repr(line) in msg


def test_malformed_tsv_line(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("a\t1 2\t3\nb\t\t3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv:2: empty units"):
        read_unit_file(p)
    p.write_text("a\t1 2\t3\nb 1 2 <s> 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv:2: 1 tab-separated fields, expected 3"):
        read_unit_file(p)


def test_write_rejects_bad_records(tmp_path):
    with pytest.raises(ValueError, match="record 0 .*no units"):
        write_unit_manifest(tmp_path / "m.tsv", [UnitRecord("x", (), ("1",))])
    with pytest.raises(ValueError, match="contains whitespace"):
        write_unit_manifest(tmp_path / "m.tsv", [UnitRecord("x", ("1 2",), ())])
    assert not (tmp_path / "m.tsv").exists()

"""Sequence-generation tasks (ASR, SF): metrics against SUPERB's code, synthetic corpora through s3prl's readers,
long sequences in the unit LM, the length analysis, and s3prl's real runner end to end on CPU.

The runner tests run ``python -m s3prl_speechprompt.s3prl_plugin.run_downstream`` in subprocesses (s3prl's main()
patches builtins globally) with ``-u fbank``, k-means fitted on the synthetic training split and a tiny random unit
LM (conftest's ``seq_ulm``). "Untrained" = the same pipeline with learning rate 0 (the LM as built, separator and
prompt at their initial values). The runner tests train FT-LM: prompt tuning a *random* 64-wide LM falls into repetition
loops within CI time (measured in docs/sequence_tasks.md), so it does not reliably beat the untrained prompt.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import read_pairs, record_outcome, run_runner, seed_offset, train_and_untrained
from s3prl_speechprompt import compat

compat.apply()


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------

def _toks(text):
    from s3prl_speechprompt.tasks.sequence import text_to_tokens
    return text_to_tokens(text)


def test_asr_error_rates_hand_computed():
    from s3prl_speechprompt.tasks.asr import error_rates

    # ref "THE CAT" (7 tokens incl. |, 2 words); hyp "THE BAT": 1 char edit, 1 word edit
    assert error_rates([_toks("THE BAT")], [_toks("THE CAT")]) == pytest.approx({"wer": 50.0, "cer": 100 / 7})
    # corpus level: (1 + 2) word edits / (2 + 1) ref words; chars (1 + 3) / (7 + 3)
    r = error_rates([_toks("THE BAT"), _toks("")], [_toks("THE CAT"), _toks("DOG")])
    assert r == pytest.approx({"wer": 100 * 2 / 3, "cer": 100 * 4 / 10})
    # an undecodable label (None) is one wrong character
    assert error_rates([("D", None, "G")], [_toks("DOG")])["cer"] == pytest.approx(100 / 3)
    with pytest.raises(ValueError):
        error_rates([_toks("A")], [])


def test_asr_error_rates_match_superb_code():
    from s3prl.downstream.asr.expert import DownstreamExpert, token_to_word
    from s3prl.downstream.ctc import metric

    from s3prl_speechprompt.tasks.asr import error_rates

    refs = ["HELLO WORLD", "IT'S A SMALL DOG", "GO", "RED BLUE GREEN"]
    hyps = ["HELO WORLD", "ITS A SMALL DOG HERE", "NO", "REDBLUE GREEN"]
    ours = error_rates([_toks(h) for h in hyps], [_toks(r) for r in refs])
    # SUPERB's ASR expert: tokens as "H E L L O | W O R L D", words via token_to_word
    tok = [" ".join(_toks(x)) for x in hyps], [" ".join(_toks(x)) for x in refs]
    uer, wer = DownstreamExpert._compute_metrics(None, tok[0], [token_to_word(t).split() for t in tok[0]],
                                                 tok[1], [token_to_word(t).split() for t in tok[1]])
    assert ours["wer"] == pytest.approx(wer) and ours["cer"] == pytest.approx(uer)
    # s3prl's ctc metric (fractions, on strings: a space is a character like |)
    assert ours["wer"] == pytest.approx(100 * metric.wer(hyps, refs))
    assert ours["cer"] == pytest.approx(100 * metric.cer(hyps, refs))


def test_sf_metrics_hand_computed_and_superb():
    from s3prl.downstream.ctc import metric

    from s3prl_speechprompt.tasks.sf import slot_metrics, tokens_to_superb_string

    ref = ("P", "L", "A", "Y", "|", "B-artist", "A", "D", "E", "L", "E", "E-artist", "|", "I", "N", "|",
           "B-city", "P", "A", "R", "I", "S", "E-city")
    assert tokens_to_superb_string(ref) == "PLAY B-artist ADELE E-artist IN B-city PARIS E-city"
    ref_s = tokens_to_superb_string(ref)
    # hyp 1: artist right (value ADELA: 1 char edit of 5), city missing -> P 1, R 1/2, F1 2/3
    # hyp 2: exact -> F1 1; slot-value CER over 4 ref values: (1 + 5 + 0 + 0) / (5 + 5 + 5 + 5)
    hyp1 = "PLAY B-artist ADELA E-artist IN PARIS"
    res = slot_metrics([hyp1, ref_s], [ref_s, ref_s])
    assert res["slot_type_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert res["slot_value_cer"] == pytest.approx(6 / 20)
    for name in ("slot_type_f1", "slot_value_cer", "slot_value_wer", "wer", "cer"):
        assert res[name] == pytest.approx(getattr(metric, name)([hyp1, ref_s], [ref_s, ref_s]))
    # no slot on either side: F1 1 (SUPERB's rule)
    assert slot_metrics(["HELLO"], ["HELLO"])["slot_type_f1"] == 1.0
    assert tokens_to_superb_string(("A", None, "|", "B")) == "A* B"


# ---------------------------------------------------------------------------------------------
# synthetic corpora through s3prl's own parsers
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sf_corpus(tmp_path_factory):
    from s3prl_speechprompt.synth.seq_corpora import make_sf

    out = tmp_path_factory.mktemp("synth_sf")
    return out, make_sf(out, seed=seed_offset(), texts=(80, 12, 12), speakers=(2, 1, 1), templates=4, progress=False)


def test_asr_corpus_reader(asr_corpus):
    from s3prl_speechprompt.tasks.base import get_task, read_item_audio

    out, summary = asr_corpus
    root = out / "LibriSpeech"
    assert (root / "SPEAKERS.TXT").is_file()
    task = get_task("asr")(libri_root=str(root))
    train = task.read_split("train")
    assert len(train) == 160 and len(task.read_split("test")) == 24
    spk, chap, utt = train[0].id.split("-")
    assert Path(train[0].wav_path).suffix == ".flac" and Path(train[0].wav_path).parent.name == chap
    trans = (Path(train[0].wav_path).parent / f"{spk}-{chap}.trans.txt").read_text().splitlines()
    text = dict(line.split(" ", 1) for line in trans)[train[0].id]
    assert task.label_string(train[0].labels) == text and "|" in train[0].labels or " " not in text
    assert set(t for it in train for t in it.labels) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ'|")
    longest = max(len(it.labels) for it in train)
    assert task.max_label_tokens == -(-longest * 5 // 4) + 4
    assert read_item_audio(train[0]).ndim == 1
    with pytest.raises(FileNotFoundError, match="synth asr"):
        get_task("asr")(libri_root=str(out / "nowhere")).read_split("train")


def test_sf_corpus_reader_matches_superb_encoder(sf_corpus):
    from s3prl.downstream.ctc.text import CharacterTextSlotEncoder

    from s3prl_speechprompt.tasks.base import get_task
    from s3prl_speechprompt.tasks.sf import CHARACTERS

    out, summary = sf_corpus
    root = out / "SNIPS"
    task = get_task("sf")(path=str(root), train_speakers=["Ivy", "Joanna"], valid_speakers=["Aditi"],
                          test_speakers=["Brian"])
    train = task.read_split("train")
    assert len(train) == 160 and {it.id.split("-")[0] for it in train} == {"Ivy", "Joanna"}
    assert len(task.read_split("dev")) == 12 and task.read_split("dev")[0].id.startswith("Aditi-snips-valid-")
    # SUPERB's encoder loaded from files, the way its snips.yaml does (character.txt = space, A-Z, ')
    vocab = out / "character.txt"
    vocab.write_text("\n".join(CHARACTERS) + "\n")
    superb = CharacterTextSlotEncoder.load_from_file(str(vocab), str(root / "slots.txt"))
    lines = dict(line.split(" ", 1) for line in (root / "all.iob.snips.txt").read_text().splitlines())
    for it in train[:20]:
        assert task.label_string(it.labels) == superb.decode(superb.encode(lines[it.id]))
    assert any(t.startswith("B-") for t in train[0].labels)


# ---------------------------------------------------------------------------------------------
# long sequences: positions past the pretrained length, KV-cached greedy decoding
# ---------------------------------------------------------------------------------------------

def test_positions_past_pretrained_length_and_cached_decoding():
    from s3prl_speechprompt.prompt.decode import decode
    from s3prl_speechprompt.prompt.prompted import PromptConfig, PromptedULM
    from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM, sinusoidal_positions

    torch.manual_seed(0)
    lm = UnitLM(ULMConfig.from_arch("ulm_tiny", 24, max_positions=16))
    # sinusoids are computed on the fly: position 5000 is finite and distinct from 50
    pos = sinusoidal_positions(torch.tensor([[50, 5000]]), 64, 1)
    assert torch.isfinite(pos).all() and not torch.allclose(pos[0, 0], pos[0, 1])
    model = PromptedULM(lm, PromptConfig(prompt_length=4)).eval()
    sources = [[4 + (i * 7) % 20 for i in range(40)], [4 + (i * 3) % 20 for i in range(25)]]  # > max_positions
    cached = decode(model.logits_fn(), sources, 30, use_cache=True)
    full = decode(model.logits_fn(), sources, 30, use_cache=False)
    assert cached.tokens == full.tokens
    assert all(len(o) <= 30 for o in cached.tokens)


# ---------------------------------------------------------------------------------------------
# analyze-length
# ---------------------------------------------------------------------------------------------

def _write_run(d: Path, pairs, split="test"):
    d.mkdir(parents=True)
    (d / f"{split}_truth.txt").write_text("".join(f"{u} {r}\n" for u, r, _ in pairs))
    (d / f"{split}_predict.txt").write_text("".join(f"{u} {h}\n" for u, _, h in pairs))


def test_analysis_buckets_and_tag_tokens(tmp_path):
    from s3prl_speechprompt import analysis

    assert analysis.tokenize("GO B-city PARIS E-city") == \
        ["G", "O", " ", "B-city ", "P", "A", "R", "I", "S", " E-city"]
    _write_run(tmp_path / "a", [("u1", "AB", "AB"), ("u2", "ABCD", "ABXD"), ("u3", "ABCDEFGH", "")])
    run = analysis.Run.load(tmp_path / "a")
    buckets = analysis.cer_by_length([run], edges=[0, 3, 6, 10])
    assert [b.cer["a"] for b in buckets] == pytest.approx([0.0, 25.0, 100.0])
    assert [b.n["a"] for b in buckets] == [1, 1, 1]
    assert analysis.overall_cer(run) == pytest.approx(100 * 9 / 14)
    assert analysis.bucket_edges([1, 2, 3, 4, 5, 6], 3) == [1, 3, 5, 7]


@pytest.mark.slow
def test_analyze_length_cli(tmp_path, capsys):
    from s3prl_speechprompt.cli import main

    _write_run(tmp_path / "pt", [("u1", "AB", "AB"), ("u2", "ABCD", "ABXD"), ("u3", "ABCDEFGH", "ABC")])
    _write_run(tmp_path / "ftlm", [("u1", "AB", "AX"), ("u2", "ABCD", "ABCD"), ("u3", "ABCDEFGH", "ABCDEFGH")])
    png = tmp_path / "plot.png"
    with pytest.raises(SystemExit) as e:
        main(["analyze-length", str(tmp_path / "pt"), str(tmp_path / "ftlm"), "--edges", "0,3,6,10",
              "--plot", str(png)])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "pt" in out and "ftlm" in out and "6-9" in out and "62.50" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_beam_search_output_is_well_formed():
    from s3prl_speechprompt.prompt.decode import decode
    from s3prl_speechprompt.prompt.prompted import PromptConfig, PromptedULM
    from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM

    torch.manual_seed(1)
    model = PromptedULM(UnitLM(ULMConfig.from_arch("ulm_tiny", 12)), PromptConfig(prompt_length=2)).eval()
    sources = [[4, 5, 6, 7, 8], [9, 10, 4], [11, 4, 5, 6, 7, 8, 9, 10]]
    wide = decode(model.logits_fn(), sources, 6, beam_size=4).tokens      # width 1 = greedy: tests/test_decode.py
    assert len(wide) == 3 and all(len(w) <= 6 and all(0 <= t < 12 and t != 2 for t in w) for w in wide)


# ---------------------------------------------------------------------------------------------
# s3prl's real runner, CPU, -u fbank, tiny random unit LM
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_runner_asr_ftlm_beats_untrained_and_length_analysis(asr_corpus, seq_ulm, tmp_path, capsys):
    from s3prl.downstream.asr.expert import DownstreamExpert

    from s3prl_speechprompt.cli import main

    out_dir, _ = asr_corpus
    datarc = {"libri_root": str(out_dir / "LibriSpeech"), "batch_size": 8, "eval_batch_size": 24, "num_workers": 0}
    exp, trained, exp0, untrained = train_and_untrained(tmp_path, "speechprompt_asr_ftlm", "asr", "ftlm", seq_ulm,
                                                        datarc, steps=300, lr=3.0e-3)
    record_outcome("asr_ftlm", wer=trained["wer"], cer=trained["cer"], untrained_wer=untrained["wer"],
                   untrained_cer=untrained["cer"])
    # 5 runs, seeds 0-4 x thread/kernel settings (docs/testing.md): CER 56-98 vs untrained 292-368 (ratio <= 0.30),
    # so CER < 0.5 x untrained holds with margin; WER 60-96 vs untrained 100 and CER vs 100 (98.0 in one run) did not
    assert trained["cer"] < 0.5 * untrained["cer"], (trained, untrained)
    # the logged figures are SUPERB's: recompute them with the ASR expert's own _compute_metrics from the files
    hyps, refs = read_pairs(exp)
    tok = lambda s: " ".join(s.replace(" ", "|"))  # noqa: E731
    uer, wer = DownstreamExpert._compute_metrics(None, [tok(h) for h in hyps], [h.split() for h in hyps],
                                                 [tok(r) for r in refs], [r.split() for r in refs])
    assert trained["wer"] == pytest.approx(wer, abs=1e-3) and trained["cer"] == pytest.approx(uer, abs=1e-3)

    png = tmp_path / "cer_vs_length.png"
    with pytest.raises(SystemExit) as e:
        main(["analyze-length", str(exp), str(exp0), "--names", "ftlm,untrained", "--bins", "3", "--plot", str(png)])
    assert e.value.code == 0
    table = capsys.readouterr().out
    assert "ftlm" in table and "untrained" in table and "all" in table
    all_row = [ln for ln in table.splitlines() if ln.strip().startswith("all")][0].split()
    assert float(all_row[2]) == pytest.approx(trained["cer"], abs=0.01)   # 'all' bucket = the logged CER
    assert png.read_bytes()[:4] == b"\x89PNG"
    with capsys.disabled():
        print("\n" + table)


@pytest.mark.slow
def test_runner_sf_ftlm_beats_untrained(sf_corpus, seq_ulm, tmp_path):
    """FT-LM learns to emit the slot tags: its slot-type F1 is well above the untrained model's (which emits none).

    Only F1 is asserted. The slot *values* are not recognised by a 64-wide random LM in 300 steps: slot-value CER stays
    near 1.0, on either side of the untrained model's 1.0 (1.031 with the suite's seeds, on this machine and on a
    clean one; 0.929 with another seed), so "CER below untrained" was a coin toss. The CER figure is still checked
    against SUPERB's code.
    """
    from s3prl.downstream.ctc import metric

    out_dir, _ = sf_corpus
    datarc = {"path": str(out_dir / "SNIPS"), "train_speakers": "[Ivy, Joanna]", "valid_speakers": "[Aditi]",
              "test_speakers": "[Brian]", "batch_size": 8, "eval_batch_size": 12, "num_workers": 0}
    exp, trained, exp0, untrained = train_and_untrained(tmp_path, "speechprompt_sf_ftlm", "sf", "ftlm", seq_ulm,
                                                        datarc, steps=300, lr=3.0e-3)
    record_outcome("sf_ftlm", slot_type_f1=trained["slot_type_f1"], slot_value_cer=trained["slot_value_cer"],
                   untrained_slot_type_f1=untrained["slot_type_f1"],
                   untrained_slot_value_cer=untrained["slot_value_cer"])
    # measured (python benchmarks/outcome_spread.py --tests sf_ftlm; docs/testing.md), seeds 0/2/4, AVX-512 and AVX2
    # kernels: slot_type_f1 0.917 / 0.736 / 0.889 vs 0.0 untrained (threshold 0.25: margin >= 0.48);
    # slot-value CER 1.031 / 1.006 / 0.929 vs 1.0 untrained (below it in 1 of 3 runs: not asserted)
    assert trained["slot_type_f1"] >= untrained["slot_type_f1"] + 0.25, (trained, untrained)
    hyps, refs = read_pairs(exp)
    assert trained["slot_type_f1"] == pytest.approx(metric.slot_type_f1(hyps, refs), abs=1e-5)
    assert trained["slot_value_cer"] == pytest.approx(metric.slot_value_cer(hyps, refs), abs=1e-5)


@pytest.mark.parametrize("task", ["asr", "sf"])
def test_blstm_ctc_baseline_through_runner(task, asr_corpus, sf_corpus, tmp_path):
    """`-d speechprompt_<task>_lstm` (SUPERB's BLSTM-CTC head on the task's ctc_vocabulary()) trains and evaluates."""
    import yaml
    from importlib import resources

    root, _ = asr_corpus if task == "asr" else sf_corpus
    name = f"speechprompt_{task}_lstm"
    cfg = yaml.safe_load((resources.files("s3prl_speechprompt.downstream_configs") / f"{name}.yaml").read_text())
    cfg["runner"].update(total_steps=2, log_step=1, eval_step=2, save_step=2, eval_dataloaders=["dev"])
    de = cfg["downstream_expert"]
    de["modelrc"]["RNNs"]["dim"] = [64, 64]                 # SUPERB's 1024 is 42M parameters: too slow for CI
    de["modelrc"]["project_dim"] = 64
    de["datarc"].update(batch_size=4, eval_batch_size=4, num_workers=0)
    if task == "asr":
        de["datarc"].update(libri_root=str(next(root.rglob("train-clean-100")).parent),
                            train=["train-clean-100"], dev=["dev-clean"], test=["test-clean"])
    else:
        de["datarc"]["path"] = str(next(root.rglob("all.iob.snips.txt")).parent)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "exp"
    run_runner("-m", "train", "-u", "fbank", "-d", name, "-c", path, "-p", exp, "--device", "cpu", cwd=tmp_path)
    run_runner("-m", "evaluate", "-t", "test", "-e", exp / "states-2.ckpt", "--device", "cpu", cwd=tmp_path)
    metric = "wer" if task == "asr" else "slot_type_f1"
    assert f"test {metric}" in (exp / "log.log").read_text()
    info = json.loads((exp / "speechprompt_info.json").read_text())
    assert info["method"] == "lstm"

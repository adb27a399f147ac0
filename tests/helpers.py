"""What several test files share, in one module (fixtures are in conftest.py): imported as ``from helpers import ...``
(tests/ is on ``sys.path`` when pytest runs, as for conftest).

- environment: where peer data lives, the seed offset / thread count of the outcome tests, ``record_outcome``,
  the environment of runner subprocesses, fairseq as a test oracle;
- s3prl's runner: :func:`run_runner` (a subprocess) and :func:`run_inprocess`;
- a tone-class corpus of the csv task and its tiny config, for fast in-process runner tests;
- the classification pipeline on synthetic corpora: the KS datarc, random unit LMs, fbank units and a tiny LM
  pretrained on them, packaged configs shrunk, a runner train + evaluate;
- sequence tasks (ASR, SF): configs, the expert's logged scores, predictions read back.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]
PEER_DATA = REPO.parent / "shared" / "peer-data"
RUNNER = [sys.executable, "-m", "s3prl_speechprompt.s3prl_plugin.run_downstream"]

# fairseq 0.12 on numpy 2 needs np.compat.long; patched inside the oracle's own process only
_FAIRSEQ_TRAIN = """
import sys, types, numpy as np
np.compat = types.SimpleNamespace(long=np.int64)
from fairseq_cli.train import cli_main
sys.argv[0] = 'fairseq-train'
cli_main()
"""


def peer_dir(name: str) -> Path:
    d = PEER_DATA / name
    if not d.is_dir():
        pytest.skip(f"peer data {d} is absent (it lives in ../shared next to the repository)")
    return d


def seed_offset() -> int:
    """``SPEECHPROMPT_TEST_SEED`` (default 0), added to every seed of the outcome tests (synthetic corpora, k-means,
    unit LMs, the runner's ``--seed``): benchmarks/outcome_spread.py reruns them under other seeds to measure how
    far each asserted outcome moves. 0 reproduces the seeds the thresholds were set with."""
    return int(os.environ.get("SPEECHPROMPT_TEST_SEED", "0"))


def thread_count() -> int:
    """``SPEECHPROMPT_TEST_THREADS`` (default 1): torch/OMP threads of the outcome tests' training, in process and in
    runner subprocesses (another thread count changes float summation order, as another machine does)."""
    return int(os.environ.get("SPEECHPROMPT_TEST_THREADS", "1"))


def runner_seed_args() -> list:
    """``--seed`` for s3prl's runner: its own default (1337) shifted by :func:`seed_offset`."""
    return ["--seed", str(1337 + seed_offset())]


def record_outcome(name: str, **metrics) -> None:
    """Print an outcome test's measured figures and, if ``SPEECHPROMPT_OUTCOMES`` names a file, append them there
    as one JSON line (with the seed offset and thread count) for benchmarks/outcome_spread.py to tabulate."""
    print(f"outcome {name}: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
    path = os.environ.get("SPEECHPROMPT_OUTCOMES")
    if path:
        row = {"test": name, "seed": seed_offset(), "threads": thread_count(),
               "cpu": os.environ.get("ATEN_CPU_CAPABILITY", "default"), "metrics": metrics}
        with open(path, "a") as f:           # one short append per line: safe across xdist workers
            f.write(json.dumps(row) + "\n")


def runner_env() -> dict:
    """Environment for runner subprocesses: one OMP thread (tiny per-utterance ops only add contention
    on 2 cores; :func:`thread_count` to measure another count), no warnings."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(thread_count())
    env["PYTHONWARNINGS"] = "ignore"
    return env


def fairseq_env() -> dict:
    env = dict(os.environ)
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"   # fairseq 0.12 calls torch.load without weights_only
    env["PYTHONWARNINGS"] = "ignore"
    return env


def require_fairseq():
    try:
        import fairseq  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"fairseq oracle not importable ({e}); install fairseq-fixed==0.12.3.1 (see .ci/run)")


def write_unit_corpus(path: Path, n: int, n_units: int = 20, seed: int = 0, max_len: int = 30) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            f.write(" ".join(str(rng.randrange(n_units)) for _ in range(rng.randint(5, max_len))) + "\n")


def train_fairseq_lm(workdir: Path, *extra: str, n_units: int = 20) -> Path:
    """Preprocess a random unit corpus and train a tiny transformer_lm for 3 updates with fairseq's CLI."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_unit_corpus(workdir / "train.txt", 200, n_units)
    (workdir / "dict.txt").write_text("".join(f"{u} 1\n" for u in range(n_units)))
    py, env = sys.executable, fairseq_env()
    subprocess.run([py, "-m", "fairseq_cli.preprocess", "--only-source", "--srcdict", str(workdir / "dict.txt"),
                    "--trainpref", str(workdir / "train.txt"), "--destdir", str(workdir / "bin"), "--workers", "1"],
                   check=True, env=env, capture_output=True)
    ck = workdir / "ck"
    subprocess.run([py, "-c", _FAIRSEQ_TRAIN, str(workdir / "bin"), "--task", "language_modeling",
                    "--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim", "32",
                    "--decoder-input-dim", "32", "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "64",
                    "--decoder-attention-heads", "4", "--share-decoder-input-output-embed",
                    "--tokens-per-sample", "128", "--sample-break-mode", "eos", "--max-tokens", "512",
                    "--optimizer", "adam", "--lr", "1e-3", "--max-update", "3", "--save-dir", str(ck),
                    "--no-epoch-checkpoints", "--cpu", "--log-format", "simple", "--disable-validation", *extra],
                   check=True, env=env, capture_output=True)
    (ck / "dict.txt").write_text((workdir / "bin" / "dict.txt").read_text())
    return ck

# ---------------------------------------------------------------------------------------------- s3prl's runner
def run_in_group(cmd, cwd=None, env=None, timeout=3600, merge_stderr=False):
    """Run ``cmd`` in its own process group and kill the whole group if it hangs past ``timeout`` s (the test then
    fails with the output's tail). Returns (returncode, stdout, stderr); ``merge_stderr``: stderr goes into stdout."""
    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout} s: {' '.join(map(str, cmd))}\n{out[-4000:]}\n{(err or '')[-4000:]}")
    return proc.returncode, out, err or ""


def run_runner(*args, cwd=None, extra_env=None, timeout=3600) -> str:
    """s3prl's runner through our wrapper in a subprocess (its main() patches builtins globally); returns stdout.
    The checkout is imported first; ``extra_env`` is added to :func:`runner_env`. The timeout only guards against
    a hang (a 300-step run takes ~2 min on 2 idle cores, but took > 30 min on a 2-core machine at load 60)."""
    env = runner_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra_env or {})
    rc, out, err = run_in_group(RUNNER + list(args), cwd=cwd, env=env, timeout=timeout)
    assert rc == 0, (out[-2000:], err[-4000:])
    return out


# ---------------------------------------------------------------------------------------------- tone-class csv corpus
CSV_UNITS = 20          # k-means clusters = units of the tiny LM (conftest's tiny_ulm_dir)
CLASSES = {"low": 300.0, "mid": 900.0, "high": 2500.0}


def tone(freq: float, seconds: float = 0.4, sr: int = 16000, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def make_csv_corpus(root: Path, per_class=(6, 2, 2)) -> Path:
    """Tone classes in the csv task's layout: wav/<class>_<split>_<n>.wav + all.csv (path,label,split)."""
    (root / "wav").mkdir(parents=True, exist_ok=True)
    rows = ["path,label,split"]
    for c, (label, freq) in enumerate(CLASSES.items()):
        for split, n in zip(("train", "dev", "test"), per_class):
            for i in range(n):
                name = f"wav/{label}_{split}_{i}.wav"
                sf.write(root / name, tone(freq * (1 + 0.03 * i), seed=100 * c + i), 16000)
                rows.append(f"{name},{label},{split}")
    (root / "all.csv").write_text("\n".join(rows) + "\n")
    return root / "all.csv"


def write_csv_config(path: Path, ulm: Path, cache: Path, datarc: dict, steps: int = 2, **expert) -> Path:
    """A tiny PT config of the csv task on :func:`make_csv_corpus` (``expert`` keys override, dicts merge)."""
    cfg = {
        "runner": {"total_steps": steps, "gradient_clipping": 1.0, "gradient_accumulate_steps": 1, "log_step": steps,
                   "eval_step": steps, "save_step": steps, "max_keep": 1, "eval_dataloaders": ["dev"]},
        "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": 1.0e-2, "betas": [0.9, 0.98]},
        "downstream_expert": {"task": "csv", "method": "pt", "ulm": str(ulm), "km": None, "n_clusters": CSV_UNITS,
                              "verbalizer": "learnable", "cache_dir": str(cache),
                              "prompt": {"prompt_length": 2, "prompt_dropout": 0.0},
                              "datarc": {"batch_size": 4, "eval_batch_size": 8, "num_workers": 0, **datarc}},
    }
    for key, value in expert.items():
        if isinstance(value, dict) and isinstance(cfg["downstream_expert"].get(key), dict):
            cfg["downstream_expert"][key].update(value)
        else:
            cfg["downstream_expert"][key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_inprocess(*args) -> None:
    """s3prl's runner through our wrapper, in this process; exceptions propagate to the test."""
    import builtins

    from s3prl_speechprompt.s3prl_plugin import run_downstream
    argv, isinstance_ = sys.argv[:], builtins.isinstance
    try:
        run_downstream.main([str(a) for a in args])
    finally:
        # s3prl's main() wraps builtins.isinstance once more on every call (hack_isinstance); undo it,
        # or each further in-process run gets slower
        sys.argv, builtins.isinstance = argv, isinstance_


# ---------------------------------------------------------------------------------------------- classification pipeline
N_CLUSTERS = 50
FBANK = {"upstream": "fbank", "upstream_feature_selection": "hidden_states", "device": "cpu"}


def ks_datarc(corpus: Path) -> dict:
    """The KS task's ``datarc`` on a synthetic corpus written by ``synth.make_ks(corpus)``."""
    return {"speech_commands_root": str(corpus / "speech_commands_v0.01"),
            "speech_commands_test_root": str(corpus / "speech_commands_test_set_v0.01")}


def save_random_ulm(path: Path, n_units: int, arch: str = "ulm_tiny", seed: int = 0) -> Path:
    """An untrained ``arch`` unit LM over ``n_units`` units (torch seeded with ``seed``), saved in fairseq's format."""
    import torch

    from s3prl_speechprompt.ulm.checkpoint import save_ulm
    from s3prl_speechprompt.ulm.dictionary import Dictionary
    from s3prl_speechprompt.ulm.model import ULMConfig, UnitLM

    torch.manual_seed(seed)
    vocab = Dictionary([str(u) for u in range(n_units)])
    save_ulm(UnitLM(ULMConfig.from_arch(arch, len(vocab))), vocab, path)
    return path


def last_metrics(expdir: Path, split: str) -> dict:
    """The last ``split`` metrics a runner experiment recorded (its run.json)."""
    from s3prl_speechprompt.record import RunRecord
    return RunRecord.load(expdir).latest(split).metrics


def prepare_lm(task_name, datarc, root: Path, lm_updates=250, n_clusters=N_CLUSTERS, upstream="fbank"):
    """Units of the train/dev splits via the expert's own cached preparation (its k-means saved as
    ``root/kmeans.pt``, the ``km`` the expert must use), then a tiny LM pretrained on those units; returns its dir."""
    import torch

    from s3prl_speechprompt import compat
    compat.apply()
    torch.set_num_threads(thread_count())
    from s3prl_speechprompt.engine.pretrain import PretrainConfig, pretrain_ulm
    from s3prl_speechprompt.s3prl_plugin.features import runner_featurizer, upstream_key
    from s3prl_speechprompt.tasks.base import get_task, read_item_audio
    from s3prl_speechprompt.units.manifest import UnitRecord, write_unit_manifest
    from s3prl_speechprompt.units.prepare import prepare_units, to_units

    task = get_task(task_name)(**datarc)
    features = dict(FBANK, upstream=upstream)
    featurize = runner_featurizer(features)
    quantizer, train = prepare_units(task.read_split("train"), featurize, read_item_audio,
                                     key_parts=upstream_key(features), n_clusters=n_clusters, seed=seed_offset(),
                                     cache_dir=root / "cache")
    dev = [UnitRecord(it.id, tuple(to_units(quantizer, featurize(read_item_audio(it)))), it.labels)
           for it in task.read_split("dev")]
    # the expert must quantize with this very k-means (``km``): the LM is pretrained on its unit ids, and a k-means
    # refitted inside the runner (its own seed) numbers the clusters differently, which leaves the LM useless
    quantizer.save(root / "kmeans.pt")
    write_unit_manifest(root / "train.tsv", train)
    write_unit_manifest(root / "dev.tsv", dev)
    (root / "dict.txt").write_text("".join(f"{k} 1\n" for k in range(n_clusters)))
    pretrain_ulm(root / "train.tsv", root / "ulm", valid_path=root / "dev.tsv", dict_path=root / "dict.txt",
                 cfg=PretrainConfig(arch="ulm_tiny", max_updates=lm_updates, max_tokens=2048, warmup_updates=50,
                                    valid_interval=lm_updates, seed=seed_offset(),
                                    threads=thread_count()), log=lambda *a: None)
    return root / "ulm"


def write_config(path: Path, name: str, datarc: dict, ulm: Path, cache: Path, steps: int, lr=None, **expert):
    """The packaged config ``name``, shrunk to ``steps`` (one dev evaluation at the end); ``expert`` keys override,
    ``datarc`` keys too (batch sizes included)."""
    from s3prl_speechprompt.commands.demo import _packaged_config
    cfg = yaml.safe_load(_packaged_config(name))
    cfg["runner"].update(total_steps=steps, log_step=max(steps // 4, 1), eval_step=steps, save_step=steps,
                         eval_dataloaders=["dev"])
    if lr:
        cfg["optimizer"]["lr"] = lr
    if "scheduler" in cfg:
        cfg["scheduler"]["num_warmup_steps"] = max(steps // 10, 1)
    de = cfg["downstream_expert"]
    de.update({"ulm": str(ulm), "km": None, "n_clusters": N_CLUSTERS, "cache_dir": str(cache), **expert})
    de["datarc"].update({"batch_size": 32, "eval_batch_size": 64, "num_workers": 0, **datarc})
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_and_evaluate(name, cfg, exp, extra_env=None, upstream="fbank", seed=None) -> dict:
    """``-m train`` with ``-d name`` (``-c cfg`` unless None), then ``-m evaluate -e dev-best.ckpt`` on test; the
    test metrics. ``seed``: the runner's ``--seed``; None: :func:`runner_seed_args` (moved by the seed offset)."""
    train = ["-m", "train", "-u", upstream, "-d", name, "-p", str(exp), "--device", "cpu"]
    seed_args = runner_seed_args() if seed is None else ["--seed", str(seed)]
    run_runner(*train, *(["-c", str(cfg)] if cfg else []), *seed_args, extra_env=extra_env)
    run_runner("-m", "evaluate", "-t", "test", "-e", str(exp / "dev-best.ckpt"), "--device", "cpu",
               extra_env=extra_env)
    return last_metrics(exp, "test")


# ---------------------------------------------------------------------------------------------- sequence tasks
SEQ_UNITS = 40          # k-means clusters = unit LM units "0".."39"; more than the label tokens, so `freq` fits


def seq_config(task, method, ulm, datarc, steps, lr, eval_step, eval_splits, cache_dir, prompt_length=32,
               prompt_dropout=None, verbalizer="freq"):
    """A runner config (YAML text) of a sequence task on the :data:`SEQ_UNITS`-unit LM."""
    prompt = f"  prompt:\n    prompt_length: {prompt_length}\n" if method == "pt" else ""
    if method == "pt" and prompt_dropout is not None:
        prompt += f"    prompt_dropout: {prompt_dropout}\n"
    data = "".join(f"    {k}: {v}\n" for k, v in datarc.items())
    return textwrap.dedent(f"""\
        runner:
          total_steps: {steps}
          gradient_clipping: 1.0
          gradient_accumulate_steps: 1
          log_step: 50
          eval_step: {eval_step}
          save_step: {steps}
          max_keep: 1
          eval_dataloaders: {eval_splits}
        optimizer:
          name: TorchOptim
          torch_optim_name: Adam
          lr: {lr}
          betas: [0.9, 0.98]
        downstream_expert:
          task: {task}
          method: {method}
          ulm: {ulm}
          km: null
          n_clusters: {SEQ_UNITS}
          verbalizer: {verbalizer}
          balanced_sampling: false
          cache_dir: {cache_dir}
        """) + prompt + "  datarc:\n" + data


def train_and_untrained(tmp_path, downstream, task, method, ulm, datarc, steps, lr, eval_step=None, **prompt):
    """``-d downstream`` trained for ``steps`` (dev every ``eval_step``, default half of them -> dev-best.ckpt),
    dev-best evaluated on test; and the untrained model (lr 0, one step, evaluated on test). ``prompt``:
    :func:`seq_config`'s prompt options. Returns (trained expdir, its test scores, untrained expdir, its scores)."""
    tag = downstream[len("speechprompt_"):]
    cfg, exp = tmp_path / f"{tag}.yaml", tmp_path / tag
    cfg.write_text(seq_config(task, method, ulm, datarc, steps, lr, eval_step or steps // 2, "[dev]",
                              tmp_path / "units", **prompt))
    run_runner("-m", "train", "-u", "fbank", "-d", downstream, "-c", cfg, "-p", exp, *runner_seed_args(),
               "--device", "cpu", cwd=tmp_path)
    assert (exp / "dev-best.ckpt").is_file()
    out = run_runner("-m", "evaluate", "-t", "test", "-e", exp / "dev-best.ckpt", "--device", "cpu", cwd=tmp_path)

    cfg0, exp0 = tmp_path / f"{tag}_untrained.yaml", tmp_path / f"{tag}_untrained"
    cfg0.write_text(seq_config(task, method, ulm, datarc, 1, 0.0, 1, "[test]", tmp_path / "units", **prompt))
    out0 = run_runner("-m", "train", "-u", "fbank", "-d", downstream, "-c", cfg0, "-p", exp0, *runner_seed_args(),
                      "--device", "cpu", cwd=tmp_path)
    return exp, runner_scores(out, "test"), exp0, runner_scores(out0, "test")


def runner_scores(out, split):
    """{metric: value} from the expert's last '[speechprompt] step N: <split> name: value; ...' line."""
    line = [ln for ln in out.splitlines() if "[speechprompt] step" in ln and f": {split} " in ln][-1]
    body = line.split(": ", 1)[1]
    return {kv.split(": ")[0].split(" ", 1)[1]: float(kv.split(": ")[1]) for kv in body.split("; ")}


def read_pairs(exp, split="test"):
    """(hypotheses, references) of a run's ``split``, in utterance-id order."""
    from s3prl_speechprompt.analysis import read_lines

    hyp, ref = read_lines(exp / f"{split}_predict.txt"), read_lines(exp / f"{split}_truth.txt")
    ids = sorted(ref)
    return [hyp[i] for i in ids], [ref[i] for i in ids]

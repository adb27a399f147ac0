"""Device choice and errors a stranger understands, through the real commands (subprocesses).

Documented behaviour (README "Failure modes", ``s3prl_speechprompt/errors.py``): no CUDA and no ``--device``
-> the runner goes to the CPU with a one-line notice; ``--device cuda`` without CUDA, a failed GSLM download,
a missing corpus -> one line ``<prog>: error: ...`` on stderr and exit code 2, no traceback (unless
``--verbose`` / ``SPEECHPROMPT_TRACEBACK=1``). CUDA is hidden with ``CUDA_VISIBLE_DEVICES=""`` and the network
with an HTTPS proxy on a closed local port, so these tests behave the same on any machine.
"""
from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest

from s3prl_speechprompt.errors import DeviceError, DownloadError, is_user_error
from s3prl_speechprompt.s3prl_plugin.run_downstream import choose_device, distributed_args

from helpers import RUNNER, make_csv_corpus, runner_env, write_csv_config

CLI = [sys.executable, "-m", "s3prl_speechprompt"]
PREFIX = "speechprompt-run-downstream: error: "


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_gpu_no_network_env(cache) -> dict:
    env = runner_env()
    proxy = f"http://127.0.0.1:{closed_port()}"
    env.update(CUDA_VISIBLE_DEVICES="", S3PRL_CACHE=str(cache), https_proxy=proxy, HTTPS_PROXY=proxy,
               http_proxy=proxy, HTTP_PROXY=proxy)
    for key in ("no_proxy", "NO_PROXY", "SPEECHPROMPT_TRACEBACK"):
        env.pop(key, None)
    return env


def error_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if ": error: " in line]


# ------------------------------------------------------------------------------------ in-process rules
def test_choose_device_rules():
    argv = ["-m", "train", "-d", "speechprompt_ks"]
    out, notice = choose_device(argv, cuda_devices=0)
    assert out == argv + ["--device", "cpu"] and "running on CPU" in notice
    assert choose_device(argv, cuda_devices=1) == (argv, None)
    assert choose_device(argv + ["--device", "cpu"], cuda_devices=0) == (argv + ["--device", "cpu"], None)
    with pytest.raises(DeviceError, match=r"--device cuda: no CUDA device is available.*--device cpu"):
        choose_device(argv + ["--device", "cuda"], cuda_devices=0)
    with pytest.raises(DeviceError, match=r"--device cuda:2: only 2 CUDA device\(s\)"):
        choose_device(argv + ["--device=cuda:2"], cuda_devices=2)
    # distributed without CUDA: the added --device cpu makes the backend gloo
    dist = distributed_args(out, environ={"LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    assert dist[-4:] == ["--local_rank", "0", "--backend", "gloo"]


def test_user_error_rule_keeps_tracebacks_of_bugs():
    from s3prl_speechprompt.units.manifest import read_unit_file

    with pytest.raises(FileNotFoundError) as ours:
        read_unit_file("/nonexistent/units.txt")
    assert is_user_error(ours.value)
    with pytest.raises(ValueError) as numpy_error:
        np.zeros(3).reshape(2, 2)
    assert not is_user_error(numpy_error.value)                      # raised inside numpy: a bug of ours
    assert not is_user_error(TypeError("x")) and is_user_error(DownloadError("x"))
    # decided by type, not by where it was raised: a plain ValueError of ours is a bug too
    assert not is_user_error(ValueError("x")) and not is_user_error(FileNotFoundError("no filename"))
    with pytest.raises(FileNotFoundError) as refused:                 # the OS refusing a named path: the user's
        open("/nonexistent/dir/file.txt")
    assert is_user_error(refused.value)


def _user_error_classes():
    """Every UserError subclass the package defines (importing the modules that define some outside errors.py)."""
    import importlib

    from s3prl_speechprompt.errors import UserError

    for module in ("synth.tts", "report.compare", "serve", "engine.evaluate", "ulm.checkpoint"):
        importlib.import_module(f"s3prl_speechprompt.{module}")
    found, todo = [], [UserError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def test_every_user_error_is_one_line_exit_2_through_both_entry_points(capsys, monkeypatch):
    """Whatever raises it, each UserError subclass ends a command as ``<prog>: error: <message>`` + exit 2."""
    from s3prl_speechprompt import cli
    from s3prl_speechprompt.commands import ulm_info
    from s3prl_speechprompt.s3prl_plugin import run_downstream

    monkeypatch.delenv("SPEECHPROMPT_TRACEBACK", raising=False)
    classes = _user_error_classes()
    names = {c.__name__ for c in classes}
    assert {"ConfigError", "InputFileError", "UnitFileError", "KMeansFileError", "CheckpointError", "LMMismatchError",
            "MissingFileError", "OutputExistsError", "UnknownNameError", "DownloadError", "DeviceError",
            "EspeakUnavailable", "TestSetMismatch"} <= names
    for cls in classes:
        message = f"{cls.__name__}: x.txt:3: what is wrong; how to fix it"

        def fail(*args, cls=cls, message=message):
            raise cls(message)

        monkeypatch.setattr(ulm_info, "run", fail)
        with pytest.raises(SystemExit) as done:
            cli.main(["ulm-info", "x"], report_errors=True)
        assert done.value.code == 2, cls
        assert capsys.readouterr().err == f"speechprompt ulm-info: error: {message}\n", cls

        monkeypatch.setattr(run_downstream, "run", fail)
        assert run_downstream.main(["-m", "train"], report_errors=True) == 2, cls
        assert capsys.readouterr().err == f"{PREFIX}{message}\n", cls
        # --verbose: the exception itself (Python prints its traceback)
        with pytest.raises(cls):
            run_downstream.main(["-m", "train", "--verbose"], report_errors=True)


def _torch_value_error():
    import torch

    torch.nn.functional.cross_entropy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))   # batch sizes differ


_BUG_SCRIPT = """
import sys
from s3prl_speechprompt.commands import ulm_info
from s3prl_speechprompt.s3prl_plugin import run_downstream

which, entry = sys.argv[1], sys.argv[2]
sys.argv = [sys.argv[0]] + sys.argv[3:]

def fail(*args):
    if which == "type":
        raise TypeError("a bug: unsupported operand")
    import torch
    torch.nn.functional.cross_entropy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
if entry == "cli":
    ulm_info.run = fail
    from s3prl_speechprompt.cli import main
    main()
else:
    run_downstream.run = fail
    sys.exit(run_downstream.main())
"""


@pytest.mark.parametrize("bug", ["type", "torch"])
def test_a_bug_keeps_its_traceback_and_exit_1_through_both_entry_points(bug):
    with pytest.raises(ValueError) as torch_error:
        _torch_value_error()
    assert not is_user_error(torch_error.value)
    env = runner_env()
    env.pop("SPEECHPROMPT_TRACEBACK", None)
    expected = "TypeError: a bug: unsupported operand" if bug == "type" else "ValueError: Expected input batch_size"
    for entry, args in (("cli", ["ulm-info", "x"]), ("runner", ["-m", "train"])):
        out = subprocess.run([sys.executable, "-c", _BUG_SCRIPT, bug, entry, *args], env=env, capture_output=True,
                             text=True)
        assert out.returncode == 1, (entry, out.stderr[-3000:])
        assert "Traceback (most recent call last)" in out.stderr and expected in out.stderr, (entry, out.stderr)
        assert ": error: " not in out.stderr


# ------------------------------------------------------------------------------------ through the commands
@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_ulm_dir):
    root = tmp_path_factory.mktemp("user_errors")
    return {"root": root, "csv": make_csv_corpus(root / "corpus", per_class=(2, 1, 1)), "ulm": tiny_ulm_dir}


def test_no_cuda_no_device_runs_on_cpu_with_a_notice(corpus, tmp_path):
    cfg = write_csv_config(tmp_path / "cfg.yaml", corpus["ulm"], tmp_path / "cache", {"csv": str(corpus["csv"])},
                           steps=1)
    exp = tmp_path / "exp"
    out = subprocess.run(RUNNER + ["-m", "train", "-u", "fbank", "-d", "speechprompt_csv", "-c", cfg, "-p", exp],
                         env=no_gpu_no_network_env(tmp_path / "s3prl"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    notices = [line for line in out.stderr.splitlines() if "no CUDA device available" in line]
    assert notices == ["speechprompt-run-downstream: no CUDA device available; running on CPU "
                       "(pass --device cpu to silence this notice)"]
    assert (exp / "states-1.ckpt").is_file()


def test_offline_gslm_name_is_one_line_naming_url_and_cache_path(corpus, tmp_path, monkeypatch):
    from s3prl_speechprompt.ulm.pretrained import ULM_URLS, cached_path

    env = no_gpu_no_network_env(tmp_path / "s3prl")
    url = ULM_URLS["hubert100"]
    monkeypatch.setenv("S3PRL_CACHE", env["S3PRL_CACHE"])
    cached = str(cached_path(url))
    assert cached.startswith(str(tmp_path / "s3prl" / "download"))

    cfg = write_csv_config(tmp_path / "cfg.yaml", "hubert100", tmp_path / "cache", {"csv": str(corpus["csv"])},
                           steps=1)
    out = subprocess.run(RUNNER + ["-m", "train", "-u", "fbank", "-d", "speechprompt_csv", "-c", cfg, "-p",
                                   tmp_path / "exp"], env=env, capture_output=True, text=True)
    assert out.returncode == 2, out.stderr[-3000:]
    [line] = error_lines(out.stderr)
    assert line.startswith(PREFIX + f"cannot download {url} (URLError") and f"place it at {cached} " in line
    assert "Traceback" not in out.stderr and not (tmp_path / "exp" / "states-1.ckpt").exists()

    # the same through the `speechprompt` dispatch (every subcommand goes through it), here ulm-info
    out = subprocess.run(CLI + ["ulm-info", "hubert100"], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"speechprompt ulm-info: error: cannot download {url}") and cached in out.stderr
    # SPEECHPROMPT_TRACEBACK=1: the traceback instead (exit 1, Python's own)
    out = subprocess.run(CLI + ["ulm-info", str(tmp_path / "nowhere")], env=dict(env, SPEECHPROMPT_TRACEBACK="1"),
                         capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" in out.stderr and "MissingFileError: unit LM" in out.stderr


def _runner_main(*args):
    """The command's error handling (report_errors=True), in this process (s3prl's main wraps isinstance)."""
    import builtins

    from s3prl_speechprompt.s3prl_plugin import run_downstream
    argv, isinstance_ = sys.argv[:], builtins.isinstance
    try:
        return run_downstream.main([str(a) for a in args], report_errors=True)
    finally:
        sys.argv, builtins.isinstance = argv, isinstance_


def test_device_cuda_without_cuda_and_missing_corpus_are_one_line_exit_2(corpus, tmp_path, capsys, monkeypatch):
    from s3prl_speechprompt.s3prl_plugin import run_downstream

    monkeypatch.setattr(run_downstream, "cuda_device_count", lambda: 0)
    monkeypatch.delenv("SPEECHPROMPT_TRACEBACK", raising=False)
    assert _runner_main("-m", "train", "-u", "fbank", "-d", "speechprompt_ks", "-n", "x", "-p", tmp_path / "e",
                        "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [PREFIX + "--device cuda: no CUDA device is available here (torch.cuda.is_available() "
                                "is False: no GPU, no driver, a CPU-only torch or CUDA_VISIBLE_DEVICES=''); run "
                                "with --device cpu"]

    cfg = write_csv_config(tmp_path / "cfg.yaml", corpus["ulm"], tmp_path / "cache", {"csv": str(tmp_path / "no.csv")})
    args = ["-m", "train", "-u", "fbank", "-d", "speechprompt_csv", "-c", cfg, "-p", tmp_path / "e2"]
    assert _runner_main(*args) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert line == PREFIX + f"{tmp_path / 'no.csv'}: CSV file not found (downstream_expert.datarc)"
    with pytest.raises(FileNotFoundError):                     # --verbose: the traceback (the exception itself)
        _runner_main(*args, "--verbose")

    for flag, what in (("-c", "--config"), ("-e", "--past_exp")):                   # paths s3prl would open itself
        assert _runner_main("-m", "train", "-u", "fbank", "-d", "speechprompt_csv", flag, tmp_path / "nope") == 2
        assert error_lines(capsys.readouterr().err) == [PREFIX + f"{what} {tmp_path / 'nope'}: no such " +
                                                        ("config file" if flag == "-c" else
                                                         "checkpoint or experiment directory")]


def test_gslm_kmeans_name_offline(tmp_path, monkeypatch):
    from s3prl_speechprompt.ulm.pretrained import KMEANS_URLS, cached_path, resolve_kmeans

    port = closed_port()
    monkeypatch.setenv("S3PRL_CACHE", str(tmp_path))
    for key in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(key, f"http://127.0.0.1:{port}")
    for key in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(DownloadError) as e:
        resolve_kmeans("cpc100")
    assert KMEANS_URLS["cpc100"] in str(e.value) and str(cached_path(KMEANS_URLS["cpc100"])) in str(e.value)
    assert not list(tmp_path.rglob("*.part"))                       # no partial file left behind


def test_s3prl_upstream_download_offline_names_url_and_path(tmp_path, monkeypatch):
    """``-u hubert`` offline: s3prl's own download error becomes one DownloadError with URL and target path."""
    from s3prl_speechprompt import compat
    from s3prl_speechprompt.s3prl_plugin.run_downstream import explain_upstream_downloads

    compat.apply()
    from s3prl.util import download

    port = closed_port()
    for key in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(key, f"http://127.0.0.1:{port}")
    for key in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(download, "_download_dir", tmp_path)
    explain_upstream_downloads()
    url = "https://huggingface.co/s3prl/converted_ckpts/resolve/main/hubert_base_ls960.pt"
    with pytest.raises(DownloadError) as e:
        download._urls_to_filepaths(url)
    assert is_user_error(e.value)
    assert f"s3prl cannot download {url} (" in str(e.value) and f"place it at {tmp_path}/" in str(e.value)

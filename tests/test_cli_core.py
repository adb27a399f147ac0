"""`speechprompt ulm-info` through the real entry point."""
import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "s3prl_speechprompt", *args], capture_output=True, text=True)


def test_ulm_info_reports_architecture_and_parameters(tiny_ulm_dir):
    out = _run("ulm-info", str(tiny_ulm_dir))
    assert out.returncode == 0, out.stderr
    assert "layers            2" in out.stdout and "vocab_size        24" in out.stdout
    import json
    info = json.loads(_run("ulm-info", str(tiny_ulm_dir), "--json").stdout)
    assert info["parameters"] == 2 * (4 * (64 * 64 + 64) + 2 * 128 + 64 * 256 + 256 + 256 * 64 + 64) + 24 * 64 + 128


def test_ulm_info_errors_name_the_file(tmp_path):
    out = _run("ulm-info", str(tmp_path))
    assert out.returncode == 2 and str(tmp_path) in out.stderr and "no unit-LM checkpoint" in out.stderr
    assert out.stderr.startswith("speechprompt ulm-info: error: ") and out.stderr.count("\n") == 1


def test_every_command_has_help():
    top = _run("--help")
    assert top.returncode == 0
    for cmd in ("ulm-info", "verbalize"):
        out = _run(cmd, "--help")
        assert out.returncode == 0 and "usage: speechprompt" in out.stdout, out.stderr

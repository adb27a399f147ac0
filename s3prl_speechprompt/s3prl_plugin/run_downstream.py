"""s3prl's ``run_downstream.py`` with the SpeechPrompt downstreams registered; every flag is s3prl 0.4.18's::

    speechprompt-run-downstream -m train -u hubert -d speechprompt_ks -n ks_pt
    speechprompt-run-downstream -m evaluate -t test -e result/downstream/ks_pt/dev-best.ckpt

What it adds before handing over to ``s3prl.run_downstream.main()``: :func:`s3prl_speechprompt.compat.apply`;
our downstreams registered (:mod:`.registry`); ``-c <packaged yaml>`` when ``-d`` is ours and neither ``-c`` nor
``-e`` was given (s3prl's default is ``./downstream/<name>/config.yaml``); the :mod:`.runner_patches` (crash-safe
checkpoints, one training job per expdir, DDP fixes); ``--local_rank`` from torchrun's ``LOCAL_RANK`` (s3prl reads
only the flag; ``--local-rank`` is renamed) and ``gloo`` with ``--device cpu``; a device that exists
(:func:`choose_device`); user errors as one line and exit 2 (:mod:`s3prl_speechprompt.errors`).
"""
import argparse
import glob
import os
import sys
from typing import Callable, List, Optional, Tuple

from s3prl_speechprompt import compat, schedules
from s3prl_speechprompt.errors import CheckpointError, DeviceError, DownloadError, MissingFileError, run_reporting_errors
from s3prl_speechprompt.s3prl_plugin import registry, runner_patches

PROG = "speechprompt-run-downstream"

# s3prl 0.4.18 run_downstream.py options: long name -> takes a value
_LONG = {
    "--help": False, "--mode": True, "--evaluate_split": True, "--override": True, "--backend": True,
    "--local_rank": True, "--past_exp": True, "--init_ckpt": True, "--config": True,
    "--downstream": True, "--downstream_variant": True, "--hub": True, "--upstream": True,
    "--upstream_ckpt": True, "--upstream_model_config": True, "--upstream_refresh": False,
    "--upstream_trainable": False, "--upstream_feature_selection": True,
    "--upstream_layer_selection": True, "--upstream_feature_normalize": False,
    "--upstream_model_name": True, "--upstream_revision": True, "--expname": True, "--expdir": True,
    "--auto_resume": False, "--push_to_hf_hub": True, "--hf_hub_org": True, "--seed": True,
    "--device": True, "--cache_dir": True, "--verbose": False, "--disable_cudnn": False,
}
# short flag -> its long name
_SHORT = {
    "h": "--help", "m": "--mode", "t": "--evaluate_split", "o": "--override", "e": "--past_exp",
    "i": "--init_ckpt", "c": "--config", "d": "--downstream", "v": "--downstream_variant",
    "u": "--upstream", "k": "--upstream_ckpt", "g": "--upstream_model_config", "r": "--upstream_refresh",
    "f": "--upstream_trainable", "s": "--upstream_feature_selection", "l": "--upstream_layer_selection",
    "n": "--expname", "p": "--expdir", "a": "--auto_resume",
}


def _resolve_long(option: str) -> Optional[str]:
    """Exact long option, or its unique prefix as argparse accepts it; None if unknown/ambiguous."""
    if option in _LONG:
        return option
    matches = [name for name in _LONG if name.startswith(option)]
    return matches[0] if len(matches) == 1 else None


def parse_options(argv: List[str]) -> dict:
    """The s3prl options present in ``argv`` as ``{long name: value}`` (value ``True`` for flags).

    Understands the forms argparse accepts: ``-d X``, ``-dX``, grouped flags (``-af``), ``--downstream X``,
    ``--downstream=X`` and unique prefixes (``--downs X``). Later occurrences win, as in argparse.
    """
    found = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            break
        if token.startswith("--"):
            option, eq, value = token.partition("=")
            name = _resolve_long(option)
            if name is None:
                continue
            if not _LONG[name]:
                found[name] = True
            elif eq:
                found[name] = value
            elif i < len(argv):
                found[name] = argv[i]
                i += 1
        elif token.startswith("-") and len(token) > 1:
            chars = token[1:]
            for j, char in enumerate(chars):
                name = _SHORT.get(char)
                if name is None:
                    break
                if not _LONG[name]:
                    found[name] = True
                    continue
                rest = chars[j + 1:]
                if rest:
                    found[name] = rest
                elif i < len(argv):
                    found[name] = argv[i]
                    i += 1
                break
    return found


def inject_default_config(argv: List[str],
                          config_for: Callable[[str], Optional[str]] = registry.default_config_path) -> List[str]:
    """``argv`` plus ``-c <packaged yaml>`` if ``-d`` names one of ours and no ``-c``/``-e`` was given."""
    options = parse_options(argv)
    if "--config" in options or "--past_exp" in options or "--help" in options:
        return list(argv)
    downstream = options.get("--downstream")
    if not isinstance(downstream, str):
        return list(argv)
    path = config_for(downstream)
    if path is None:
        return list(argv)
    return list(argv) + ["-c", path]


def distributed_args(argv: List[str], environ=None) -> List[str]:
    """Adapt launcher conventions to s3prl's ``--local_rank`` flag (see the module docstring)."""
    environ = os.environ if environ is None else environ
    out = []
    for token in argv:
        if token == "--local-rank" or token.startswith("--local-rank="):
            token = "--local_rank" + token[len("--local-rank"):]
        out.append(token)
    options = parse_options(out)
    if "--local_rank" not in options and "LOCAL_RANK" in environ and "WORLD_SIZE" in environ:
        out += ["--local_rank", environ["LOCAL_RANK"]]
        options["--local_rank"] = environ["LOCAL_RANK"]
    if "--local_rank" in options and str(options.get("--device", "cuda")).startswith("cpu") \
            and "--backend" not in options:
        out += ["--backend", "gloo"]
    return out


def _help_header(names: List[str]) -> str:
    listed = ", ".join(names) if names else "(none found)"
    return (f"{PROG}: s3prl's run_downstream.py with the SpeechPrompt downstreams registered.\n"
            f"  -d choices added: {listed}\n"
            f"  -c defaults to the packaged <downstream>.yaml for these (unless -e is given).\n"
            f"  All other options are s3prl 0.4.18's:\n")


def cuda_device_count() -> int:
    """Visible CUDA devices (0 when torch has no CUDA, no driver, or ``CUDA_VISIBLE_DEVICES=""``)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def choose_device(argv: List[str], cuda_devices: Optional[int] = None) -> Tuple[List[str], Optional[str]]:
    """``argv`` with a device that exists, and a notice to print (or None).

    s3prl's ``--device`` defaults to ``cuda``, which on a machine without CUDA ends in a CUDA traceback at the
    first ``.to(device)``. Without ``--device`` and without CUDA we add ``--device cpu`` (and, in a distributed
    run, :func:`distributed_args` then picks the ``gloo`` backend) and return a one-line notice. An explicit
    ``--device cuda[:N]`` that cannot be honoured raises :class:`~s3prl_speechprompt.errors.DeviceError`.
    """
    options = parse_options(argv)
    if "--help" in options:
        return list(argv), None
    count = cuda_device_count() if cuda_devices is None else cuda_devices
    device = options.get("--device")
    if device is None:
        if count == 0:
            return list(argv) + ["--device", "cpu"], (
                f"{PROG}: no CUDA device available; running on CPU (pass --device cpu to silence this notice)")
        return list(argv), None
    device = str(device)
    if device.startswith("cuda"):
        if count == 0:
            raise DeviceError(f"--device {device}: no CUDA device is available here (torch.cuda.is_available() is "
                              f"False: no GPU, no driver, a CPU-only torch or CUDA_VISIBLE_DEVICES=''); "
                              f"run with --device cpu")
        index = device.partition(":")[2]
        if index.isdigit() and int(index) >= count:
            raise DeviceError(f"--device {device}: only {count} CUDA device(s) are visible (cuda:0 .. "
                              f"cuda:{count - 1}); pick one of them or check CUDA_VISIBLE_DEVICES")
    return list(argv), None


def explain_upstream_downloads() -> None:
    """s3prl downloads upstream checkpoints (``-u hubert``, ...) on first use; offline that ends in a
    requests/urllib traceback. Make a failed download a :class:`~s3prl_speechprompt.errors.DownloadError`
    naming the URL and the path to place the file at (s3prl's cache: ``<dir>/<sha256(url)>.<name>``)."""
    from s3prl.util import download

    original = download._download
    if getattr(original, "_speechprompt", False):
        return

    def _download(filepath, url, *args, **kwargs):
        try:
            return original(filepath, url, *args, **kwargs)
        except Exception as e:
            raise DownloadError(f"s3prl cannot download {url} ({type(e).__name__}: {e}); no network? Download it "
                                f"on another machine and place it at {filepath}") from e

    _download._speechprompt = True
    download._download = _download


_PATH_OPTIONS = {"--config": "config file", "--past_exp": "checkpoint or experiment directory",
                 "--init_ckpt": "checkpoint file"}


def check_paths(options: dict) -> None:
    """``-c`` / ``-e`` / ``-i`` must exist, and the checkpoint that ``-e`` / ``-i`` / ``-a`` makes s3prl load must be
    a whole runner checkpoint (:func:`~s3prl_speechprompt.readers.read_torch`, memory-mapped): s3prl would open
    them inside its own code, where an empty, cut-short or wrong file ends in a traceback that names neither."""
    from s3prl_speechprompt.readers import RUNNER_CHECKPOINT, is_runner_checkpoint, read_torch

    for flag, what in _PATH_OPTIONS.items():
        value = options.get(flag)
        if isinstance(value, str) and not os.path.exists(value):
            raise MissingFileError(f"{flag} {value}: no such {what}")
    for flag, path in _checkpoints_s3prl_loads(options):
        read_torch(path, RUNNER_CHECKPOINT, flag=flag, is_expected=is_runner_checkpoint, mmap=True,
                   allow=(argparse.Namespace,))


def _checkpoints_s3prl_loads(options: dict) -> List[tuple]:
    """``(flag, path)`` of the checkpoints ``get_downstream_args`` will ``torch.load``, chosen as it chooses them:
    ``-a`` resumes the expdir (``-p``, else ``result/downstream/<-n>``) when it holds ``states-*.ckpt``; ``-e`` a
    file, or a directory's ``states-*.ckpt`` of the highest step; ``-i`` its file."""
    out = []
    past, flag = options.get("--past_exp"), "-e"
    if options.get("--auto_resume"):
        expdir = options.get("--expdir") or (f"result/downstream/{options['--expname']}"
                                             if isinstance(options.get("--expname"), str) else None)
        if expdir and glob.glob(os.path.join(expdir, "states-*.ckpt")):
            past, flag = expdir, "-a"
    if isinstance(past, str):
        if os.path.isdir(past):
            states = glob.glob(os.path.join(past, "states-*.ckpt"))
            if not states:
                raise CheckpointError(f"{flag} {past}: the directory holds no states-<step>.ckpt to resume from; "
                                      f"give a checkpoint file (e.g. {past}/dev-best.ckpt)")
            past = max(states, key=lambda p: int(p.split("-")[-1].split(".")[0]))
        out.append((flag, past))
    if isinstance(options.get("--init_ckpt"), str):
        out.append(("-i", options["--init_ckpt"]))
    return out


def run(argv: List[str], prog: str = PROG) -> int:
    """Run s3prl's downstream runner on ``argv``; exceptions propagate (see :func:`main` for the command)."""
    compat.apply()
    schedules.register()
    names = registry.register()
    argv, notice = choose_device(argv)
    if notice and os.environ.get("RANK", "0") == "0":
        print(notice, file=sys.stderr, flush=True)
    argv = distributed_args(argv)
    argv = inject_default_config(argv)
    options = parse_options(argv)
    if "--help" in options:
        print(_help_header(names), flush=True)
    else:
        check_paths(options)
    runner_patches.atomic_runner_checkpoints()
    runner_patches.lock_training_expdir(" ".join([prog] + argv))
    explain_upstream_downloads()
    if "--local_rank" in options:
        if str(options.get("--device", "cuda")).startswith("cpu"):
            runner_patches.enable_cpu_ddp()
        runner_patches.fix_runner_ddp()

    from s3prl.run_downstream import main as s3prl_main

    sys.argv = [prog] + argv
    try:
        s3prl_main()
    finally:
        runner_patches.release_training_expdir()
    return 0


def main(argv: Optional[List[str]] = None, *, report_errors: Optional[bool] = None) -> int:
    """The ``speechprompt-run-downstream`` command: s3prl's runner on ``argv`` (default ``sys.argv[1:]``).

    As a command (``argv`` None, or ``report_errors=True``) user errors end as one line and exit code 2
    (:mod:`s3prl_speechprompt.errors`); called from Python with ``argv``, exceptions propagate to the caller.
    """
    if report_errors is None:
        report_errors = argv is None
    prog = sys.argv[0] if argv is None else PROG
    argv = list(sys.argv[1:] if argv is None else argv)
    if not report_errors:
        return run(argv, prog)
    return run_reporting_errors(PROG, lambda: run(argv, prog), verbose="--verbose" in parse_options(argv))


if __name__ == "__main__":
    sys.exit(main())

"""s3prl's ``run_downstream.py`` with the SpeechPrompt downstreams registered.

Usage is exactly s3prl 0.4.18's (every flag is passed through), e.g.::

    speechprompt-run-downstream -m train -u hubert -d speechprompt_ks -n ks_pt
    speechprompt-run-downstream -m evaluate -t test -e result/downstream/ks_pt/dev-best.ckpt
    python -m s3prl_speechprompt.s3prl_plugin.run_downstream --help

What it adds before handing over to ``s3prl.run_downstream.main()``:

1. :func:`s3prl_speechprompt.compat.apply` (s3prl on torchaudio >= 2.9 / torch >= 2.6);
2. registration of every ``speechprompt_*`` downstream (:mod:`.registry`);
3. ``-c <packaged yaml>`` when ``-d`` is one of ours and neither ``-c/--config`` nor
   ``-e/--past_exp`` was given (s3prl's own default is ``./downstream/<name>/config.yaml``);
4. crash-safe checkpoints: :func:`~s3prl_speechprompt.s3prl_plugin.runner_patches.atomic_runner_checkpoints`
   (``states-*.ckpt`` / ``dev-best.ckpt`` written atomically; older states deleted only after the new one);
5. distributed runs: s3prl reads the local rank only from ``--local_rank``. Under ``torchrun``
   (which sets ``LOCAL_RANK``/``WORLD_SIZE`` in the environment and passes no flag) the flag is added;
   ``--local-rank`` (what ``torch.distributed.launch`` passes since torch 2.0) is renamed. With
   ``--device cpu`` the backend defaults to ``gloo`` (s3prl's default ``nccl`` needs GPUs) and
   :func:`~s3prl_speechprompt.s3prl_plugin.runner_patches.enable_cpu_ddp` is applied.
"""
import os
import sys
from typing import Callable, List, Optional

from s3prl_speechprompt import compat
from s3prl_speechprompt.s3prl_plugin import registry, runner_patches, schedulers

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


def main(argv: Optional[List[str]] = None) -> int:
    """Run s3prl's downstream runner on ``argv`` (default ``sys.argv[1:]``)."""
    prog = sys.argv[0] if argv is None else PROG
    argv = list(sys.argv[1:] if argv is None else argv)
    compat.apply()
    schedulers.register()
    names = registry.register()
    argv = distributed_args(argv)
    argv = inject_default_config(argv)
    options = parse_options(argv)
    if "--help" in options:
        print(_help_header(names), flush=True)
    runner_patches.atomic_runner_checkpoints()
    if "--local_rank" in options:
        if str(options.get("--device", "cuda")).startswith("cpu"):
            runner_patches.enable_cpu_ddp()
        runner_patches.fix_runner_ddp()

    from s3prl.run_downstream import main as s3prl_main

    sys.argv = [prog] + argv
    s3prl_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())

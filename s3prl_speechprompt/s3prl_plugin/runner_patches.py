"""Patches to s3prl 0.4.18's runner that change what it does, applied by our runner wrapper (:mod:`.run_downstream`)
only (:mod:`s3prl_speechprompt.compat` only lets s3prl run on today's torch / torchaudio): crash-safe checkpoints
and ``trained_task/`` (:func:`atomic_runner_checkpoints`), two DDP bugs (:func:`fix_runner_ddp`), DDP on CPU
(:func:`enable_cpu_ddp`), one ``-m train`` job per expdir (:func:`lock_training_expdir`). Every patch is made in
s3prl's module namespaces at run time (no installed file is edited) and is idempotent.
"""
import importlib
import os
import types

from s3prl_speechprompt.compat import is_marked, mark


# --- distributed training on CPU ---

def enable_cpu_ddp() -> list:
    """Let s3prl's DDP path run with ``--device cpu --backend gloo`` on a machine without CUDA.

    s3prl 0.4.18 assumes one GPU per process: ``run_downstream.py`` ``main()`` calls
    ``torch.cuda.set_device(args.local_rank)`` (without a driver: "Found no NVIDIA driver"), patched to a no-op
    *only while CUDA is unavailable*; ``Runner._init_model`` passes ``DDP(..., device_ids=[local_rank])``, which torch
    rejects for a CPU module, so the ``DDP`` name in ``s3prl.downstream.runner`` drops ``device_ids`` /
    ``output_device`` for CPU modules. Returns the names of what was patched. Idempotent.
    """
    import torch

    done = []
    if not torch.cuda.is_available() and not is_marked(torch.cuda.set_device):
        original = torch.cuda.set_device

        def set_device(device):
            if torch.cuda.is_available():
                return original(device)
            return None

        set_device.__doc__ = "Installed by s3prl_speechprompt.s3prl_plugin.runner_patches.enable_cpu_ddp: no-op without CUDA."
        torch.cuda.set_device = mark(set_device)
        done.append("torch.cuda.set_device")

    runner = importlib.import_module("s3prl.downstream.runner")
    if not is_marked(runner.DDP):
        original_ddp = runner.DDP

        def cpu_aware_ddp(module, *args, **kwargs):
            if all(p.device.type == "cpu" for p in module.parameters()):
                kwargs.pop("device_ids", None)
                kwargs.pop("output_device", None)
            return original_ddp(module, *args, **kwargs)

        runner.DDP = mark(cpu_aware_ddp)
        done.append("s3prl.downstream.runner.DDP")
    return done


def fix_runner_ddp() -> list:
    """Two bugs in s3prl 0.4.18's DDP training loop (``s3prl/downstream/runner.py``), on any device.

    Non-leader ranks ``continue`` before ``pbar.update(1)`` in ``Runner.train``, so their step counter never moves and
    they train until rank 0 exits (then crash, or hang under NCCL): their ``overall`` bar now advances from an
    optimizer step hook, once per optimizer step as rank 0's. Evaluation runs on rank 0 alone through the DDP wrapper,
    whose forward would broadcast buffers (a collective the other ranks never join); our buffers need no broadcast, so
    the wrapper gets ``broadcast_buffers=False``. Returns the names of what was patched. Idempotent.
    """
    runner = importlib.import_module("s3prl.downstream.runner")
    done = []
    if not is_marked(runner.tqdm):
        original_tqdm = runner.tqdm

        def tqdm(*args, **kwargs):
            bar = original_tqdm(*args, **kwargs)
            if kwargs.get("desc") == "overall" and not runner.is_leader_process():
                _overall_bar["bar"] = bar
            return bar

        for name in ("write",):                    # runner uses tqdm.write(...) as a class method
            setattr(tqdm, name, getattr(original_tqdm, name))
        runner.tqdm = mark(tqdm)
        done.append("s3prl.downstream.runner.tqdm")

        original_get_optimizer = runner.Runner._get_optimizer

        def _get_optimizer(self, model_params):
            optimizer = original_get_optimizer(self, model_params)
            if not runner.is_leader_process():
                optimizer.register_step_post_hook(lambda *a, **k: _overall_bar["bar"] and _overall_bar["bar"].update(1))
            return optimizer

        runner.Runner._get_optimizer = mark(_get_optimizer)
        done.append("s3prl.downstream.runner.Runner._get_optimizer")
    if not getattr(runner.DDP, "_no_buffer_broadcast", False):
        inner = runner.DDP

        def ddp(module, *args, **kwargs):
            kwargs.setdefault("broadcast_buffers", False)
            return inner(module, *args, **kwargs)

        ddp._no_buffer_broadcast = True
        runner.DDP = mark(ddp)
        done.append("s3prl.downstream.runner.DDP(broadcast_buffers=False)")
    return done


_overall_bar = {"bar": None}


# --- crash-safe checkpoints ---

_STATES = "states-"


def _is_states_ckpt(path) -> bool:
    name = os.path.basename(str(path))
    return name.startswith(_STATES) and name.endswith(".ckpt") and name[len(_STATES):-5].isdigit()


class _ModuleProxy(types.ModuleType):
    """A stand-in for a module inside one other module's namespace: every attribute is the real
    module's, except the ones set on the proxy."""

    def __init__(self, real):
        super().__init__(real.__name__)
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)


def _write_trained_task(states, path) -> None:
    extra = (states.get("Downstream") or {}).get("_extra_state") if isinstance(states, dict) else None
    if isinstance(extra, dict) and "centroids" in extra:           # the prompt expert's (not a baseline's)
        from s3prl_speechprompt.trained import TrainedTask
        TrainedTask.from_runner_checkpoint(states, origin=str(path)).save(os.path.join(os.path.dirname(path),
                                                                                       "trained_task"))


def atomic_runner_checkpoints() -> list:
    """Make ``Runner.train``'s checkpoints survive a kill at any moment, and write the prompt expert's trained task.

    s3prl 0.4.18 writes ``states-<step>.ckpt`` / ``dev-best.ckpt`` with a plain ``torch.save`` (a kill mid-write leaves
    a truncated file that ``-a`` then picks and cannot load) and, with ``max_keep``, deletes older states *before*
    writing the new one. Patched, in ``s3prl.downstream.runner``'s namespace only: ``torch.save`` to a path is atomic
    (a hidden temp file ``-a``'s glob never matches, fsynced, renamed); ``os.remove`` of a ``states-*.ckpt`` waits
    until the next one of that folder is complete; after the prompt expert's ``dev-best.ckpt``,
    ``<expdir>/trained_task/`` is written from it (``TrainedTask.from_runner_checkpoint``).
    Idempotent; returns the names of what was patched.
    """
    import torch

    from s3prl_speechprompt.atomic import atomic_torch_save

    runner = importlib.import_module("s3prl.downstream.runner")
    if is_marked(runner.torch):
        return []
    pending = []

    def save(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):
            return torch.save(obj, f, *args, **kwargs)
        atomic_torch_save(obj, f)
        if os.path.basename(str(f)) == "dev-best.ckpt":
            _write_trained_task(obj, f)
        if _is_states_ckpt(f):
            folder = os.path.dirname(os.path.abspath(f))
            for old in [p for p in pending if os.path.dirname(os.path.abspath(p)) == folder]:
                pending.remove(old)
                if os.path.abspath(old) != os.path.abspath(f) and os.path.exists(old):
                    os.remove(old)

    def remove(path, *args, **kwargs):
        if _is_states_ckpt(path):
            pending.append(str(path))
            return None
        return os.remove(path, *args, **kwargs)

    torch_proxy, os_proxy = _ModuleProxy(torch), _ModuleProxy(os)
    torch_proxy.save, os_proxy.remove = save, remove
    runner.torch, runner.os = mark(torch_proxy), mark(os_proxy)
    return ["s3prl.downstream.runner.torch.save (atomic)", "s3prl.downstream.runner.os.remove (after the next save)"]


# --- one training job per expdir ---

def lock_training_expdir(command: str) -> list:
    """Hold ``<expdir>/.speechprompt.lock`` (:mod:`s3prl_speechprompt.runlock`) for a ``-m train`` run.

    ``s3prl.run_downstream.get_downstream_args`` decides the expdir (``-p`` / ``-n`` / ``-e`` / ``-a``) and creates
    it; wrapped, the leader process (rank 0, or no DDP) then takes the lock before s3prl writes anything into it
    (``args_*.yaml``, tensorboard events, checkpoints), so a second training job on the same expdir is refused with
    one line naming the first. ``-m evaluate`` / ``-m inference`` take no lock: evaluating ``dev-best.ckpt``
    while training goes on is a normal use. The lock is released at exit; a killed job's lock is taken over by
    the next job (``-a`` resumes as before). Idempotent."""
    import atexit

    from s3prl_speechprompt.runlock import RunLock

    module = importlib.import_module("s3prl.run_downstream")
    if is_marked(module.get_downstream_args):
        return []
    original = module.get_downstream_args

    def get_downstream_args(*args, **kwargs):
        out = original(*args, **kwargs)
        parsed = out[0]
        leader = os.environ.get("RANK", "0") == "0" and parsed.local_rank in (None, 0)
        if parsed.mode == "train" and leader:
            lock = RunLock(parsed.expdir, command).acquire()
            _held_locks.append(lock)
            atexit.register(lock.release)
        return out

    module.get_downstream_args = mark(get_downstream_args)
    return ["s3prl.run_downstream.get_downstream_args (locks the training expdir)"]


_held_locks: list = []


def release_training_expdir() -> None:
    """Release the expdir lock of the run that just ended (a Python caller may run the runner again in-process)."""
    while _held_locks:
        _held_locks.pop().release()

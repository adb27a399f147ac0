"""Patches to s3prl 0.4.18's runner (``s3prl/downstream/runner.py``) that change what it does, applied by our
runner wrapper (:mod:`.run_downstream`) only - unlike :mod:`s3prl_speechprompt.compat`, which only lets s3prl
import and run on today's torch / torchaudio:

* :func:`atomic_runner_checkpoints`: crash-safe ``states-*.ckpt`` / ``dev-best.ckpt``, and the prompt expert's
  ``<expdir>/trained_task/`` written with every ``dev-best.ckpt``, on every run;
* :func:`fix_runner_ddp`: two bugs of its DDP training loop, on every distributed run;
* :func:`enable_cpu_ddp`: DDP with ``--device cpu --backend gloo`` on a machine without CUDA;
* :func:`lock_training_expdir`: one ``-m train`` job per expdir.

Every patch is made in s3prl's module namespaces at run time (no installed file is edited) and is idempotent.
"""
import importlib
import os
import types

from s3prl_speechprompt.compat import is_marked, mark


# --- distributed training on CPU ---

def enable_cpu_ddp() -> list:
    """Let s3prl's DDP path run with ``--device cpu --backend gloo`` on a machine without CUDA.

    Two things in s3prl 0.4.18 assume one GPU per process:

    * ``s3prl/run_downstream.py`` ``main()`` calls ``torch.cuda.set_device(args.local_rank)`` whenever
      ``--local_rank`` is given; without a CUDA driver that raises "Found no NVIDIA driver". Patched:
      ``torch.cuda.set_device`` becomes a no-op *only while CUDA is unavailable*.
    * ``s3prl/downstream/runner.py`` ``Runner._init_model`` wraps trainable models in
      ``DDP(model, device_ids=[self.args.local_rank], ...)``; torch rejects ``device_ids`` for a module
      on the CPU. Patched: the ``DDP`` name inside ``s3prl.downstream.runner`` drops ``device_ids`` /
      ``output_device`` for CPU modules (GPU modules get the original call).

    Returns the names of what was patched. Idempotent.
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
    """Two bugs in s3prl 0.4.18's DDP training loop (``s3prl/downstream/runner.py``), on any device:

    * Non-leader ranks ``continue`` before ``pbar.update(1)`` (``Runner.train``), so their step counter never
      moves and they train until rank 0 exits (then crash on a closed connection, or hang under NCCL).
      Patched: on non-leader ranks the ``overall`` progress bar advances from an optimizer step hook, i.e.
      once per optimizer step, as rank 0's does (a step skipped for a NaN gradient norm is not counted there).
    * Evaluation runs on rank 0 alone through the DDP-wrapped expert, whose forward would broadcast module
      buffers (a collective the other ranks never join). Our experts' buffers (k-means centroids, best
      score) need no broadcast, so the wrapper is built with ``broadcast_buffers=False``.
    Returns the names of what was patched. Idempotent.
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
    """Make ``Runner.train``'s checkpoints in ``s3prl/downstream/runner.py`` survive a kill at any moment.

    s3prl 0.4.18 writes ``states-<step>.ckpt`` / ``dev-best.ckpt`` with a plain ``torch.save(all_states, path)``
    (a kill mid-write leaves a truncated file that ``-a`` then picks as the newest and cannot load) and,
    with ``max_keep``, deletes the older ``states-*.ckpt`` *before* writing the new one (a kill in between
    leaves nothing to resume from). Patched, in that module's namespace only:

    * ``torch.save(obj, path)`` writes ``.<name>.<random>.tmp`` in the same folder, fsyncs it and renames it
      over ``path`` (``-a`` globs ``states-*.ckpt``, which never matches the hidden temp file);
    * ``os.remove`` of a ``states-*.ckpt`` is deferred until the next ``states-*.ckpt`` of that folder is
      complete, so there is always one whole checkpoint on disk;
    * after a ``dev-best.ckpt`` of the prompt expert, its trained task is written to ``<expdir>/trained_task/``
      (:meth:`~s3prl_speechprompt.trained.TrainedTask.from_runner_checkpoint` of what was saved).
    Returns the names of what was patched. Idempotent.
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

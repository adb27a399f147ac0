"""Make our downstreams visible to s3prl's runner as ``-d <name>`` without touching installed files.

s3prl 0.4.18 finds a downstream only through ``importlib.import_module(f"s3prl.downstream.{name}.expert")``
(``Runner._get_downstream``), so :func:`register` puts, per name, a synthesized package module at
``sys.modules["s3prl.downstream.<name>"]`` and our real expert module, imported under its own name (classes keep
their ``__module__``, so spawn/forkserver DataLoader workers can unpickle datasets), at ``...<name>.expert``. The
expert is imported lazily, when s3prl first asks for it (a meta-path finder answering only for registered names),
so a missing or broken module fails only when used.

Names: every ``<name>.yaml`` in ``s3prl_speechprompt.downstream_configs`` or in a ``SPEECHPROMPT_CONFIG_PATH``
folder defines ``-d <name>`` (a packaged name wins); any other ``speechprompt_*`` name is served on demand when
s3prl ships no downstream of that name (docs/adding_a_task.md). ``SPEECHPROMPT_EXTRA_DOWNSTREAMS="name=module,..."``
adds or overrides names (e.g. a throwaway expert in a test).
"""
import importlib
import importlib.abc
import importlib.machinery
import importlib.resources
import importlib.util
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional

from s3prl_speechprompt.errors import ConfigError, UnknownNameError

CONFIG_PACKAGE = "s3prl_speechprompt.downstream_configs"
BASELINE_EXPERT = "s3prl_speechprompt.s3prl_plugin.baseline_expert"
PROMPT_EXPERT = "s3prl_speechprompt.s3prl_plugin.prompt_expert"
ENV_EXTRA = "SPEECHPROMPT_EXTRA_DOWNSTREAMS"
ENV_CONFIG_PATH = "SPEECHPROMPT_CONFIG_PATH"
S3PRL_DOWNSTREAM = "s3prl.downstream"

# explicit name -> expert module overrides, consulted before the env hook and the naming rules;
# tests (or other front ends) may add entries here
EXPERT_MODULES: Dict[str, str] = {}

# name -> expert module, for every name registered in this process
_registered: Dict[str, str] = {}


def extra_downstreams(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Parse the developer hook ``SPEECHPROMPT_EXTRA_DOWNSTREAMS="name=module,name2=module2"``."""
    value = (os.environ if environ is None else environ).get(ENV_EXTRA, "")
    extra = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, module = (s.strip() for s in item.partition("="))
        if not sep or not name or not module:
            raise ConfigError(f"{ENV_EXTRA}: expected 'name=module' items separated by commas, got {item!r}")
        extra[name] = module
    return extra


def expert_module_for(name: str, overrides: Optional[Mapping[str, str]] = None) -> str:
    """The module whose ``DownstreamExpert`` serves ``-d name``: ``overrides``, :data:`EXPERT_MODULES`,
    ``SPEECHPROMPT_EXTRA_DOWNSTREAMS``, else by name (``*_linear`` / ``*_lstm``: the SUPERB baseline expert, any other
    ``speechprompt_*``: the prompt expert). Raises ``KeyError`` for a name that is not ours.
    """
    for table in (overrides or {}, EXPERT_MODULES, extra_downstreams()):
        if name in table:
            return table[name]
    if name.startswith("speechprompt_"):
        if name.endswith(("_linear", "_lstm")):
            return BASELINE_EXPERT
        return PROMPT_EXPERT
    raise UnknownNameError(f"{name!r} is not a SpeechPrompt downstream (expected a 'speechprompt_*' name, "
                           f"an entry of registry.EXPERT_MODULES or of ${ENV_EXTRA})")


def _config_dir():
    """The packaged configs as an importlib.resources Traversable (source checkout: ./downstream_configs)."""
    try:
        return importlib.resources.files(CONFIG_PACKAGE)
    except ModuleNotFoundError:
        # running from a source tree that is not pip-installed: setup.py maps the package to this folder
        return Path(__file__).resolve().parents[2] / "downstream_configs"


def packaged_downstreams() -> List[str]:
    """Names defined by ``<name>.yaml`` files in ``s3prl_speechprompt.downstream_configs``, sorted."""
    return _yaml_names(_config_dir())


def config_path_dirs(environ: Optional[Mapping[str, str]] = None) -> List[Path]:
    """The folders listed in ``SPEECHPROMPT_CONFIG_PATH`` (``os.pathsep``-separated; empty entries skipped)."""
    value = (os.environ if environ is None else environ).get(ENV_CONFIG_PATH, "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


def _yaml_names(folder) -> List[str]:
    if not folder.is_dir():
        return []
    return sorted(e.name[: -len(".yaml")] for e in folder.iterdir()
                  if e.name.endswith(".yaml") and e.is_file() and not e.name.startswith(("_", ".")))


def config_path_downstreams() -> List[str]:
    """Names defined by ``<name>.yaml`` files in the ``SPEECHPROMPT_CONFIG_PATH`` folders (first folder first)."""
    names: List[str] = []
    for folder in config_path_dirs():
        names += [n for n in _yaml_names(folder) if n not in names]
    return names


def default_config_path(name: str) -> Optional[str]:
    """Filesystem path of the packaged ``<name>.yaml`` (what ``-c`` defaults to), else of the first
    ``<name>.yaml`` in the ``SPEECHPROMPT_CONFIG_PATH`` folders, or None if there is none."""
    entry = _config_dir() / f"{name}.yaml"
    if entry.is_file():
        return os.fspath(entry)  # packages are installed as plain directories (no zip support needed)
    for folder in config_path_dirs():
        path = folder / f"{name}.yaml"
        if path.is_file():
            return os.fspath(path.resolve())
    return None


def all_downstreams() -> List[str]:
    """Every name :func:`register` would register by default: packaged configs, ``SPEECHPROMPT_CONFIG_PATH``
    configs and developer hook entries."""
    names = packaged_downstreams()
    for name in config_path_downstreams() + list(EXPERT_MODULES) + list(extra_downstreams()):
        if name not in names:
            names.append(name)
    return names


class _AliasLoader(importlib.abc.Loader):
    """Loads ``s3prl.downstream.<name>.expert`` by importing the real module and handing it over."""

    def __init__(self, real_name: str):
        self.real_name = real_name

    def create_module(self, spec):
        module = importlib.import_module(self.real_name)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module):
        # the import system stamped the alias spec on the real module: give it back its own
        module.__spec__ = self.real_spec


def _shipped_by_s3prl(full: str) -> bool:
    """Whether s3prl itself has the downstream package ``full`` (a folder under ``s3prl/downstream/``)."""
    parent = sys.modules.get(S3PRL_DOWNSTREAM)
    return importlib.machinery.PathFinder.find_spec(full, getattr(parent, "__path__", None)) is not None


class _OnDemandPackageLoader(importlib.abc.Loader):
    """Creates ``s3prl.downstream.<name>`` for a ``speechprompt_*`` name nobody registered."""

    def __init__(self, name: str, real: str):
        self.name, self.real = name, real

    def create_module(self, spec):
        return _package_module(self.name, self.real)

    def exec_module(self, module):
        _registered[self.name] = self.real


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Answers for ``s3prl.downstream.<name>.expert`` of registered names, and for
    ``s3prl.downstream.speechprompt_*`` packages that are neither registered nor shipped by s3prl."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, leaf = fullname.rpartition(".")
        if prefix == S3PRL_DOWNSTREAM and leaf.startswith("speechprompt_") and leaf.isidentifier() \
                and leaf not in _registered:
            if _shipped_by_s3prl(fullname):
                return None                       # a real s3prl downstream of that name
            try:
                real = expert_module_for(leaf)
            except KeyError:
                return None
            return importlib.machinery.ModuleSpec(fullname, _OnDemandPackageLoader(leaf, real), is_package=True)
        if leaf != "expert" or not prefix.startswith(S3PRL_DOWNSTREAM + "."):
            return None
        name = prefix[len(S3PRL_DOWNSTREAM) + 1:]
        real = _registered.get(name)
        if real is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(real))


_FINDER = _AliasFinder()


def _install_finder():
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _FINDER)


def _package_module(name: str, real: str) -> types.ModuleType:
    full = f"{S3PRL_DOWNSTREAM}.{name}"
    module = types.ModuleType(full, f"s3prl downstream {name!r}, served by {real} (registered by s3prl_speechprompt).")
    module.__spec__ = importlib.machinery.ModuleSpec(full, None, is_package=True)
    module.__path__ = []
    module.__package__ = full
    module.__speechprompt_expert__ = real
    return module


def register(names: Optional[Iterable[str]] = None, overrides: Optional[Mapping[str, str]] = None) -> List[str]:
    """Register ``-d <name>`` for each name (default: :func:`all_downstreams`, skipping with a warning a packaged YAML
    whose name maps to no expert); idempotent. Only synthesized modules are created here, each expert module is
    imported when s3prl first asks for it. A name taken by a real s3prl downstream (or anything else in
    ``sys.modules``) is refused with ``ValueError``. Returns the registered names.
    """
    import s3prl.downstream  # noqa: F401  (the parent package must exist before its children)

    if names is None:
        names = []
        for name in all_downstreams():
            try:
                expert_module_for(name, overrides)
            except KeyError:
                warnings.warn(f"{CONFIG_PACKAGE}: {name}.yaml has no expert module "
                              f"(not a 'speechprompt_*' name); -d {name} is not registered")
                continue
            names.append(name)
    names = list(names)
    if overrides:
        names += [n for n in overrides if n not in names]
    _install_finder()
    done = []
    for name in names:
        if not name.isidentifier():
            raise ConfigError(f"downstream name {name!r} must be a Python identifier (it becomes a module name)")
        real = expert_module_for(name, overrides)
        full = f"{S3PRL_DOWNSTREAM}.{name}"
        existing = sys.modules.get(full)
        if existing is not None and getattr(existing, "__speechprompt_expert__", None) is None:
            raise ConfigError(f"cannot register -d {name}: {full} is already a module ({existing!r})")
        if existing is None and _shipped_by_s3prl(full):
            raise ConfigError(f"cannot register -d {name}: s3prl already ships a downstream of that name")
        if existing is None or existing.__speechprompt_expert__ != real:
            sys.modules.pop(full + ".expert", None)
            package = _package_module(name, real)
            sys.modules[full] = package
            setattr(sys.modules[S3PRL_DOWNSTREAM], name, package)
        _registered[name] = real
        done.append(name)
    return done


def unregister(name: str) -> None:
    """Undo :func:`register` for one name (for tests); the real expert module stays imported."""
    full = f"{S3PRL_DOWNSTREAM}.{name}"
    if getattr(sys.modules.get(full), "__speechprompt_expert__", None) is None:
        return
    sys.modules.pop(full + ".expert", None)
    sys.modules.pop(full, None)
    parent = sys.modules.get(S3PRL_DOWNSTREAM)
    if parent is not None and hasattr(parent, name):
        delattr(parent, name)
    _registered.pop(name, None)

#!/usr/bin/env bash
# The test command: build or reuse a virtualenv, install only what is missing, run the suite on both cores.
#
#   bash tests/run.sh              # whole suite (what .ci/run runs)
#   bash tests/run.sh -k manifest  # extra arguments go to pytest
#
# Works on a machine with no .venv (creates it: torch, the package with its test extra, the fairseq oracle;
# ~10 min, most of it fairseq's compile) and right after the README's main-job command (adds the test extra
# and fairseq to that .venv). When everything setup.py asks for is already installed, no pip runs at all,
# so a rerun starts pytest within seconds. Environment: VENV (default .venv, relative to the repository),
# PYTHON (interpreter that creates a new venv, default python3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$REPO/$VENV" ;; esac

# torch first (2.14.1 and torchaudio 2.11.0 load together), then the package with its test extra, then
# fairseq-fixed as the test oracle (built against the torch, cython and numpy already present)
BASE=(torch==2.14.1 torchaudio==2.11.0 cython numpy wheel)
ORACLE=(fairseq-fixed==0.12.3.1)

if [ ! -x "$VENV/bin/python" ]; then
    echo "tests/run.sh: creating $VENV with $PYTHON" >&2
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# exit 0 iff every requirement (setup.py's install_requires and test extra, BASE, ORACLE) is installed in
# the venv at a version its specifier accepts, and the package itself is installed
satisfied() {
    "$PY" - "$REPO/setup.py" "${BASE[@]}" "${ORACLE[@]}" <<'EOF'
import ast, sys
from importlib import metadata
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

setup_py, pinned = sys.argv[1], sys.argv[2:]
call = next(n for n in ast.walk(ast.parse(open(setup_py).read())) if isinstance(n, ast.Call)
            and getattr(n.func, "id", "") == "setup")
kw = {k.arg: k.value for k in call.keywords}
wanted = list(ast.literal_eval(kw["install_requires"])) + list(ast.literal_eval(kw["extras_require"])["test"])
wanted += pinned + ["s3prl-speechprompt"]
missing = []
for line in wanted:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate():
        continue
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        missing.append(line)
        continue
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        missing.append(f"{line} (have {version})")
if missing:
    print("tests/run.sh: to install: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)
EOF
}

if ! satisfied; then
    "$PY" -m pip install -q "${BASE[@]}"
    "$PY" -m pip install -q -e "$REPO[test]"
    "$PY" -m pip install -q --no-build-isolation "${ORACLE[@]}"
    satisfied
fi

# the checkout is imported first (also by the tests' subprocesses), whatever the venv's editable install points at
export PATH="$VENV/bin:$PATH" PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m pytest -q -n 2 --dist worksteal tests "$@"

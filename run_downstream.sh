#!/usr/bin/env bash
# s3prl's run_downstream.py with the SpeechPrompt downstreams registered.
#
#   ./run_downstream.sh -m train -u hubert -d speechprompt_ks -n ks_pt     # any s3prl 0.4.18 flags
#   ./run_downstream.sh                                                    # no arguments: the default demo
#
# Set PYTHON to choose the interpreter (default: python on PATH).
set -euo pipefail
PYTHON="${PYTHON:-python}"

if [ "$#" -eq 0 ]; then
    # No arguments: run the embedded default demo end to end. The `demo` command of the
    # `speechprompt` CLI (s3prl_speechprompt/commands/) is written separately; until it exists this
    # fails with the CLI's "invalid choice" message.
    exec "$PYTHON" -m s3prl_speechprompt demo
fi

exec "$PYTHON" -m s3prl_speechprompt.s3prl_plugin.run_downstream "$@"

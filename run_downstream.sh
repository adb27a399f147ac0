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
    # No arguments: the embedded default end to end (synthetic KS corpus, fbank units, a small
    # pretrained unit LM, prompt tuning through s3prl's runner, test accuracy); see `speechprompt demo --help`.
    exec "$PYTHON" -m s3prl_speechprompt demo
fi

exec "$PYTHON" -m s3prl_speechprompt.s3prl_plugin.run_downstream "$@"

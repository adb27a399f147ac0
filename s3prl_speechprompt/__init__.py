"""SpeechPrompt for s3prl: prompt tuning a frozen GSLM unit language model on SUPERB tasks.

Layers (each imports only the ones listed before it; tests/test_layering.py checks this and that no module
imports itself back through others): ``errors`` (user errors and how commands report them) -> ``atomic``,
``compat``, ``safe_globals``, ``precision``, ``schedules``, ``runlock``, ``readers`` (atomic writes; s3prl on
today's torch/torchaudio; globals a checkpoint may name; autocast; lr schedules; one job per output directory; the
checked reader) -> ``ulm`` (fairseq-compatible unit LM) -> ``lm_ref`` (which LM weights, the one fingerprint) ->
``prompt`` (deep prompts, verbalizers, prompted LM, bank) -> ``units`` (k-means, dedup) -> ``tasks``,
``predictions``, ``record`` (SUPERB tasks, the predictions file, run.json) -> ``trained`` (a trained PT / FT-LM
task) -> back ends that do not import one another (``s3prl_plugin``, ``engine``, ``synth``, ``analysis``,
``report``) -> ``serve`` (trained tasks on new audio or units) -> front ends (``commands``/``cli``). The
benchmarks live in the repository's ``benchmarks/``, not in the package.
"""

__version__ = "0.1.0"

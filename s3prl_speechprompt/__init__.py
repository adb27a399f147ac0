"""SpeechPrompt for s3prl: prompt tuning a frozen GSLM unit language model on SUPERB tasks.

Layers (each imports only the ones listed before it; tests/test_layering.py checks this and that no
module imports itself back through others):
``errors`` (the user-error classes and how the commands report them) -> ``atomic``, ``compat``,
``safe_globals``, ``precision``, ``schedules``, ``runlock``, ``readers`` (atomic file writes; s3prl on today's
torch/torchaudio; the globals a checkpoint or km.bin may name; fp32/bf16/fp16 autocast; lr schedules; one job
per output directory; the one checked reader of checkpoints)
-> ``ulm`` (fairseq-compatible unit LM) -> ``lm_ref`` (which LM weights: reference, families, the one weights
fingerprint) -> ``prompt`` (deep prompts, verbalizers, prompted LM, prompt bank) -> ``units`` (k-means quantizer, dedup)
-> ``tasks`` (SUPERB task adapters), ``predictions`` (the per-utterance predictions file), ``record`` (the run
record, run.json) -> ``trained`` (a trained PT / FT-LM task: save, load, build for decoding) -> back ends, which
do not import one another (``s3prl_plugin``: s3prl's runner; ``engine``: training from unit files; ``synth``,
``analysis``, ``report``) -> services over the back ends (``serve``: trained tasks on new audio or units) -> front
ends (``commands``/``cli``). The benchmarks are not part of the package: they live in the repository's
``benchmarks/``.
"""

__version__ = "0.1.0"

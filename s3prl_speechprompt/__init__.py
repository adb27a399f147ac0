"""SpeechPrompt for s3prl: prompt tuning a frozen GSLM unit language model on SUPERB tasks.

Layers (each imports only the ones listed before it):
``ulm`` (fairseq-compatible unit LM) -> ``prompt`` (deep prompts, verbalizers, prompted LM)
-> ``units`` (k-means quantizer, dedup) -> ``tasks`` (SUPERB task adapters) -> front ends
(``s3prl_plugin``, ``commands``/``cli``).
"""

__version__ = "0.1.0"

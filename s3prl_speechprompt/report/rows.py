"""One row of the comparison table, and the task / method conventions every part of the report shares."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

# metrics shown per task (SUPERB's names), their display name, and whether higher is better
TASK_METRICS: Dict[str, List[Tuple[str, str, bool]]] = {
    "ks": [("accuracy", "acc", True)],
    "ic": [("accuracy", "acc", True)],
    "asr": [("wer", "WER", False), ("cer", "CER", False)],
    "sf": [("slot_type_f1", "F1", True), ("slot_value_cer", "CER", False)],
}
METRIC_LABELS = {m: label for specs in TASK_METRICS.values() for m, label, _ in specs}
HIGHER_IS_BETTER = {m: higher for specs in TASK_METRICS.values() for m, _, higher in specs}
METHOD_LABELS = {"pt": "PT (SpeechPrompt)", "ftlm": "FT-LM", "linear": "SUPERB linear", "lstm": "SUPERB BLSTM-CTC",
                 "blstm": "unit BLSTM"}
TASK_LABELS = {"ks": "KS", "ic": "IC", "asr": "ASR", "sf": "SF"}
TASK_ORDER = {"ks": 0, "ic": 1, "asr": 2, "sf": 3}


def higher_is_better(metric: str) -> bool:
    """Error rates (``*wer``, ``*cer``, ``*per``) are lower-is-better; everything else higher-is-better."""
    if metric in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[metric]
    return not metric.endswith(("wer", "cer", "per"))


@dataclass
class Row:
    source: str                     # "run", "seeds" (a seed group) or a published source
    task: str
    method: str
    upstream: str = ""
    metrics: Dict[str, float] = field(default_factory=dict)   # SUPERB metric name -> percent
    intervals: Dict[str, List[float]] = field(default_factory=dict)  # metric -> [low, high], percent (95%)
    interval_kind: Dict[str, str] = field(default_factory=dict)      # metric -> "wilson" | "bootstrap"
    n_test: Optional[int] = None    # utterances the test metrics are computed on (from the predictions file)
    predictions: str = ""           # the per-utterance predictions file the intervals come from
    seed: Optional[int] = None      # training seed (s3prl --seed, speechprompt train --seed)
    config_key: str = ""            # hash of the settings other than the seed (seed groups)
    std: Dict[str, float] = field(default_factory=dict)        # seed groups: standard deviation over seeds
    seeds: List[int] = field(default_factory=list)             # seed groups: the member runs' seeds
    members: List[str] = field(default_factory=list)           # seed groups: the member runs' expdirs
    test_from: str = ""             # which evaluation the test metrics come from
    trainable_params: Optional[int] = None
    params_text: str = ""           # as printed (published rows), or "+N featurizer"
    bytes_per_task: Optional[int] = None
    steps: Optional[int] = None
    total_steps: Optional[int] = None
    wall_s: Optional[float] = None
    train_loop_s: Optional[float] = None
    expdir: str = ""
    notes: List[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """A short name for sentences and plots: the experiment directory's name."""
        from pathlib import Path
        return Path(self.expdir).name if self.expdir else f"{self.source} {self.method}"

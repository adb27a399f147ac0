"""Published SpeechPrompt and SUPERB numbers, as rows of the comparison table (nothing here reads runs)."""
from __future__ import annotations

from typing import Iterable, List, Optional

from s3prl_speechprompt.report.rows import METHOD_LABELS, TASK_METRICS, Row


def superb_head_params(kind: str, dim: int, outputs: int) -> int:
    """Closed-form parameter count of SUPERB's heads (``baseline_expert.build_head`` with SUPERB's modelrc): linear
    Linear(dim, 256) + Linear(256, outputs); lstm Linear(dim, 1024) + 2 BLSTM layers of 1024 per direction (input
    1024, then 2048) + Linear(2048, outputs).
    """
    if kind == "linear":
        return dim * 256 + 256 + 256 * outputs + outputs
    if kind == "lstm":
        h = 1024

        def lstm_dir(inp):
            return 4 * h * (inp + h) + 2 * 4 * h

        return dim * h + h + 2 * lstm_dir(h) + 2 * lstm_dir(2 * h) + 2 * h * outputs + outputs
    raise ValueError(f"kind: expected 'linear' or 'lstm', got {kind!r}")


SPEECHPROMPT_SRC = "paper"       # SpeechPrompt v1, Interspeech 2022 (slides 36-40)
SUPERB_SRC = "SUPERB"           # SUPERB leaderboard "paper" rows (Interspeech 2021, weighted sum)
SOURCES = {
    "run": "this run (the experiment directory given)",
    SPEECHPROMPT_SRC: "published: SpeechPrompt v1 (Interspeech 2022; arXiv 2203.16773), Interspeech slides 36-40",
    SUPERB_SRC: "published: SUPERB leaderboard, Interspeech 2021 paper rows (frozen upstream, weighted sum); "
                "ASR WER on test-clean without LM; head parameters computed for the upstream's feature size",
}

# SpeechPrompt v1: (task, metric value, #param as printed); ASR = WER, SF = slot-type F1
_SPEECHPROMPT = {
    ("HuBERT", "PT"): {"ks": (95.16, "0.08M"), "ic": (98.40, "0.15M"), "asr": (34.17, "4.5M"), "sf": (66.90, "4.5M")},
    ("HuBERT", "FT"): {"ks": (96.30, "0.2M"), "ic": (98.34, "0.2M"), "asr": (6.42, "43M"), "sf": (88.53, "43M")},
    ("CPC", "PT"): {"ks": (93.54, "0.05M"), "ic": (97.57, "0.05M"), "asr": (59.41, "4.5M"), "sf": (65.25, "4.5M")},
    ("CPC", "FT"): {"ks": (91.88, "0.07M"), "ic": (64.09, "0.07M"), "asr": (20.18, "42.5M"), "sf": (71.19, "42.5M")},
}

# SUPERB: upstream -> (feature dim, {task: metrics}); ASR WER test-clean without LM
_SUPERB = {
    "HuBERT Base": (768, {"ks": {"accuracy": 96.30}, "ic": {"accuracy": 98.34}, "asr": {"wer": 6.42},
                          "sf": {"slot_type_f1": 88.53, "slot_value_cer": 25.20}}),
    "wav2vec 2.0 Base": (768, {"ks": {"accuracy": 96.23}, "ic": {"accuracy": 92.35}, "asr": {"wer": 6.43},
                               "sf": {"slot_type_f1": 88.30, "slot_value_cer": 24.77}}),
    "modified CPC": (256, {"ks": {"accuracy": 91.88}, "ic": {"accuracy": 64.09}, "asr": {"wer": 20.18},
                           "sf": {"slot_type_f1": 71.19, "slot_value_cer": 49.91}}),
    "FBANK": (240, {"ks": {"accuracy": 41.38}, "ic": {"accuracy": 9.65}, "asr": {"wer": 23.18},
                    "sf": {"slot_type_f1": 69.64, "slot_value_cer": 52.94}}),
}
_SUPERB_NOTES = {("FBANK", "ks"): "current leaderboard value (8.63 before 2021-10-14)",
                 ("FBANK", "ic"): "current leaderboard value (9.10 before 2021-10-14)"}
# outputs of SUPERB's heads: KS 12 classes, IC 6+14+4 slots, ASR 32 symbols (fairseq specials + char.dict)
_SUPERB_OUTPUTS = {"ks": ("linear", 12), "ic": ("linear", 24), "asr": ("lstm", 32)}


def reference_rows(tasks: Optional[Iterable[str]] = None) -> List[Row]:
    """Published rows for ``tasks`` (default: all four). Metrics in percent."""
    wanted = list(tasks) if tasks is not None else ["ks", "ic", "asr", "sf"]
    rows = []
    for task in wanted:
        for (model, method), results in _SPEECHPROMPT.items():
            if task in results:
                value, params = results[task]
                metric = TASK_METRICS[task][0][0]
                head = "SUPERB linear" if task in ("ks", "ic") else "SUPERB BLSTM-CTC"
                rows.append(Row(SPEECHPROMPT_SRC, task, METHOD_LABELS["pt"] if method == "PT" else head,
                                upstream=f"{model} -> 100 units, GSLM uLM" if method == "PT" else f"{model} (continuous)",
                                metrics={metric: value}, params_text=params))
        for model, (dim, results) in _SUPERB.items():
            if task not in results:
                continue
            params, text = None, ""
            if task in _SUPERB_OUTPUTS:
                kind, outputs = _SUPERB_OUTPUTS[task]
                params = superb_head_params(kind, dim, outputs)
            elif dim == 768:
                text = "≈42.99M"
            notes = [_SUPERB_NOTES[(model, task)]] if (model, task) in _SUPERB_NOTES else []
            rows.append(Row(SUPERB_SRC, task, "SUPERB " + ("linear" if task in ("ks", "ic") else "BLSTM-CTC"),
                            upstream=f"{model} (D={dim})", metrics=dict(results[task]), trainable_params=params,
                            params_text=text or "head, computed", notes=notes))
    return rows


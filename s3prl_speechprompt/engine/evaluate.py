"""Evaluate a trained experiment on a unit file: decode, map back to labels, score as the task does.

PT / FT-LM: greedy decoding after ``</s> units <s>`` with the KV cache, the inverse verbalizer and
``get_task(name).score`` (unregistered names get exact-match accuracy, so any classification unit file works).
BLSTM: argmax per label slot. The LM must match the sha256 recorded at training time. Writes, per split:
``<split>_predict.txt`` / ``<split>_truth.txt``, ``<split>_predictions.jsonl`` (:mod:`s3prl_speechprompt.predictions`),
``<split>_scores.json`` (the returned dict) and an evaluation in ``run.json`` (:mod:`s3prl_speechprompt.record`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from s3prl_speechprompt.atomic import atomic_write_text
from s3prl_speechprompt.engine.data import bucketed_batches, default_threads, encode_sources, read_records
from s3prl_speechprompt.errors import InputFileError
from s3prl_speechprompt.predictions import predictions_name, write_predictions
from s3prl_speechprompt.readers import read_json
from s3prl_speechprompt.trained import TrainedTask, make_task


def load_experiment(exp) -> dict:
    return read_json(Path(exp) / "config.json", "the config.json of a directory written by `speechprompt train`",
                     flag="--exp")


def evaluate(exp, split: str, units_path, batch_size: int = 64, ulm: Optional[str] = None, threads: int = 0,
             log=print, precision: str = "fp32") -> dict:
    """Decode and score; ``precision`` (fp32 | bf16 | fp16) is the autocast of the LM during decoding."""
    from s3prl_speechprompt import precision as amp
    exp = Path(exp)
    amp.check(precision, "--precision")
    torch.set_num_threads(threads or default_threads())
    config = load_experiment(exp)
    records = read_records(units_path, split)
    seen = {}
    for i, r in enumerate(records, 1):
        if r.id in seen:       # checked before decoding: the per-utterance predictions are keyed by id
            raise InputFileError(f"{units_path}: utterance id {r.id!r} of record {i} repeats record {seen[r.id]}; "
                             f"ids must be unique (the report pairs runs by utterance id)")
        seen[r.id] = i
    refs = [list(r.labels) for r in records]
    unfinished = 0
    if config["method"] == "blstm":
        from s3prl_speechprompt.engine.baseline import load_blstm, predict_blstm
        model, vocab = load_blstm(exp)
        hyps = predict_blstm(model, vocab, records)
        weights = exp / "model.pt"
    else:
        from s3prl_speechprompt.prompt.decode import decode
        served = TrainedTask.find(exp).build(ulm=ulm, name=str(exp))
        model, dictionary, verbalizer, budget = served.model, served.dictionary, served.verbalizer, served.budget
        sources = encode_sources(records, dictionary, units_path)
        hyps = [None] * len(records)
        batches = bucketed_batches([len(s) for s in sources], max_sentences=batch_size, shuffle=False)
        for idx in tqdm(batches, desc=f"evaluate {split}", unit="batch", mininterval=5):
            decoded = decode(model.logits_fn(), [sources[i] for i in idx], budget, precision=precision)
            for i, ids in zip(idx, decoded.tokens):
                hyps[i] = verbalizer.decode(dictionary.decode(ids))
            unfinished += decoded.unfinished
        weights = exp / "prompt.pt"
    task = make_task(config["task"], {})
    metrics = task.score(hyps, refs)
    atomic_write_text(exp / f"{split}_predict.txt",
                      "".join(f"{r.id}\t{task.label_string(h)}\n" for r, h in zip(records, hyps)))
    atomic_write_text(exp / f"{split}_truth.txt",
                      "".join(f"{r.id}\t{task.label_string(t)}\n" for r, t in zip(records, refs)))
    seed = (config.get("train_config") or {}).get("seed")
    write_predictions(exp / predictions_name(split), [r.id for r in records], refs, hyps, task=config["task"],
                      split=split, mode="evaluate", seed=seed, source=f"speechprompt evaluate {units_path}")
    result = {k: round(float(v), 6) for k, v in metrics.items()}
    result.update(trainable_params=config["trainable_params"],
                  stored_params=config.get("stored_params", config["trainable_params"]),
                  prompt_bytes=weights.stat().st_size, split=split,
                  n=len(records), unfinished=unfinished, method=config["method"], task=config["task"], seed=seed,
                  units=str(units_path), precision=precision)
    atomic_write_text(exp / f"{split}_scores.json", json.dumps(result, indent=1) + "\n")
    _record_evaluation(exp, result, metrics, weights)
    return result


def _record_evaluation(exp: Path, result: dict, metrics: dict, weights: Path) -> None:
    """The evaluation in EXP/run.json (for a run trained before run.json existed: created from config.json and its
    other splits' <split>_scores.json)."""
    from s3prl_speechprompt.record import FILE, Evaluation, RunRecord, engine_record, engine_scores, now
    split = result["split"]
    if (exp / FILE).is_file():
        rec = RunRecord.load(exp)
    else:
        rec = engine_record(exp)
        engine_scores(exp, rec, skip=(split,))
    rec.trained_task = "trained_task" if (exp / "trained_task").is_dir() else None
    rec.add(Evaluation(split=split, step=(rec.best or {}).get("step"), mode="evaluate",
                       metrics={**{k: result[k] for k in metrics}, "unfinished": result["unfinished"]},
                       n=result["n"], predictions=predictions_name(split), checkpoint=weights.name, at=now()))
    rec.save(exp)

"""SUPERB's downstream heads on the continuous upstream features (``-d speechprompt_<task>_linear|_lstm``).

The comparison baselines of SpeechPrompt: the same task readers and scorers as the prompt expert
(:mod:`s3prl_speechprompt.tasks`), but the frozen upstream's features go straight into SUPERB's heads:

* ``linear`` (utterance-level tasks, KS/IC): ``features (B, T, D) --Linear(D, 256)--> masked mean pooling
  --Linear(256, C)--> logits``, ``C`` the sum of one class set per label position (IC: one cross-entropy per
  action/object/location slice, summed, as SUPERB's ``fluent_commands``; a prediction is the argmax of every slice);
  s3prl's ``UtteranceLevel`` / ``MeanPooling`` modules.
* ``lstm`` (sequence tasks, ASR/SF): ``features --Linear(D, 1024)--> 2-layer BLSTM, 1024/direction
  --Linear(2048, V)--> CTC`` (s3prl's ASR ``RNNs``; blank = output 0; greedy decoding). SpecAug is s3prl's
  runner's, when the config has a ``specaug`` block.

Parameter names and sizes follow SUPERB's experts (``projector.*``, ``model.*``; 768-dim upstream: KS 199,948,
IC 203,032, ASR (V=32) 42,828,832).

Hooks a task can provide (see :class:`s3prl_speechprompt.tasks.base.Task`):

* **sequence tasks must** define ``ctc_vocabulary(self) -> List[str]``: the CTC output symbols in output order,
  **index 0 being the blank**, every label token of every item being one of the others. For SUPERB parity ASR
  returns fairseq's ``["<s>", "<pad>", "</s>", "<unk>"] + char.dict`` (V=32, blank ``<s>``) and SF ``["<pad>",
  "<eos>", "<unk>"] + characters + B-/E- slot tags`` (blank ``<pad>``). Hypotheses (symbol tuples without blanks)
  and references go to ``task.score``; the task strips any end-of-sentence symbol it put into its labels.
* classification tasks **may** define ``class_vocabularies(self) -> List[List[str]]`` (one ordered class list per
  label position); otherwise the classes are the sorted label tokens seen at each position of the training split.

The head kind: :func:`head_kind`. Class sets / CTC vocabulary are stored in the checkpoint, so ``-m evaluate -e``
rebuilds exactly the trained head.

Logged like the prompt expert (tensorboard, ``log.log``, ``<split>_predict.txt``, ``dev-best.ckpt`` on the task's
primary metric of ``dev`` or of its ``best_split``, ``speechprompt_info.json``, ``run.json``: :mod:`.records`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from s3prl_speechprompt.errors import CheckpointError, ConfigError
from s3prl_speechprompt.s3prl_plugin.config import from_expert_dict
from s3prl_speechprompt.s3prl_plugin.data import SplitData, saved_extra_state
from s3prl_speechprompt.s3prl_plugin.records import RunRecorder
from s3prl_speechprompt.tasks.base import Item, Task

log = logging.getLogger(__name__)

HEADS = ("linear", "lstm")

# SUPERB's modelrc defaults (speech_commands / fluent_commands, asr / ctc-snips configs)
LINEAR_MODELRC = {"projector_dim": 256, "select": "UtteranceLevel", "UtteranceLevel": {"pooling": "MeanPooling"}}
LSTM_MODELRC = {
    "project_dim": 1024, "select": "RNNs", "zero_infinity": True,
    "RNNs": {"module": "LSTM", "bidirection": True, "dim": [1024, 1024], "dropout": [0.2, 0.2],
             "layer_norm": [False, False], "proj": [False, False], "sample_rate": [1, 1],
             "sample_style": "concat", "total_rate": -1},
}


@dataclass
class BaselineConfig:
    """``downstream_expert`` of a ``*_linear`` / ``*_lstm`` YAML, validated once."""

    task: str
    head: Optional[str] = None                  # linear | lstm; default: -d suffix, else the task's kind
    datarc: dict = field(default_factory=dict)  # the task's SUPERB keys + batch_size, eval_batch_size, num_workers
    modelrc: dict = field(default_factory=dict)  # overrides of LINEAR_MODELRC / LSTM_MODELRC
    balanced_sampling: bool = False             # class-balanced training batches (SUPERB KS: true)
    bad_audio: str = "error"                    # unusable audio files: error (name them all) | skip (count, list)

    @classmethod
    def from_dict(cls, d: dict) -> "BaselineConfig":
        cfg = from_expert_dict(cls, d)
        if cfg.head is not None and cfg.head not in HEADS:
            raise ConfigError(f"downstream_expert.head: expected one of {list(HEADS)}, got {cfg.head!r}")
        return cfg


def head_kind(cfg_head: Optional[str], downstream: Optional[str], task: Task) -> str:
    """``linear`` or ``lstm``: the config, else the ``-d`` name's suffix, else the task's kind."""
    if cfg_head:
        return cfg_head
    for kind in HEADS:
        if (downstream or "").endswith(f"_{kind}"):
            return kind
    return "lstm" if callable(getattr(task, "ctc_vocabulary", None)) else "linear"


def _merged(defaults: dict, overrides: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in defaults.items()}
    for k, v in (overrides or {}).items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_head(kind: str, upstream_dim: int, output_size: int, upstream_rate: int = 160,
               modelrc: Optional[dict] = None) -> Dict[str, nn.Module]:
    """SUPERB's head as ``{"projector": Linear, "model": s3prl module}``.

    ``linear``: ``Linear(upstream_dim, projector_dim)`` + ``UtteranceLevel(projector_dim, output_size)``;
    ``lstm``: ``Linear(upstream_dim, project_dim)`` + ``RNNs(project_dim, output_size, upstream_rate)``.
    """
    if kind == "linear":
        from s3prl.downstream.model import UtteranceLevel

        rc = _merged(LINEAR_MODELRC, modelrc or {})
        if rc["select"] != "UtteranceLevel":
            raise ConfigError(f"modelrc.select: the linear head uses UtteranceLevel, got {rc['select']!r}")
        return {"projector": nn.Linear(upstream_dim, rc["projector_dim"]),
                "model": UtteranceLevel(rc["projector_dim"], output_size, **rc.get("UtteranceLevel", {}))}
    if kind == "lstm":
        from s3prl.downstream.asr.model import RNNs

        rc = _merged(LSTM_MODELRC, modelrc or {})
        if rc["select"] != "RNNs":
            raise ConfigError(f"modelrc.select: the lstm head uses RNNs, got {rc['select']!r}")
        return {"projector": nn.Linear(upstream_dim, rc["project_dim"]),
                "model": RNNs(rc["project_dim"], output_size, upstream_rate, **rc["RNNs"])}
    raise ConfigError(f"head: expected one of {list(HEADS)}, got {kind!r}")


def class_vocabularies(task: Task, train: Sequence[Item]) -> List[List[str]]:
    """One ordered class list per label position: the task's ``class_vocabularies()`` if it has one,
    else the sorted tokens seen at each position of the training split."""
    hook = getattr(task, "class_vocabularies", None)
    if callable(hook):
        return [list(v) for v in hook()]
    lengths = {len(it.labels) for it in train}
    if len(lengths) != 1:
        raise ConfigError(f"task {task.name!r}: the linear head needs a fixed number of label tokens per item, "
                         f"found lengths {sorted(lengths)} in the training split")
    n = lengths.pop()
    return [sorted({it.labels[i] for it in train}) for i in range(n)]


class DownstreamExpert(nn.Module):
    load_audio = staticmethod(SplitData.load_audio)     # s3prl's -m inference -t FILE reads audio through this

    def __init__(self, upstream_dim: int, downstream_expert: dict, expdir: str, upstream_rate: int = 160, **kwargs):
        super().__init__()
        self.cfg = BaselineConfig.from_dict(dict(downstream_expert))
        self.data = SplitData(self.cfg.task, self.cfg.datarc, expdir, kwargs, self.cfg.balanced_sampling,
                              self.cfg.bad_audio)
        self.task = self.data.task
        self.kind = head_kind(self.cfg.head, kwargs.get("downstream"), self.task)
        self.upstream_dim, self.upstream_name = upstream_dim, kwargs.get("upstream")
        self.recorder = RunRecorder(expdir, self.task, self.cfg.task, downstream_expert, kwargs,
                                    tag=f"speechprompt_{self.cfg.task}_{self.kind}", prefix=f"speechprompt {self.kind}",
                                    sizes=self.size_info, leader=self.data.leader)

        saved = saved_extra_state(kwargs.get("init_ckpt"), "kind")
        if self.kind == "linear":
            self.classes = saved["classes"] if saved else class_vocabularies(self.task, self.data.split("train"))
            self.class_index = [{c: i for i, c in enumerate(v)} for v in self.classes]
            output_size = sum(len(v) for v in self.classes)
        else:
            hook = getattr(self.task, "ctc_vocabulary", None)
            if saved:
                self.vocab = list(saved["vocab"])
            elif callable(hook):
                self.vocab = list(hook())
            else:
                raise ValueError(f"task {self.cfg.task!r} has no ctc_vocabulary(): the lstm (CTC) head needs the "
                                 f"task's output symbols, index 0 = blank (see baseline_expert's docstring)")
            if len(set(self.vocab)) != len(self.vocab) or len(self.vocab) < 2:
                raise ValueError(f"task {self.cfg.task!r}: ctc_vocabulary() must list >= 2 distinct symbols "
                                 f"(index 0 = blank), got {len(self.vocab)}")
            self.vocab_index = {s: i for i, s in enumerate(self.vocab)}
            output_size = len(self.vocab)
        head = build_head(self.kind, upstream_dim, output_size, upstream_rate, self.cfg.modelrc)
        self.projector, self.model = head["projector"], head["model"]
        self.zero_infinity = bool(_merged(LSTM_MODELRC, self.cfg.modelrc).get("zero_infinity", True))
        self.register_buffer("best_score", torch.tensor(float("-inf")))
        self.register_buffer("train_progress", torch.zeros(2, dtype=torch.long))   # (epoch, batches consumed)
        log.info("speechprompt %s/%s baseline: %d trainable parameters", self.cfg.task, self.kind,
                 self.num_trainable())
        self.recorder.start({"task": self.cfg.task, "method": self.kind, "units": None, "lm_fingerprint": None})
        self.data.check_run_splits(self.known_label_tokens())

    def known_label_tokens(self):
        if self.kind == "linear":
            return {c for v in self.classes for c in v}
        return set(self.vocab[1:])

    # ----------------------------------------------------------------- state
    def _head_identity(self) -> dict:
        state = {"kind": self.kind, "task": self.cfg.task}
        if self.kind == "linear":
            state["classes"] = [list(v) for v in self.classes]
        else:
            state["vocab"] = list(self.vocab)
        return state

    def get_extra_state(self):
        return {**self._head_identity(), "rng": SplitData.rng_state()}

    def set_extra_state(self, state):
        state = dict(state)
        SplitData.restore_rng(state.pop("rng", None))
        mine = self._head_identity()
        if state != mine:
            raise CheckpointError(f"checkpoint head {state.get('kind')}/{state.get('task')} with its class sets or "
                             f"vocabulary does not match this expert ({mine['kind']}/{mine['task']})")

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ----------------------------------------------------------------- s3prl's runner interface
    def get_dataloader(self, split: str, epoch: int = 0):
        return self.data.get_dataloader(split, self.train_progress, epoch)

    def log_records(self, split: str, records, logger, global_step: int, **kwargs):
        return self.recorder.log(split, records, logger, global_step, self.best_score)

    # ----------------------------------------------------------------- forward
    def _encode(self, features: List[torch.Tensor]):
        lengths = torch.tensor([len(f) for f in features], dtype=torch.long)       # (B,) on CPU (packing)
        x = self.projector(pad_sequence(features, batch_first=True))              # (B, T, P)
        return self.model(x, lengths)

    def forward(self, split: str, features: List[torch.Tensor], labels, ids, records, **kwargs):
        if self.kind == "linear":
            loss, hyps = self._classify(features, labels)
        else:
            loss, hyps = self._ctc(features, labels)
        if split == "train":
            self.train_progress[1] += 1
        records["loss"].append(loss.item())
        records["id"] += list(ids)
        records["ref"] += [tuple(y) for y in labels]
        records["hyp"] += hyps
        return loss

    def _classify(self, features, labels):
        logits, _ = self._encode(features)                                        # (B, C)
        loss, n_terms, hyps = logits.new_zeros(()), 0, [[] for _ in labels]
        start = 0
        for pos, index in enumerate(self.class_index):
            part = logits[:, start:start + len(index)]                             # (B, C_pos)
            start += len(index)
            target = torch.tensor([index.get(y[pos], -100) for y in labels], device=logits.device)
            if (target >= 0).any():
                loss = loss + nn.functional.cross_entropy(part, target, ignore_index=-100)
                n_terms += 1
            for b, k in enumerate(part.argmax(-1).tolist()):
                hyps[b].append(self.classes[pos][k])
        if n_terms == 0:   # every label unseen in training: nothing to learn from, keep the graph
            loss = logits.sum() * 0.0
        return loss, [tuple(h) for h in hyps]

    def _ctc(self, features, labels):
        logits, out_len = self._encode(features)                                  # (B, T, V), (B,)
        log_probs = logits.log_softmax(-1)
        targets = []
        for y in labels:
            missing = [t for t in y if t not in self.vocab_index or self.vocab_index[t] == 0]
            if missing:
                raise ValueError(f"task {self.cfg.task!r}: label tokens {missing[:5]} are not non-blank symbols "
                                 f"of ctc_vocabulary()")
            targets.append(torch.tensor([self.vocab_index[t] for t in y], dtype=torch.long))
        target_len = torch.tensor([len(t) for t in targets], dtype=torch.long)
        padded = pad_sequence(targets, batch_first=True).to(logits.device)        # (B, S); padding never read
        loss = nn.functional.ctc_loss(log_probs.transpose(0, 1), padded, out_len.long(), target_len, blank=0,
                                      zero_infinity=self.zero_infinity)
        with torch.no_grad():
            return loss, self._greedy(log_probs, out_len)

    def _greedy(self, logits, out_len) -> list:
        """Greedy CTC: arg-max per frame, repeats collapsed, blanks (0) dropped."""
        best = logits.argmax(-1).cpu()                                              # (B, T)
        return [tuple(self.vocab[i] for i in torch.unique_consecutive(best[b, :int(out_len[b])]).tolist() if i)
                for b in range(len(best))]

    @torch.no_grad()
    def inference(self, features: List[torch.Tensor], filenames: List[str]) -> List[str]:
        """s3prl's ``-m inference -t FILE``: the head's prediction (arg-max per class slice, or greedy CTC),
        printed and written to ``<expdir>/inference.ark`` (RunRecorder.log_inference)."""
        if self.kind == "linear":
            _, hyps = self._classify(features, [(None,) * len(self.class_index)] * len(features))  # no labels
        else:
            hyps = self._greedy(*self._encode(features))
        return self.recorder.log_inference(filenames, hyps)

    # ----------------------------------------------------------------- recording (RunRecorder)
    def size_info(self) -> dict:
        info = {"task": self.cfg.task, "method": self.kind, "head": self.kind,
                "upstream": self.upstream_name, "upstream_dim": self.upstream_dim,
                "trainable_params": self.num_trainable(), "checkpoint_bytes": SplitData.stored_bytes(self)}
        if self.kind == "linear":
            info["classes"] = [len(v) for v in self.classes]
        else:
            info["vocab_size"] = len(self.vocab)
        return info

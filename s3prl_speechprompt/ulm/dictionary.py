"""fairseq ``dict.txt`` vocabulary: 4 specials first, then one symbol per line.

GSLM unit LMs index units through this file, and the order is *not* always ``unit + 4``
(the CPC-100 dictionary is frequency ordered), so every unit <-> id conversion goes through here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Sequence

from s3prl_speechprompt.atomic import atomic_write_text
from s3prl_speechprompt.errors import InputFileError, MissingFileError, UnknownNameError

BOS, PAD, EOS, UNK = "<s>", "<pad>", "</s>", "<unk>"
SPECIALS = (BOS, PAD, EOS, UNK)


class Dictionary:
    """Symbols in fairseq's order: ``<s>``=0 (also the SpeechPrompt separator), ``<pad>``=1,
    ``</s>``=2 (also the LM's begin-of-sequence), ``<unk>``=3, then the dict.txt entries."""

    bos_index, pad_index, eos_index, unk_index = 0, 1, 2, 3

    def __init__(self, symbols: Iterable[str] = (), counts: Iterable[int] | None = None):
        self.symbols: List[str] = list(SPECIALS)
        self.counts: List[int] = [1] * len(SPECIALS)
        self.indices = {s: i for i, s in enumerate(self.symbols)}
        counts = list(counts) if counts is not None else None
        for i, sym in enumerate(symbols):
            self.add(sym, counts[i] if counts is not None else 1)

    def add(self, symbol: str, count: int = 1) -> int:
        if symbol in self.indices:
            raise ValueError(f"duplicate symbol {symbol!r} in dictionary")
        self.indices[symbol] = len(self.symbols)
        self.symbols.append(symbol)
        self.counts.append(int(count))
        return self.indices[symbol]

    def __len__(self) -> int:
        return len(self.symbols)

    def __eq__(self, other) -> bool:
        return isinstance(other, Dictionary) and self.symbols == other.symbols

    @property
    def units(self) -> List[str]:
        """The non-special symbols in index order."""
        return self.symbols[len(SPECIALS):]

    def index(self, symbol: str) -> int:
        return self.indices.get(symbol, self.unk_index)

    def encode(self, symbols: Sequence[str], strict: bool = True) -> List[int]:
        """Map symbols to ids; with ``strict`` an unknown symbol is an error, not a silent ``<unk>``."""
        ids = []
        for s in symbols:
            i = self.indices.get(s)
            if i is None:
                if strict:
                    raise UnknownNameError(
                        f"symbol {s!r} is not in the LM dictionary ({len(self.units)} units, "
                        f"e.g. {self.units[:5]}); were the units made with the same k-means as this LM?")
                i = self.unk_index
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> List[str]:
        return [self.symbols[int(i)] for i in ids]

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Dictionary":
        """Parse ``<symbol> <count>`` lines (an optional trailing ``#fairseq:overwrite`` flag is honoured)."""
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(
                f"{path}: GSLM dictionary not found; a unit LM directory needs the dict.txt that was used to "
                f"train checkpoint_best.pt (GSLM tarballs ship it next to the checkpoint)")
        d = cls()
        for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip()
            if not line:
                continue
            overwrite = line.endswith("#fairseq:overwrite")
            if overwrite:
                line = line[: -len("#fairseq:overwrite")].rstrip()
            parts = line.rsplit(" ", 1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise InputFileError(f"{path}:{lineno}: expected '<symbol> <count>', got {raw!r}")
            sym, count = parts[0], int(parts[1])
            if sym in d.indices:
                if overwrite:
                    d.counts[d.indices[sym]] = count
                    continue
                raise InputFileError(f"{path}:{lineno}: duplicate symbol {sym!r} (add '#fairseq:overwrite' if "
                                     f"intended)")
            d.add(sym, count)
        return d

    def save(self, path: str | os.PathLike) -> None:
        """Write dict.txt atomically (specials are implicit, as in fairseq)."""
        text = "".join(f"{s} {c}\n" for s, c in zip(self.units, self.counts[len(SPECIALS):]))
        atomic_write_text(path, text)


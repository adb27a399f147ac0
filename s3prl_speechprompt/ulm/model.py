"""A fairseq ``transformer_lm``-compatible decoder-only unit LM in plain PyTorch.

Same computation as fairseq's ``TransformerLanguageModel`` as GSLM trained it (pre-LN blocks, final LayerNorm,
sinusoidal positions offset by ``padding_idx``, embeddings scaled by sqrt(d), ReLU FFN, biased projections, tied
output) and fairseq's parameter names, so state dicts move between the two without renaming. Two additions the
reference cannot do in one pass: per-layer prefix key/value *inputs* (SpeechPrompt's deep prompts, projected by
the frozen k/v projections, in front of the token keys) and an incremental KV cache that keeps those prefix keys.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from s3prl_speechprompt.errors import ConfigError

# fairseq transformer_lm architectures: name -> (embed_dim, ffn_dim, layers, heads, activation)
ARCHITECTURES = {
    "transformer_lm": (512, 2048, 6, 8, "relu"),
    "transformer_lm_big": (1024, 4096, 12, 16, "relu"),
    "transformer_lm_gpt": (768, 3072, 12, 12, "gelu"),
    "transformer_lm_gpt2_tiny": (64, 64, 2, 1, "gelu"),
    "transformer_lm_gpt2_small": (1024, 4096, 24, 16, "gelu"),
    "transformer_lm_gpt2_medium": (1280, 5120, 36, 20, "gelu"),
    "transformer_lm_gpt2_big": (1600, 6400, 48, 25, "gelu"),
    # small GSLM-shaped models (same layout as transformer_lm_big) for CPU pretraining and tests;
    # they are saved as plain ``transformer_lm`` with explicit sizes, so fairseq loads them too
    "ulm_tiny": (64, 256, 2, 4, "relu"),
    "ulm_small": (256, 1024, 4, 4, "relu"),
    "ulm_base": (512, 2048, 6, 8, "relu"),
}


@dataclass
class ULMConfig:
    """Hyper-parameters of a unit LM; defaults are GSLM's ``transformer_lm_big``."""

    vocab_size: int
    embed_dim: int = 1024
    ffn_dim: int = 4096
    layers: int = 12
    heads: int = 16
    activation: str = "relu"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    max_positions: int = 3072          # the pretraining length; longer inputs still get sinusoids
    padding_idx: int = 1
    scale_embedding: bool = True
    normalize_before: bool = True      # pre-LN (GSLM); False = post-LN, as some fairseq configs store
    final_norm: bool = True
    arch: str = "transformer_lm_big"

    def __post_init__(self):
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by heads={self.heads}")
        if self.activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be relu or gelu, got {self.activation!r}")

    @classmethod
    def from_arch(cls, arch: str, vocab_size: int, **overrides) -> "ULMConfig":
        if arch not in ARCHITECTURES:
            raise ConfigError(f"unknown unit-LM architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
        d, f, n, h, act = ARCHITECTURES[arch]
        kw = dict(embed_dim=d, ffn_dim=f, layers=n, heads=h, activation=act, arch=arch)
        kw.update(overrides)
        return cls(vocab_size=vocab_size, **kw)

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal_positions(positions: torch.Tensor, dim: int, padding_idx: int) -> torch.Tensor:
    """fairseq's sinusoid (sin half then cos half, not interleaved) for integer ``positions`` (B, T), computed on the
    fly so positions past the pretrained length work; the padding position maps to zeros as fairseq's zeroed row.
    """
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float, device=positions.device) * -step)
    angles = positions.float().unsqueeze(-1) * freqs                       # (B, T, half)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)        # (B, T, 2*half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb.masked_fill(positions.eq(padding_idx).unsqueeze(-1), 0.0)


@dataclass
class KVCache:
    """Keys/values of everything seen so far, per layer, with the deep-prompt prefix in front.

    ``keys[l]``/``values[l]``: (B, H, S, head_dim) views; ``key_padding``: (B, S) True at padding keys; ``n_prefix``:
    deep-prefix keys at the front (always visible); ``seq_len``: positions of the causal sequence (input prompt +
    tokens, pads included); ``token_count``: real tokens per row, which sets the next positions. Storage grows
    geometrically with spare capacity, so a decoding step writes only its new key/value (``torch.cat`` every step was
    O(S) memory traffic per layer per token and dominated cached decoding at ASR lengths).
    """

    key_padding: Optional[torch.Tensor] = None
    n_prefix: int = 0
    seq_len: int = 0
    token_count: Optional[torch.Tensor] = None
    _kbuf: List[torch.Tensor] = field(default_factory=list, repr=False)
    _vbuf: List[torch.Tensor] = field(default_factory=list, repr=False)
    _len: List[int] = field(default_factory=list, repr=False)

    MIN_SPARE = 64         # headroom allocated with the first call (decoding steps then write in place)

    @property
    def empty(self) -> bool:
        return self.key_padding is None

    @property
    def keys(self) -> List[torch.Tensor]:
        return [b[:, :, :n] for b, n in zip(self._kbuf, self._len)]

    @property
    def values(self) -> List[torch.Tensor]:
        return [b[:, :, :n] for b, n in zip(self._vbuf, self._len)]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``/``v`` (B, H, T, hd) after layer ``layer``'s cached keys; return all keys/values (views)."""
        T = k.size(2)
        if layer == len(self._kbuf):                     # first call: this layer's storage
            cap = T + max(self.MIN_SPARE, T // 2)
            shape = (k.size(0), k.size(1), cap, k.size(3))
            self._kbuf.append(k.new_empty(shape))
            self._vbuf.append(v.new_empty(shape))
            self._len.append(0)
        n = self._len[layer]
        kb, vb = self._kbuf[layer], self._vbuf[layer]
        if n + T > kb.size(2):                           # grow geometrically: amortised O(1) per token
            cap = max(n + T, 2 * kb.size(2))
            shape = (kb.size(0), kb.size(1), cap, kb.size(3))
            nk, nv = kb.new_empty(shape), vb.new_empty(shape)
            nk[:, :, :n] = kb[:, :, :n]
            nv[:, :, :n] = vb[:, :, :n]
            self._kbuf[layer], self._vbuf[layer] = kb, vb = nk, nv
        kb[:, :, n:n + T] = k
        vb[:, :, n:n + T] = v
        self._len[layer] = n + T
        return kb[:, :, :n + T], vb[:, :, :n + T]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (e.g. beam search survivors)."""
        self._kbuf = [k.index_select(0, index) for k in self._kbuf]
        self._vbuf = [v.index_select(0, index) for v in self._vbuf]
        self.key_padding = self.key_padding.index_select(0, index)
        self.token_count = self.token_count.index_select(0, index)


PrefixKV = Sequence[Tuple[torch.Tensor, torch.Tensor]]


class SelfAttention(nn.Module):
    def __init__(self, cfg: ULMConfig):
        super().__init__()
        d = cfg.embed_dim
        self.heads, self.head_dim = cfg.heads, d // cfg.heads
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.dropout = cfg.attention_dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:                   # (B, T, C) -> (B, H, T, hd)
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, h, mask, prefix=None, cache: Optional[KVCache] = None, layer: int = 0):
        """``h``: (B, T, C) normalised input; ``mask``: (B, 1, T, S) True = may attend;
        ``prefix``: optional (k_in, v_in), each (L, C) or (B, L, C), replacing the key/value inputs."""
        B = h.size(0)
        q = self._split(self.q_proj(h))
        k = self._split(self.k_proj(h))
        v = self._split(self.v_proj(h))
        if prefix is not None:
            # project the prefix inputs as given ((L, C): once for the batch, not once per row), then broadcast;
            # projecting a batch-expanded copy cost ~12% of a PT training step at ASR lengths (L=176)
            pk, pv = (p if p.dim() == 3 else p.unsqueeze(0) for p in prefix)
            k = torch.cat([self._split(self.k_proj(pk)).expand(B, -1, -1, -1), k], dim=2)   # (B, H, L+T, hd)
            v = torch.cat([self._split(self.v_proj(pv)).expand(B, -1, -1, -1), v], dim=2)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)   # (B, H, T, hd)
        out = out.transpose(1, 2).reshape(B, -1, self.heads * self.head_dim)
        return self.out_proj(out)


class DecoderLayer(nn.Module):
    """Pre-LN block: x + attn(LN(x)), then x + fc2(act(fc1(LN(x)))); post-LN puts each LN after its sum."""

    def __init__(self, cfg: ULMConfig):
        super().__init__()
        self.self_attn = SelfAttention(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.act = F.relu if cfg.activation == "relu" else F.gelu
        self.dropout = nn.Dropout(cfg.dropout)
        self.activation_dropout = nn.Dropout(cfg.activation_dropout)
        self.normalize_before = cfg.normalize_before

    def forward(self, x, mask, prefix=None, cache=None, layer=0):
        if self.normalize_before:
            x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), mask, prefix, cache, layer))
            return x + self.dropout(self.fc2(self.activation_dropout(self.act(self.fc1(self.final_layer_norm(x))))))
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, mask, prefix, cache, layer)))
        return self.final_layer_norm(x + self.dropout(self.fc2(self.activation_dropout(self.act(self.fc1(x))))))


class Decoder(nn.Module):
    """Holds the parameters under fairseq's names (``decoder.*``)."""

    def __init__(self, cfg: ULMConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.padding_idx)
        nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=cfg.embed_dim ** -0.5)   # fairseq's init
        with torch.no_grad():
            self.embed_tokens.weight[cfg.padding_idx].zero_()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.layer_norm = nn.LayerNorm(cfg.embed_dim) if cfg.final_norm else None
        self.output_projection = nn.Linear(cfg.embed_dim, cfg.vocab_size, bias=False)
        self.output_projection.weight = self.embed_tokens.weight                         # tied


class UnitLM(nn.Module):
    """GSLM unit language model. ``forward(tokens)`` -> logits (B, T, V)."""

    def __init__(self, cfg: ULMConfig):
        super().__init__()
        self.cfg = cfg
        self.decoder = Decoder(cfg)
        self.embed_scale = math.sqrt(cfg.embed_dim) if cfg.scale_embedding else 1.0
        self.dropout = nn.Dropout(cfg.dropout)

    @property
    def num_layers(self) -> int:
        return len(self.decoder.layers)

    def set_dropout(self, dropout: float, attention_dropout: float, activation_dropout: float = 0.0) -> None:
        """Prompt tuning runs the frozen LM with dropout 0; FT-LM uses 0.1 (the paper's settings)."""
        self.cfg.dropout, self.cfg.attention_dropout = dropout, attention_dropout
        self.cfg.activation_dropout = activation_dropout
        for m in self.modules():
            if isinstance(m, SelfAttention):
                m.dropout = attention_dropout
            elif isinstance(m, DecoderLayer):
                m.dropout.p, m.activation_dropout.p = dropout, activation_dropout
        self.dropout.p = dropout

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unscaled token embeddings (B, T, C); callers may edit them (e.g. the separator) and pass them back."""
        return self.decoder.embed_tokens(tokens)

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        embeds: Optional[torch.Tensor] = None,
        prefix_kv: Optional[PrefixKV] = None,
        prefix_embeds: Optional[torch.Tensor] = None,
        prefix_padding: Optional[torch.Tensor] = None,
        cache: Optional[KVCache] = None,
        features_only: bool = False,
    ) -> torch.Tensor:
        """Logits (B, T, V) for ``tokens`` (B, T), right or left padded with ``padding_idx``.

        ``embeds``: unscaled (B, T, C) instead of ``embed(tokens)``; ``prefix_kv``: one (k_in, v_in) pair per
        layer, each (L, C) or (B, L, C), deep-prompt inputs visible to every token, without positions;
        ``prefix_embeds``: (L, C) or (B, L, C) input-level prompt prepended to the scaled input (no positions; its
        outputs are dropped); ``prefix_padding``: (B, L) bool, True where a row's deep-prefix slot is padding
        (mixed-task batches, ``prompt/bank.py``); ``cache``: a ``KVCache`` the first call fills (prefixes
        included), later calls pass only the new tokens and no prefixes.
        """
        B, T = tokens.shape
        first = cache is None or cache.empty
        if not first and (prefix_kv is not None or prefix_embeds is not None):
            raise ValueError("prefixes go in the first call only; the cache already holds them")
        if prefix_kv is not None and len(prefix_kv) != self.num_layers:
            raise ValueError(f"prefix_kv: expected {self.num_layers} (k, v) pairs, got {len(prefix_kv)}")
        pad = tokens.eq(self.cfg.padding_idx)
        seen = cache.token_count if not first else tokens.new_zeros(B)
        counts = seen.unsqueeze(1) + torch.cumsum((~pad).long(), dim=1)
        positions = torch.where(pad, torch.full_like(counts, self.cfg.padding_idx), counts + self.cfg.padding_idx)
        x = self.embed_scale * (self.embed(tokens) if embeds is None else embeds)
        x = x + sinusoidal_positions(positions, self.cfg.embed_dim, self.cfg.padding_idx).to(x.dtype)
        n_input_prefix = 0
        if prefix_embeds is not None:
            pe = prefix_embeds if prefix_embeds.dim() == 3 else prefix_embeds.unsqueeze(0)
            n_input_prefix = pe.size(1)
            x = torch.cat([pe.expand(B, -1, -1).to(x.dtype), x], dim=1)
            pad = torch.cat([pad.new_zeros(B, n_input_prefix), pad], dim=1)
        x = self.dropout(x)

        n_deep = prefix_kv[0][0].shape[-2] if prefix_kv is not None else (0 if first else cache.n_prefix)
        if prefix_padding is not None and tuple(prefix_padding.shape) != (B, n_deep):
            raise ValueError(f"prefix_padding: expected shape {(B, n_deep)} (batch, prefix length), "
                             f"got {tuple(prefix_padding.shape)}")
        if not first:
            past_pad = cache.key_padding
        else:
            past_pad = prefix_padding.to(pad.dtype) if prefix_padding is not None else pad.new_zeros(B, n_deep)
        key_padding = torch.cat([past_pad, pad], dim=1)                         # (B, S)
        past_seq = 0 if first else cache.seq_len
        mask = self._attention_mask(key_padding, n_deep, past_seq, x.size(1))
        if cache is not None:
            cache.key_padding, cache.n_prefix = key_padding, n_deep
            cache.seq_len = past_seq + x.size(1)
            cache.token_count = seen + (~tokens.eq(self.cfg.padding_idx)).sum(1)

        for i, layer in enumerate(self.decoder.layers):
            x = layer(x, mask, prefix_kv[i] if prefix_kv is not None else None, cache, i)
        if self.decoder.layer_norm is not None:
            x = self.decoder.layer_norm(x)
        x = x[:, n_input_prefix:]
        return x if features_only else self.decoder.output_projection(x)

    @staticmethod
    def _attention_mask(key_padding: torch.Tensor, n_deep: int, past: int, T: int) -> torch.Tensor:
        """(B, 1, T, S) boolean: non-pad deep-prefix keys always; earlier non-pad keys of the sequence; itself."""
        S = key_padding.size(1)
        q_pos = torch.arange(T, device=key_padding.device).unsqueeze(1) + past        # (T, 1)
        k_pos = torch.arange(S, device=key_padding.device).unsqueeze(0) - n_deep      # (1, S)
        causal = k_pos <= q_pos
        allowed = ((k_pos < 0) | causal).unsqueeze(0) & ~key_padding.unsqueeze(1)     # (B, T, S)
        allowed = allowed | (k_pos == q_pos).unsqueeze(0)   # a padded query still sees itself: no NaN rows
        return allowed.unsqueeze(1)

    def num_parameters(self) -> int:
        """Distinct parameters (the tied output projection counted once)."""
        return sum(p.numel() for p in self.parameters())

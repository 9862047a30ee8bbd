"""A decoder-only Llama-style Transformer: the model the bundled trainer pretrains.

Read top to bottom: configuration and presets, the building blocks (RMSNorm, rotary position embeddings,
grouped-query attention, SwiGLU feed-forward), the block and the full model, weight init, and greedy /
sampled generation with a key-value cache.

The model is written for plain single-device execution. Parallelism (tensor parallel, FSDP2, activation
checkpointing, ``torch.compile``) is applied from outside by ``train.parallel.parallelize``, which relies on
the submodule names here (``tok_embeddings``, ``layers.<i>.attention.wq`` ...). Two details keep the code
valid when tensor parallelism shards the heads: the attention reshapes with ``-1`` for the head count, and
the rotary tables are real ``cos`` / ``sin`` buffers (DTensor handles real tensors only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------


def _llama_ffn_hidden(dim: int, multiple_of: int = 256) -> int:
    """Llama's SwiGLU hidden size: 2/3 of 4*dim (same parameter count as a 4*dim GELU MLP), rounded up."""
    hidden = int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass
class ModelConfig:
    """Shape of the Transformer. ``ffn_hidden=None`` takes Llama's default from ``dim``."""

    vocab_size: int = 50257
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    n_kv_heads: int | None = None  # None: as many as n_heads (plain multi-head attention)
    ffn_hidden: int | None = None
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    init_std: float = 0.02
    value_head: bool = False  # a reward model: ``output`` maps dim -> 1 scalar (never tied)
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.ffn_hidden is None:
            self.ffn_hidden = _llama_ffn_hidden(self.dim)
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary embeddings")
        if self.value_head and self.tie_embeddings:
            raise ValueError("a value head (dim -> 1) cannot be tied to the token embeddings")

    @property
    def out_features(self) -> int:
        """Width of the output projection: the vocabulary, or 1 for a value head."""
        return 1 if self.value_head else self.vocab_size

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    # Presets. Sizes with their default vocabularies (printed by tests/train/test_model.py):
    #   tiny  vocab 256     ~0.13M  unit tests
    #   small vocab 50257   ~17.6M  (4.7M without the tied embedding) CPU demo
    #   124m  vocab 50257   ~123.6M GPT-2 small's shape with a SwiGLU MLP, tied embeddings
    #   350m  vocab 50257   ~354M   GPT-2 medium's shape, tied embeddings
    #   1b    vocab 128256  ~1.236B Llama-3.2-1B's shape (GQA 32/8, ffn 8192, theta 500k), tied embeddings
    PRESETS = {
        "tiny": dict(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=192,
                     max_seq_len=128),
        "small": dict(vocab_size=50257, dim=256, n_layers=6, n_heads=8, n_kv_heads=4, ffn_hidden=768,
                      max_seq_len=1024, tie_embeddings=True),
        "124m": dict(vocab_size=50257, dim=768, n_layers=12, n_heads=12, n_kv_heads=12, ffn_hidden=2048,
                     max_seq_len=1024, tie_embeddings=True),
        "350m": dict(vocab_size=50257, dim=1024, n_layers=24, n_heads=16, n_kv_heads=16, ffn_hidden=2816,
                     max_seq_len=1024, tie_embeddings=True),
        "1b": dict(vocab_size=128256, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_hidden=8192,
                   max_seq_len=2048, rope_theta=500000.0, tie_embeddings=True),
    }

    @classmethod
    def preset(cls, name: str, **overrides) -> ModelConfig:
        """A named preset (see ``PRESETS``) with any field overridden, e.g. ``preset("small", vocab_size=32000)``."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown model preset {name!r}; known: {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], "name": name, **overrides})

    def with_(self, **overrides) -> ModelConfig:
        return replace(self, **overrides)

    # -- sizes and compute ------------------------------------------------------------------------------

    def _block_params(self) -> int:
        """Parameters of one TransformerBlock: attention (q, k, v, o), SwiGLU (w1, w2, w3), two norms."""
        d, hd = self.dim, self.head_dim
        attention = d * (self.n_heads * hd) + 2 * d * (self.n_kv_heads * hd) + (self.n_heads * hd) * d
        ffn = 3 * d * self.ffn_hidden
        return attention + ffn + 2 * d

    def num_params(self, vocab_size: int | None = None, embeddings: bool = True) -> int:
        """Exact number of distinct parameters of ``Transformer(self)`` (equals ``sum(p.numel())``).

        ``embeddings=False`` leaves out the input embedding table (vocab x dim). With untied embeddings the
        output projection is still counted (it is a matmul like any other); with tied ones the shared
        matrix is left out altogether. ``vocab_size`` overrides the config's (e.g. a tokenizer's).
        """
        v = self.vocab_size if vocab_size is None else vocab_size
        body = self.n_layers * self._block_params() + self.dim  # + final norm
        output = 0 if self.tie_embeddings else (1 if self.value_head else v) * self.dim
        return body + output + (v * self.dim if embeddings else 0)

    def flops_per_token(self, seq_len: int | None = None, vocab_size: int | None = None) -> int:
        """Training FLOPs per token (forward + backward), the PaLM (appendix B) / Chinchilla convention:

            flops = 6 * N + 12 * n_layers * dim * seq_len

        where N = n_layers * (attention + SwiGLU weight matrices) + vocab_size * dim counts every weight
        used in a matmul once: the block matrices and the output projection (tied or not), but not the
        embedding lookup and not the norm weights. 6 = 2 (multiply-add) x 3 (forward, backward for inputs,
        backward for weights). The second term is the attention scores and their weighted sum, QK^T and AV:
        2 matmuls x 2 FLOPs x seq_len x (n_heads * head_dim = dim) per layer forward, x3 for training; it is
        counted over the full (not causally halved) score matrix, as PaLM, Megatron and llm-foundry do.
        """
        t = self.max_seq_len if seq_len is None else seq_len
        v = self.vocab_size if vocab_size is None else vocab_size
        matmul = self.n_layers * (self._block_params() - 2 * self.dim) + (1 if self.value_head else v) * self.dim
        return 6 * matmul + 12 * self.n_layers * self.dim * t


# ---------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square norm (no mean subtraction, no bias), computed in fp32 and cast back."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def rope_tables(head_dim: int, max_seq_len: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each [max_seq_len, head_dim // 2] in fp32.

    Pair i of a head (coordinates i and i + head_dim/2, the "rotate half" layout) turns by position *
    theta^(-2i / head_dim).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [B, T, H, head_dim] by the angles of its positions (cos, sin: [T, head_dim // 2], the
    same positions for every row, or [B, T, head_dim // 2], per-token positions)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    cos = cos[:, :, None, :].to(x.dtype)
    sin = sin[:, :, None, :].to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class KVCache:
    """Keys and values of every layer for generation: per layer two [B, kv_heads, max_len, head_dim]
    tensors, filled position by position. Each layer's pair is allocated at its first update with the
    shape, dtype and device of the keys it receives, so the cache follows the model: bf16 compute under
    mixed precision, the local share of the heads under tensor parallel.

    When the forward passes get ``doc_ids`` the cache also keeps the document id of every cached position
    (``doc_ids`` [B, max_len]), so that a new token attends only to the cached keys of its own document:
    that is how a batch of left-padded prompts is generated (padding is its own document)."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int):
        self.batch_size = batch_size
        self.max_len = max_len
        self.k: list[torch.Tensor | None] = [None] * cfg.n_layers
        self.v: list[torch.Tensor | None] = [None] * cfg.n_layers
        self.doc_ids: torch.Tensor | None = None

    def update_doc_ids(self, start_pos: int, doc_ids: torch.Tensor) -> torch.Tensor:
        """Store doc_ids [B, T] at positions start_pos.. and return the ids of all positions so far."""
        end = start_pos + doc_ids.shape[1]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked for {end}")
        if self.doc_ids is None:
            self.doc_ids = doc_ids.new_zeros((self.batch_size, self.max_len))
        self.doc_ids[:, start_pos:end] = doc_ids
        return self.doc_ids[:, :end]

    def update(self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v [B, H_kv, T, hd] at positions start_pos.. and return all keys/values so far."""
        end = start_pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked for {end}")
        if self.k[layer] is None:
            shape = (self.batch_size, k.shape[1], self.max_len, k.shape[3])
            self.k[layer] = k.new_zeros(shape)
            self.v[layer] = v.new_zeros(shape)
        self.k[layer][:, :, start_pos:end] = k
        self.v[layer][:, :, start_pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class Attention(nn.Module):
    """Grouped-query self-attention with rotary positions and PyTorch's fused SDPA kernel.

    ``n_kv_heads`` key/value heads are shared by groups of ``n_heads / n_kv_heads`` query heads. Head counts
    are read back from tensor shapes (``-1``) so that a tensor-parallel shard of the heads runs unchanged.
    """

    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        self.layer_id = layer_id
        self.head_dim = cfg.head_dim
        self.n_rep = cfg.n_heads // cfg.n_kv_heads
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: KVCache | None = None, start_pos: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask``: a boolean [B, 1, T, keys] attention mask (True = may attend) that replaces the causal
        one, e.g. block-diagonal causal for packed documents (built once per forward by Transformer)."""
        bsz, seqlen = x.shape[0], x.shape[1]
        q = self.wq(x).view(bsz, seqlen, -1, self.head_dim)
        k = self.wk(x).view(bsz, seqlen, -1, self.head_dim)
        v = self.wv(x).view(bsz, seqlen, -1, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, hd]

        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_id, start_pos, k, v)
        if self.n_rep > 1:  # share each key/value head with its group of query heads
            k = k.repeat_interleave(self.n_rep, dim=1)
            v = v.repeat_interleave(self.n_rep, dim=1)

        if mask is not None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif kv_cache is None or start_pos == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif seqlen == 1:  # one new token attends to everything cached
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # a chunk after a cached prefix: query i sees keys up to start_pos + i
            total = k.shape[2]
            mask = torch.ones(seqlen, total, dtype=torch.bool, device=q.device).tril(diagonal=start_pos)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(bsz, seqlen, -1)
        return self.wo(out)


class FeedForward(nn.Module):
    """SwiGLU MLP: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then + feed_forward(norm(.))."""

    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg, layer_id)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg.dim, cfg.ffn_hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: KVCache | None = None, start_pos: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:  # the pretraining call, unchanged
            h = x + self.attention(self.attention_norm(x), cos, sin, kv_cache=kv_cache, start_pos=start_pos)
        else:
            h = x + self.attention(self.attention_norm(x), cos, sin, kv_cache=kv_cache, start_pos=start_pos,
                                   mask=mask)
        return h + self.feed_forward(self.ffn_norm(h))


# ---------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------


class Transformer(nn.Module):
    """Token embedding, ``n_layers`` blocks, final RMSNorm, output projection to vocabulary logits.

    Construct, then ``init_weights(seed)``, then (optionally) ``train.parallel.parallelize``. Building under
    ``torch.device("meta")`` and calling ``to_empty(device=...)`` before ``init_weights`` also works: init
    recomputes the rotary tables.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(cfg, i) for i in range(cfg.n_layers)})
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.out_features, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        # not persistent: derived from the config, so checkpoints do not carry them
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Deterministic init: every matrix ~ normal(0, init_std), the residual-output projections (wo, w2)
        scaled by 1/sqrt(2 * n_layers) (GPT-2 / Megatron), norms to 1. Call it before ``parallelize``."""
        cfg = self.cfg
        device = self.tok_embeddings.weight.device
        gen = None
        if seed is not None:
            gen = torch.Generator(device=device)
            gen.manual_seed(seed)
        std_out = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        self.tok_embeddings.weight.normal_(0.0, cfg.init_std, generator=gen)
        for block in self.layers.values():
            for lin in (block.attention.wq, block.attention.wk, block.attention.wv,
                        block.feed_forward.w1, block.feed_forward.w3):
                lin.weight.normal_(0.0, cfg.init_std, generator=gen)
            block.attention.wo.weight.normal_(0.0, std_out, generator=gen)
            block.feed_forward.w2.weight.normal_(0.0, std_out, generator=gen)
            block.attention_norm.reset_parameters()
            block.ffn_norm.reset_parameters()
        self.norm.reset_parameters()
        if cfg.value_head:  # a new reward head scores every sequence 0 until it learns
            self.output.weight.zero_()
        elif not cfg.tie_embeddings:
            self.output.weight.normal_(0.0, cfg.init_std, generator=gen)
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, device=self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def forward(self, tokens: torch.Tensor, kv_cache: KVCache | None = None, start_pos: int = 0, *,
                doc_ids: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                return_hidden: bool = False, select: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [B, T] int64 -> logits [B, T, vocab] in fp32 (upcast here, so a bf16 model's loss is
        computed in fp32); [B, T, 1] scores with ``cfg.value_head``.

        - ``doc_ids`` [B, T]: a token attends only to earlier tokens of the same document (block-diagonal
          causal attention), so packed conversations do not see each other. With a KV cache the cache
          remembers the ids of the cached positions (see KVCache).
        - ``positions`` [B, T]: the rotary position of each token (e.g. restarting at 0 per packed
          document, or after left padding) instead of ``start_pos + column``.
        - ``return_hidden``: the final-norm hidden states [B, T, dim] (model dtype) instead of the output
          projection.
        - ``select`` [B, T] bool: project only these positions, -> [N, vocab] (N = select.sum(), row-major
          order): a loss over a few labelled tokens (SFT, DPO) skips most of the vocabulary matmul.
        """
        seqlen = tokens.shape[1]
        if positions is None:
            if start_pos + seqlen > self.cfg.max_seq_len:
                raise ValueError(f"positions up to {start_pos + seqlen} exceed max_seq_len {self.cfg.max_seq_len}")
            cos = self.rope_cos[start_pos:start_pos + seqlen]
            sin = self.rope_sin[start_pos:start_pos + seqlen]
        else:
            if int(positions.max()) >= self.cfg.max_seq_len or int(positions.min()) < 0:
                raise ValueError(f"positions must lie in [0, {self.cfg.max_seq_len}) (max_seq_len)")
            cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        mask = None if doc_ids is None else self._doc_mask(doc_ids, kv_cache, start_pos)
        h = self.tok_embeddings(tokens)
        for layer in self.layers.values():
            if kv_cache is None and mask is None:
                h = layer(h, cos, sin)
            elif mask is None:
                h = layer(h, cos, sin, kv_cache=kv_cache, start_pos=start_pos)
            else:
                h = layer(h, cos, sin, kv_cache=kv_cache, start_pos=start_pos, mask=mask)
        h = self.norm(h)
        if return_hidden:
            return h
        if select is not None:
            if type(h) is torch.Tensor:
                return self.output(h[select]).float()
            return self.output(h).float()[select]  # a DTensor (sequence parallel): project all, then pick
        return self.output(h).float()

    @staticmethod
    def _doc_mask(doc_ids: torch.Tensor, kv_cache: KVCache | None, start_pos: int) -> torch.Tensor:
        """[B, 1, T, keys] boolean: query i sees key j when j is not later than i and both carry the same
        document id. Every token sees itself, so no row of the mask is empty."""
        seqlen = doc_ids.shape[1]
        keys = doc_ids if kv_cache is None else kv_cache.update_doc_ids(start_pos, doc_ids)
        offset = 0 if kv_cache is None else start_pos
        causal = torch.ones(seqlen, keys.shape[1], dtype=torch.bool, device=doc_ids.device).tril(diagonal=offset)
        same = doc_ids[:, :, None] == keys[:, None, :]
        return (same & causal)[:, None]


# ---------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(model: Transformer, prompt_ids: list[int], max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, eos_id: int | None = None, seed: int | None = None) -> list[int]:
    """Continue ``prompt_ids`` by up to ``max_new_tokens`` tokens; returns the new tokens only.

    The prompt is run once (prefill), then each new token is fed alone against the key-value cache.
    ``temperature <= 0`` is greedy decoding; otherwise sample from softmax(logits / temperature), restricted
    to the ``top_k`` most likely tokens when given. Stops early after emitting ``eos_id``.

    Works on a plain model and on one wrapped by ``parallelize`` without compile (FSDP2, bf16, tensor
    parallel: then every rank of the job must call it with the same arguments and seed, and all get the
    same tokens, since the logits are replicated).
    """
    if not prompt_ids:
        raise ValueError("generate needs a non-empty prompt")
    cfg = model.cfg
    max_new_tokens = min(max_new_tokens, cfg.max_seq_len - len(prompt_ids))
    if max_new_tokens <= 0:
        return []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
    cache = KVCache(cfg, 1, len(prompt_ids) + max_new_tokens)
    tokens = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    out: list[int] = []
    pos = 0
    try:
        for _ in range(max_new_tokens):
            logits = model(tokens, kv_cache=cache, start_pos=pos)[0, -1]
            pos += tokens.shape[1]
            if temperature <= 0:
                nxt = int(torch.argmax(logits))
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.numel():
                    kth = torch.topk(logits, top_k).values[-1]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, dim=-1)
                nxt = int(torch.multinomial(probs, 1, generator=gen))
            out.append(nxt)
            if eos_id is not None and nxt == eos_id:
                break
            tokens = torch.tensor([[nxt]], dtype=torch.long, device=device)
    finally:
        model.train(was_training)
    return out

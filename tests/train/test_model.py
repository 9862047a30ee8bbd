"""The Llama-style Transformer of train/model.py: causality, grouped-query attention, KV-cache generation,
parameter counts and FLOPs of the presets."""

from __future__ import annotations

import pytest
import torch

from train.model import KVCache, ModelConfig, Transformer, generate


def _tiny(**overrides) -> Transformer:
    model = Transformer(ModelConfig.preset("tiny", **overrides))
    model.init_weights(seed=0)
    return model


def test_init_is_deterministic_and_scaled():
    a, b, c = _tiny(), _tiny(), Transformer(ModelConfig.preset("tiny"))
    c.init_weights(seed=1)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        if "norm" not in name:
            assert not torch.equal(pa, pc), name
    cfg = a.cfg
    wq, wo = a.layers["0"].attention.wq.weight, a.layers["0"].attention.wo.weight
    assert abs(wq.std().item() - cfg.init_std) < 0.1 * cfg.init_std
    assert abs(wo.std().item() - cfg.init_std / (2 * cfg.n_layers) ** 0.5) < 0.1 * cfg.init_std


def test_causal_changing_a_token_never_changes_earlier_logits():
    model = _tiny()
    torch.manual_seed(0)
    tokens = torch.randint(0, 256, (2, 24))
    base = model(tokens)
    assert base.shape == (2, 24, 256) and base.dtype == torch.float32
    for t in (0, 7, 23):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % 256
        out = model(changed)
        assert torch.equal(out[:, :t], base[:, :t]), f"logits before {t} changed"
        assert not torch.allclose(out[:, t], base[:, t]), f"logits at {t} ignored the token"


def test_gqa_shapes_and_equivalence_to_mha_with_shared_heads():
    gqa = _tiny()  # 4 query heads, 2 key/value heads, head_dim 16
    cfg = gqa.cfg
    att = gqa.layers["0"].attention
    assert att.wq.weight.shape == (cfg.n_heads * cfg.head_dim, cfg.dim) == (64, 64)
    assert att.wk.weight.shape == att.wv.weight.shape == (cfg.n_kv_heads * cfg.head_dim, cfg.dim) == (32, 64)
    # MHA whose k/v heads are copies of the GQA's (head j serves queries j*rep .. j*rep+rep-1) is the same fn
    mha = Transformer(cfg.with_(n_kv_heads=cfg.n_heads))
    rep = cfg.n_heads // cfg.n_kv_heads
    with torch.no_grad():
        sd = {}
        for k, v in gqa.state_dict().items():
            if k.endswith(("attention.wk.weight", "attention.wv.weight")):
                v = v.view(cfg.n_kv_heads, cfg.head_dim, cfg.dim).repeat_interleave(rep, 0).reshape(-1, cfg.dim)
            sd[k] = v
        mha.load_state_dict(sd)
    tokens = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mha(tokens), gqa(tokens), rtol=1e-5, atol=1e-5)
    assert mha.num_params() - gqa.num_params() == cfg.n_layers * 2 * (64 - 32) * 64


def test_kv_cache_generation_equals_full_forward_greedy():
    model = _tiny()
    prompt = [5, 17, 99, 3, 250]
    # reference: re-run the whole sequence for every new token
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(30):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert generate(model, prompt, 30, temperature=0) == seq[len(prompt):]
    # sampling is reproducible with a seed, and top_k=1 is greedy
    assert generate(model, prompt, 12, seed=3) == generate(model, prompt, 12, seed=3)
    assert generate(model, prompt, 12, top_k=1, seed=4) == seq[len(prompt):len(prompt) + 12]
    # eos stops early (the eos token is returned); max_seq_len bounds the length
    first = seq[len(prompt)]
    assert generate(model, prompt, 30, temperature=0, eos_id=first) == [first]
    assert len(generate(model, prompt, 10_000, temperature=0)) == model.cfg.max_seq_len - len(prompt)


def test_kv_cache_chunked_prefill_matches_full_forward():
    model = _tiny()
    tokens = torch.randint(0, 256, (1, 14), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(tokens)
        cache = KVCache(model.cfg, 1, 14)
        a = model(tokens[:, :6], kv_cache=cache, start_pos=0)
        b = model(tokens[:, 6:11], kv_cache=cache, start_pos=6)  # a chunk after a cached prefix
        c = model(tokens[:, 11:12], kv_cache=cache, start_pos=11)
    torch.testing.assert_close(torch.cat([a, b, c], 1), full[:, :12], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tie", [False, True])
def test_num_params_is_exact(tie):
    cfg = ModelConfig.preset("tiny", tie_embeddings=tie)
    model = Transformer(cfg)
    assert cfg.num_params() == model.num_params() == sum(p.numel() for p in model.parameters())
    emb = cfg.vocab_size * cfg.dim
    assert cfg.num_params(embeddings=False) == model.num_params() - emb
    assert cfg.num_params(vocab_size=1000) == cfg.num_params() + (1000 - 256) * cfg.dim * (1 if tie else 2)


def test_preset_sizes():
    """Sizes of the presets with their default vocabularies (printed with -s), built on the meta device."""
    expected = {"small": (15e6, 20e6), "124m": (120e6, 128e6), "350m": (340e6, 370e6), "1b": (1.2e9, 1.26e9)}
    for name, (lo, hi) in expected.items():
        cfg = ModelConfig.preset(name)
        with torch.device("meta"):
            model = Transformer(cfg)
        n = model.num_params()
        assert n == cfg.num_params(), name
        assert lo <= n <= hi, (name, n)
        print(f"{name}: vocab {cfg.vocab_size} params {n:,} (without embedding {cfg.num_params(embeddings=False):,})"
              f" flops/token at seq {cfg.max_seq_len}: {cfg.flops_per_token():,}")
    one_b = ModelConfig.preset("1b")
    assert (one_b.dim, one_b.n_layers, one_b.n_heads, one_b.n_kv_heads, one_b.ffn_hidden) == (2048, 16, 32, 8, 8192)
    assert ModelConfig.preset("124m", vocab_size=32000).vocab_size == 32000
    assert ModelConfig(dim=4096, n_heads=32).ffn_hidden == 11008  # Llama-7B's default SwiGLU width
    with pytest.raises(ValueError):
        ModelConfig.preset("nope")


def test_flops_per_token_hand_computed():
    # tiny: dim 64, 2 layers, 4 heads (hd 16), 2 kv heads, ffn 192, vocab 256
    cfg = ModelConfig.preset("tiny")
    attn = 64 * 64 + 2 * 64 * 32 + 64 * 64  # wq, wk, wv, wo = 12288
    ffn = 3 * 64 * 192  # 36864
    n_matmul = 2 * (attn + ffn) + 256 * 64  # + output projection = 114688
    assert n_matmul == 114688
    assert cfg.flops_per_token(128) == 6 * 114688 + 12 * 2 * 64 * 128 == 884736
    # tying does not change compute: the output matmul still runs
    assert ModelConfig.preset("tiny", tie_embeddings=True).flops_per_token(128) == 884736
    # 124m at 1024: 6 * (85.0M + 38.6M) + 12 * 12 * 768 * 1024
    c = ModelConfig.preset("124m")
    assert c.flops_per_token(1024) == 6 * (c.num_params(embeddings=False) - 12 * 2 * 768 - 768 + 50257 * 768) \
        + 12 * 12 * 768 * 1024


def test_backward_reaches_every_parameter():
    model = _tiny(tie_embeddings=True)
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3))
    logits = model(tokens[:, :-1])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.output.weight is model.tok_embeddings.weight

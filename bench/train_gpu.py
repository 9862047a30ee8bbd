"""Training speed of the bundled trainer's model on one GPU: tokens/s and MFU for the ~124M and ~1B presets.

What it does, in order:

1. **Peak**: times a loop of large bf16 ``torch.matmul`` (square sizes 4096 / 8192 / 16384, CUDA events)
   and keeps the best TFLOP/s: the measured dense bf16 peak of this device.
2. **Per model** (presets ``124m``: seq 1024, vocab 50257; ``1b``: seq 2048, vocab 128256): builds the
   model on the GPU, ``init_weights``, then ``train.parallel.parallelize`` with bf16 mixed precision
   (FSDP2 on a one-rank mesh: bf16 compute, fp32 master weights and gradient reduction), per-block
   ``torch.compile`` and no activation checkpointing (``--ac`` turns it on); fused AdamW; gradient
   clipping at 1.0 (``train.parallel.clip_grad_norm_``, one host sync per step like the trainer's log).
   Each step trains on a fresh synthetic batch of uniformly random token ids [batch, seq + 1] drawn on
   the GPU. ``--warmup`` steps (compilation happens here) are not timed; ``--steps`` steps are.
3. Prints a Markdown table: tokens/s, achieved model TFLOP/s, MFU against the measured peak and against
   the H200's dense bf16 spec (989 TFLOP/s), peak memory. MFU = ``cfg.flops_per_token(seq)`` (6 x matmul
   parameters + the attention term 12 x layers x dim x seq, PaLM's convention; see train/model.py) x
   tokens/s / peak.

Anchors (issue 8, on H100): llm-foundry 1B 41.8% MFU, OLMo-core 1B 39-40%. Floor here: >= 45% MFU for the
1B configuration. The script exits with status 2 and a message when no CUDA device is present.

    .venv/bin/python bench/train_gpu.py                       # both models, default batches
    .venv/bin/python bench/train_gpu.py --models 1b --batch 8 --steps 30 --warmup 8
    .venv/bin/python bench/train_gpu.py --models 124m --seq 1024 --batch 32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.model import ModelConfig, Transformer  # noqa: E402
from train.parallel import ParallelConfig, build_mesh, clip_grad_norm_, init_distributed, parallelize  # noqa: E402

H200_BF16_DENSE_TFLOPS = 989.0
# per model: (default sequence length, default micro-batch); 1B: 16K tokens per step fits without
# activation checkpointing in ~70 GiB (logits of a 128K vocabulary are a large share)
DEFAULTS = {"124m": (1024, 32), "1b": (2048, 8)}


def matmul_peak_tflops(sizes=(4096, 8192, 16384), seconds_per_size: float = 2.0) -> tuple[float, int]:
    """Best bf16 matmul throughput over a few square sizes: (TFLOP/s, size that reached it)."""
    best, best_n = 0.0, 0
    for n in sizes:
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            torch.matmul(a, b, out=out)
        torch.cuda.synchronize()
        # size the loop to ~seconds_per_size from one timed probe
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            torch.matmul(a, b, out=out)
        end.record()
        torch.cuda.synchronize()
        per = start.elapsed_time(end) / 5 / 1e3
        iters = max(10, int(seconds_per_size / max(per, 1e-6)))
        start.record()
        for _ in range(iters):
            torch.matmul(a, b, out=out)
        end.record()
        torch.cuda.synchronize()
        tflops = 2 * n**3 * iters / (start.elapsed_time(end) / 1e3) / 1e12
        print(f"  matmul bf16 {n}x{n}: {tflops:.1f} TFLOP/s ({iters} iterations)", flush=True)
        if tflops > best:
            best, best_n = tflops, n
        del a, b, out
    torch.cuda.empty_cache()
    return best, best_n


def bench_model(name: str, seq: int, batch: int, steps: int, warmup: int, mesh, ac: bool,
                compile_: bool) -> dict:
    cfg = ModelConfig.preset(name, max_seq_len=max(seq, ModelConfig.PRESETS[name]["max_seq_len"]))
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with torch.device("cuda"):
        model = Transformer(cfg)
    model.init_weights(seed=0)
    pcfg = ParallelConfig(mixed_precision="bf16", compile=compile_, activation_checkpointing=ac)
    model = parallelize(model, mesh, pcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)

    def step() -> tuple[torch.Tensor, float]:
        tokens = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device="cuda", generator=gen)
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        del logits
        loss.backward()
        norm = clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach(), norm

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0

    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _ = step()
        losses.append(loss)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    tokens_per_s = batch * seq * steps / elapsed
    flops_tok = cfg.flops_per_token(seq)
    result = {
        "model": name, "params": cfg.num_params(), "seq": seq, "batch": batch, "steps": steps,
        "warmup_s": warm_s, "step_ms": elapsed / steps * 1e3, "tokens_per_s": tokens_per_s,
        "flops_per_token": flops_tok, "model_tflops": flops_tok * tokens_per_s / 1e12,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "loss_first": float(losses[0]), "loss_last": float(losses[-1]),
        "activation_checkpointing": ac, "compile": compile_,
    }
    return result  # model and optimizer are freed with this frame


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="124m,1b", help="comma-separated presets (124m, 1b, 350m, small)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per model")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    ap.add_argument("--batch", type=int, default=None, help="micro-batch (sequences); default per model")
    ap.add_argument("--seq", type=int, default=None, help="sequence length; default 1024 (124m), 2048 (1b)")
    ap.add_argument("--ac", action="store_true", help="activation checkpointing (off by default)")
    ap.add_argument("--no-compile", action="store_true", help="eager blocks (for comparison)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    if not torch.cuda.is_available():
        print("bench/train_gpu.py needs a CUDA GPU (bf16, torch.compile): no CUDA device is available here "
              f"(torch {torch.__version__}). Nothing was measured.", file=sys.stderr)
        return 2

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    _, world, _ = init_distributed()
    if world != 1:
        print("run it as a single process (plain python), not under torchrun", file=sys.stderr)
        return 2
    mesh = build_mesh(ParallelConfig(), 1, "cuda")
    dev = torch.cuda.get_device_properties(0)
    print(f"device: {dev.name}, {dev.total_memory / 2**30:.0f} GiB; torch {torch.__version__}", flush=True)

    print("measuring the bf16 matmul peak ...", flush=True)
    peak, peak_n = matmul_peak_tflops()
    print(f"measured peak: {peak:.1f} TFLOP/s (n={peak_n}); H200 spec: {H200_BF16_DENSE_TFLOPS:.0f}", flush=True)

    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        seq0, batch0 = DEFAULTS.get(name, (1024, 16))
        seq, batch = args.seq or seq0, args.batch or batch0
        print(f"{name}: seq {seq}, batch {batch}, {args.warmup} warmup + {args.steps} timed steps ...",
              flush=True)
        try:
            r = bench_model(name, seq, batch, args.steps, args.warmup, mesh, args.ac, not args.no_compile)
        except torch.OutOfMemoryError as e:
            print(f"  {name}: out of memory at batch {batch} ({str(e).splitlines()[0]}); try --batch smaller "
                  "or --ac", flush=True)
            torch.cuda.empty_cache()
            continue
        torch.cuda.empty_cache()
        r["mfu_measured_peak"] = r["model_tflops"] / peak
        r["mfu_spec"] = r["model_tflops"] / H200_BF16_DENSE_TFLOPS
        print(f"  {r['tokens_per_s']:,.0f} tokens/s, MFU {100 * r['mfu_measured_peak']:.1f}% of measured peak, "
              f"loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}", flush=True)
        results.append(r)

    print()
    print(f"Measured bf16 matmul peak: **{peak:.1f} TFLOP/s** on {dev.name} "
          f"(spec {H200_BF16_DENSE_TFLOPS:.0f} TFLOP/s dense bf16).")
    print()
    print("| model | params | seq | batch | step ms | tokens/s | model TFLOP/s | MFU (measured peak) "
          "| MFU (989 spec) | peak mem GiB | compile warmup s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['params'] / 1e6:,.1f}M | {r['seq']} | {r['batch']} | {r['step_ms']:.1f} "
              f"| {r['tokens_per_s']:,.0f} | {r['model_tflops']:.1f} | {100 * r['mfu_measured_peak']:.1f}% "
              f"| {100 * r['mfu_spec']:.1f}% | {r['peak_mem_gib']:.1f} | {r['warmup_s']:.0f} |")
    floor = [r for r in results if r["model"] == "1b"]
    if floor:
        ok = floor[0]["mfu_measured_peak"] >= 0.45
        print(f"\n1B floor (>= 45% MFU of the measured peak): {'met' if ok else 'NOT met'} "
              f"({100 * floor[0]['mfu_measured_peak']:.1f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_tflops": peak, "device": dev.name, "results": results},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

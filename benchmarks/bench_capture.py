"""Benchmark: cost of recording (all block norms + last-block attention) vs a plain forward.

Prints ratios measured in one run (never asserted in unit tests: machines are shared and noisy).
Target: ratio <= 1.10 for ViT-S/14 and ViT-B/14 at 224 and 518 px, batch 8, and for one Eva model (DINOv3
ViT-S/16 at 224 px: RoPE, 4 registers; its last attention is recomputed from the block input and the rotary
embedding the block is given). Also peak memory when
capturing norms only: the extra must stay near the (blocks x batch x tokens) floats kept.

The ratio is of the best (fastest) of the repeats of each, timed interleaved: on a shared machine the best
of several runs is the cost of the work itself, the median also carries the other jobs' noise.
The quick default measures ViT-S/14 and DINOv3 ViT-S/16 at 224 px; ``--full`` adds ViT-B/14 and 518 px.

    python benchmarks/bench_capture.py [--full] [--device auto] [--repeats 7] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from vitreg.core.capture import capture
from vitreg.core.device import pick_device
from vitreg.core.weights import load_model

CONFIGS = [("dinov2_s", 224), ("dinov2_s", 518), ("dinov2_b", 224), ("dinov2_b", 518), ("dinov3_s", 224)]
#: The quick default's rows (``make benchmark``); ``--full`` measures :data:`CONFIGS`.
QUICK = [("dinov2_s", 224), ("dinov3_s", 224)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def time_ratio(key: str, size: int, batch: int, repeats: int, device: torch.device, rows: str) -> dict:
    """Best time of plain and capturing forwards (and the medians), interleaved so drift hits both alike."""
    loaded = load_model(key, pretrained=False, image_size=size, device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    x = torch.randn(batch, 3, size, size, device=device)
    model = loaded.model

    def plain() -> None:
        model.forward_features(x)

    def recorded() -> None:
        with capture(model, norms="all", attn=[-1], attn_rows=rows, dtype=None):
            model.forward_features(x)

    plain_t, rec_t = [], []
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
        for _ in range(2):  # warm-up
            plain(), recorded()
        for _ in range(repeats):
            plain_t.append(_timed(plain, device))
            rec_t.append(_timed(recorded, device))
    p, r = min(plain_t), min(rec_t)
    return {"model": key, "size": size, "batch": batch, "attn_rows": rows, "plain_s": p, "capture_s": r, "ratio": r / p,
            "median_ratio": statistics.median(rec_t) / statistics.median(plain_t)}


def peak_memory(key: str, size: int, batch: int, mode: str, device: str) -> dict:
    """Peak memory of one forward, plain or capturing norms of every block (run in a fresh process)."""
    dev = pick_device(device)
    loaded = load_model(key, pretrained=False, image_size=size, device=dev)
    x = torch.randn(batch, 3, size, size, device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with torch.inference_mode():
        if mode == "norms":
            with capture(loaded.model, norms="all") as rec:
                loaded.model.forward_features(x)
            kept = sum(t.numel() * t.element_size() for t in rec.norms.values())
        else:
            loaded.model.forward_features(x)
            kept = 0
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_bytes": peak, "kept_bytes": kept, "floor_bytes": loaded.num_blocks * batch * loaded.layout.num_tokens * 4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--full", action="store_true", help="every row of CONFIGS (default: the quick rows)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--configs", nargs="*", help="e.g. dinov2_s:224 (default: S and B at 224 and 518)")
    parser.add_argument("--_memory", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory:  # child process of the memory measurement
        key, size, mode, device = args._memory
        print(json.dumps(peak_memory(key, int(size), args.batch, mode, device)))
        return
    device = pick_device(args.device)
    configs = ([(c.split(":")[0], int(c.split(":")[1])) for c in args.configs] if args.configs
               else CONFIGS if args.full else QUICK)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}; batch {args.batch}; best of {args.repeats}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':<10} {'px':>4} {'attn rows':>9} {'plain s':>8} {'capture s':>9} {'ratio':>6} {'median ratio':>13}")
    for key, size in configs:
        for rows in ("prefix", "all"):
            r = time_ratio(key, size, args.batch, args.repeats, device, rows)
            flag = "" if r["ratio"] <= 1.10 else "  > 1.10 target"
            print(f"{key:<10} {size:>4} {rows:>9} {r['plain_s']:8.3f} {r['capture_s']:9.3f} {r['ratio']:6.3f} "
                  f"{r['median_ratio']:13.3f}{flag}", flush=True)
    print("\npeak memory of one forward, capturing the norms of every block vs plain "
          f"({'CUDA allocator' if device.type == 'cuda' else 'process max RSS, fresh process each'}):")
    for key, size in configs:
        got = {}
        for mode in ("plain", "norms"):
            out = subprocess.run([sys.executable, __file__, "--batch", str(args.batch), "--_memory", key, str(size), mode,
                                  str(device)], capture_output=True, text=True, check=True)
            got[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        extra = got["norms"]["peak_bytes"] - got["plain"]["peak_bytes"]
        print(f"{key:<10} {size:>4}: extra peak {extra / 2**20:8.2f} MiB; kept {got['norms']['kept_bytes'] / 2**20:.2f} MiB "
              f"(floor blocks x batch x tokens x 4 B = {got['norms']['floor_bytes'] / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()

"""Benchmark: the feature cache's second run vs its first, and extraction images/s against the FLOP limit.

Paper: Table 1 / Table 6 and Table 2 (frozen features of whole datasets: the real run's cost). Prints ratios
measured in one run (never asserted in unit tests: machines are shared and noisy); `make benchmark` runs
it after bench_capture.py (capture overhead).

* Cache: notebook 06's single-token features (``features.single_token_features``) and notebook 05's
  patch-token features (``features.patch_token_features``) of synthetic images, first run (extract and
  write) vs second run (read and verify every chunk's SHA-256). Target >= 10x.
* FLOP limit: FLOPs per image counted with ``torch.utils.flop_counter`` (a forward of the real
  architecture on the meta device: no weights, no compute), then images/s of a bf16-autocast forward on a
  CUDA device; achieved FLOP/s over the device's dense bf16 peak (:data:`DENSE_BF16_PEAK`). Target >= 50%
  for ViT-L and ViT-g at 518 px. The model forward alone: images already on the device (no decoding,
  resizing or host copies). Without a CUDA device those rows print "not measured: no GPU".

    python benchmarks/bench_scale.py [--cache-images 64] [--cache-model dinov2_s] [--cache-size 224]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

#: Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets, matched on the
#: device name (first match wins, so "H100 PCIe" before "H100").
DENSE_BF16_PEAK = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0), ("A100", 312.0),
                   ("L40S", 362.0), ("L4", 121.0)]

#: (model, px) rows of the FLOP-limit table.
FLOP_CONFIGS = [("dinov2_s", 224), ("dinov2_s", 518), ("dinov2_l", 224), ("dinov2_l", 518), ("dinov2_g", 224),
                ("dinov2_g", 518)]


def cache_ratio(kind: str, model: str, size: int, n: int, chunk: int, batch: int) -> dict:
    """Seconds of the first (extract + write) and second (read + verify) call of a cached extraction."""
    from vitreg import features
    from vitreg.data import SyntheticGlobalDataset
    from vitreg.weights import load_model

    torch.manual_seed(0)
    loaded = load_model(model, pretrained=False, image_size=size)
    ds = SyntheticGlobalDataset(n=n, image_size=size)
    images = [ds[i][0] for i in range(n)] if kind == "patch" else None  # drawn before the clock starts
    with tempfile.TemporaryDirectory() as root:
        def call() -> float:
            start = time.perf_counter()
            if kind == "single":
                features.single_token_features(loaded, ds, name="bench", split="train", batch_size=batch,
                                               cache_root=root, chunk_size=chunk, progress=False)
            else:
                features.patch_token_features(loaded, images, dataset="bench",
                                              batch_size=batch, cache_root=root, chunk_size=chunk, progress=False)
            return time.perf_counter() - start

        first, second = call(), call()
        stored = sum(f.stat().st_size for f in Path(root).rglob("chunk-*.pt"))
    return {"first_s": first, "second_s": second, "ratio": first / second, "bytes_per_image": stored / n,
            "read_mb_s": stored / second / 2**20}


def flops_per_image(model: str, size: int) -> float:
    """Forward FLOPs of one image through ``forward_features``, counted on the meta device."""
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    from vitreg.models import get_spec

    with torch.device("meta"):
        net = timm.create_model(get_spec(model).timm_name, pretrained=False, img_size=size, num_classes=0).eval()
        x = torch.empty(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.forward_features(x)
    return float(counter.get_total_flops())


def dense_bf16_peak(name: str) -> float | None:
    """The dense bf16 peak (FLOP/s) of a device by name, None when not in :data:`DENSE_BF16_PEAK`."""
    return next((tflops * 1e12 for key, tflops in DENSE_BF16_PEAK if key in name), None)


def images_per_second(model: str, size: int, batch: int, repeats: int) -> float:
    """Median images/s of a bf16-autocast forward on the CUDA device (random weights, random images)."""
    from vitreg.weights import load_model

    loaded = load_model(model, pretrained=False, image_size=size, device="cuda")
    x = torch.randn(batch, 3, size, size, device="cuda")
    times = []
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for i in range(repeats + 2):  # two warm-up forwards
            torch.cuda.synchronize()
            start = time.perf_counter()
            loaded.model.forward_features(x)
            torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - start)
    del loaded, x
    torch.cuda.empty_cache()
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-images", type=int, default=64)
    parser.add_argument("--cache-model", default="dinov2_s")
    parser.add_argument("--cache-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32, help="images per forward in the FLOP-limit rows")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}")
    print(f"\nfeature cache, second run vs first ({args.cache_images} synthetic images, {args.cache_model} "
          f"random weights at {args.cache_size} px, chunks of 16, on {'cpu' if not cuda else 'cpu (cache rows)'}):")
    print(f"{'features':<14} {'first s':>8} {'second s':>9} {'ratio':>7} {'KiB/image':>10} {'MiB/s 2nd':>11}")
    for kind in ("single", "patch"):
        r = cache_ratio(kind, args.cache_model, args.cache_size, args.cache_images, 16, 8)
        flag = "" if r["ratio"] >= 10 else "  < 10x target"
        print(f"{kind + ' tokens':<14} {r['first_s']:8.2f} {r['second_s']:9.3f} {r['ratio']:6.1f}x "
              f"{r['bytes_per_image'] / 1024:10.1f} {r['read_mb_s']:11.0f}{flag}", flush=True)
    name = torch.cuda.get_device_name() if cuda else ""
    peak = dense_bf16_peak(name) if cuda else None
    print(f"\nextraction against the FLOP limit (bf16 autocast, batch {args.batch}, model forward only; dense bf16 "
          f"peak {'%.0f TFLOP/s' % (peak / 1e12) if peak else 'unknown for this device'}; target >= 50% for L and g "
          f"at 518 px):")
    print(f"{'model':<10} {'px':>4} {'GFLOP/img':>10} {'images/s':>9} {'TFLOP/s':>8} {'of peak':>8}")
    for model, size in FLOP_CONFIGS:
        flops = flops_per_image(model, size)
        if not cuda:
            print(f"{model:<10} {size:>4} {flops / 1e9:10.1f}   not measured: no GPU", flush=True)
            continue
        ips = images_per_second(model, size, args.batch, args.repeats)
        share = f"{ips * flops / peak:7.1%}" if peak else "     n/a"
        flag = "  < 50% target" if peak and model != "dinov2_s" and size == 518 and ips * flops / peak < 0.5 else ""
        print(f"{model:<10} {size:>4} {flops / 1e9:10.1f} {ips:9.1f} {ips * flops / 1e12:8.1f} {share}{flag}", flush=True)


if __name__ == "__main__":
    main()

"""The one prepared GPU benchmark: every figure the run-time table assumes, measured in one run on a CUDA GPU.

Paper: all findings (the real run's cost). Run it wherever a GPU is at hand (``make benchmark-gpu``); about 10
minutes on one H100. Until it has run, every GPU figure of the README and of ``vitreg.experiments.timing`` is
an estimate and says so. It needs no download: random weights (the same compute as the pretrained ones) and
JPEGs it writes from the bundled photos.

1. Forward images/s at the FLOP limit, bf16 autocast: DINOv2 ViT-L/14 and ViT-g/14 at 224 and 518 px (the
   share of the dense bf16 peak replaces the table's assumed 40%).
2. GPU image path: decode (nvJPEG) + resize + normalise images/s on 500x375 JPEGs, and its gap to the CPU path.
3. Capture overhead (all block norms + last block's attention) against a plain forward, every bench_capture row.
4. The feature cache's verified read rate against a raw read.
5. ``torch.compile`` against eager for DINOv2 ViT-L/14 at 518 px.
6. One notebook end to end at real size: 04_redundant_patches (ViT-g/14 at 518 px, 256 images) on JPEGs written
   to disk first, random weights, through ``vitreg run``.

``--dry-run`` runs every step at toy sizes on whatever device there is (the tests use it on the CPU, so the
script is known to work before a GPU is lent); GPU-only rows then say "not measured: no GPU".

    python benchmarks/bench_gpu.py [--dry-run] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_capture import CONFIGS, QUICK, time_ratio  # noqa: E402
from bench_images import cache_read_rates, device_images_per_s, device_path_gap, write_jpegs  # noqa: E402
from bench_scale import compiled_speedup, dense_bf16_peak, flops_per_image, images_per_second  # noqa: E402

#: (model, px) rows of the FLOP-limit step; the dry run uses DINOv2 ViT-S/14 at 56 px.
FORWARD_ROWS = [("dinov2_l", 224), ("dinov2_l", 518), ("dinov2_g", 224), ("dinov2_g", 518)]


def run_notebook(folder: Path, n_images: int, dry: bool) -> float:
    """Seconds of ``vitreg run`` of 04_redundant_patches on ``n_images`` JPEGs written to ``folder`` first."""
    images = folder / "jpegs"
    images.mkdir()
    write_jpegs(images, n_images)
    sets = [f"04.image_dir={images}", f"04.n_images={n_images}", "04.pretrained=false"]
    if dry:
        sets += ["04.model=dinov2_s", "04.image_size=56"]
    cmd = [sys.executable, "-m", "vitreg", "run", "--profile", "real", "--only", "04", "--out", str(folder / "out"),
           *(a for s in sets for a in ("--set", s))]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="every step at toy sizes, on any device")
    parser.add_argument("--json", type=Path, help="also write the measured figures here")
    args = parser.parse_args()
    cuda, dry = torch.cuda.is_available(), args.dry_run
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = dense_bf16_peak(name) if cuda else None
    out: dict = {"device": name, "torch": torch.__version__, "dry_run": dry, "forward": {}, "capture": {}}
    print(f"device: {name}; torch {torch.__version__}; {'DRY RUN (toy sizes)' if dry else 'real sizes'}")

    print("\n1. forward at the FLOP limit (bf16 autocast, model forward only):")
    for model, px in ([("dinov2_s", 56)] if dry else FORWARD_ROWS):
        flops = flops_per_image(model, px)
        if not cuda:
            print(f"  {model} {px} px: {flops / 1e9:.1f} GFLOP/image; not measured: no GPU")
            continue
        ips = images_per_second(model, px, 4 if dry else 32, 2 if dry else 5)
        share = ips * flops / peak if peak else None
        out["forward"][f"{model}@{px}"] = {"images_per_s": ips, "share_of_peak": share}
        print(f"  {model} {px} px: {ips:.1f} images/s, {ips * flops / 1e12:.1f} TFLOP/s"
              + (f", {share:.1%} of the dense bf16 peak" if share else ""), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_jpegs(folder, 8 if dry else 512)
        print("\n2. GPU image path (decode + resize + normalise to 224 px):")
        device = "cuda" if cuda else "cpu"
        mean, tail = device_path_gap(paths[:32], 224, device)
        out["decode"] = {"gap_mean_levels": mean, "gap_p999_levels": tail}
        print(f"  gap to the CPU path on {device}: mean {mean:.2f}, 99.9th percentile {tail:.2f} grey levels")
        if cuda:
            ips = out["decode"]["images_per_s"] = device_images_per_s(paths, 224, 64, 3)
            print(f"  {ips:.0f} images/s", flush=True)
        else:
            print("  images/s: not measured: no GPU")

        print("\n3. capture overhead vs a plain forward (target <= 1.10x):")
        for model, px in ([("dinov2_s", 56)] if dry else CONFIGS if cuda else QUICK):
            r = time_ratio(model, px, 2 if dry else 8, 2 if dry else 7, torch.device(device), "all")
            out["capture"][f"{model}@{px}"] = r["ratio"]
            print(f"  {model} {px} px: {r['ratio']:.3f}x" + ("" if r["ratio"] <= 1.10 else "  > 1.10 target"), flush=True)

        rates = out["cache_read_gb_s"] = cache_read_rates(2 if dry else 16, 1.0 if dry else 64.0, 2 if dry else 5)
        print("\n4. feature cache read, GB/s: " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()))

        print("\n5. torch.compile vs eager, DINOv2 ViT-L/14 at 518 px:")
        if cuda and not dry:
            eager, compiled = compiled_speedup("dinov2_l", 518, 32, 5)
            out["compile"] = {"eager_images_per_s": eager, "compiled_images_per_s": compiled}
            print(f"  {compiled:.1f} vs {eager:.1f} images/s ({compiled / eager:.2f}x)")
        else:
            print("  not measured: " + ("dry run" if dry else "no GPU"))

        n = 4 if dry else 256
        print(f"\n6. 04_redundant_patches end to end on {n} JPEGs written to disk, random weights:", flush=True)
        seconds = out["notebook_04_s"] = run_notebook(folder, n, dry)
        print(f"  {seconds:.0f} s wall clock (kernel start, model build, forwards, figures, results)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

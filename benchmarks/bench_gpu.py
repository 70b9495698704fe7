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
7. The float32 matrix-product share of :mod:`vitreg.experiments.costs` (``FP32_FLOPS x FP32_SHARE``, what probes
   and heads divide by): a 50,000 x 2,048 @ 2,048 x 1,000 float32 product, torch's default precision.
8. The elementwise HBM share (``HBM_BYTES_S x HBM_SHARE``): a copy of a 16 x 150 x 518 x 518 float32 tensor (the
   upsampled logits of a 16-image ADE20k batch), and F.interpolate + cross_entropy to it, forward and backward.
9. Loading models (``costs.load_s``): ViT-L/14 and ViT-g/14 loaded onto the GPU from a safetensors file of random
   weights written first (the same bytes as the pretrained ones) and dropped from the page cache, beside the
   parts the model assumes measured here (the disk's read rate, the first write to fresh host memory, the pageable
   host-to-device rate, the Python build on the meta device), and the Jupyter kernel start (``costs.KERNEL_S``).

Budget on one H100, under 10 minutes in all (estimated from the work of each step, not yet timed there): steps 1-2
about 2 minutes (random ViT-g builds on the CPU), 3 about 1, 4 under 1, 5 about 2 (compilation), 6 about 2, 7 under
10 s, 8 under 20 s, 9 about 1 minute (writing a 4.5 GB file, two cold loads of each model, two kernel starts).

``--dry-run`` runs every step at toy sizes on whatever device there is (the tests use it on the CPU, so the
script is known to work before a GPU is lent); GPU-only rows then say "not measured: no GPU".

    python benchmarks/bench_gpu.py [--dry-run] [--json results.json]

On the same machine, ``make test-gpu`` runs the exactness tests on CUDA (the tests parametrized over the devices of
``tests/conftest.py``, marker ``gpu``): the speed-ups proven identical to the old code on the CPU (LOST's shared
bias sweep, the joint minibatch probe fit, the heads' features kept on the device and the one-pass scoring of the
seeds) checked there too: about a minute, most of it collecting the test files (estimated, not yet timed there).
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
from bench_costs import (best_s, drop_from_page_cache, first_touch_bytes_s, kernel_start_s, meta_build_s,  # noqa: E402
                         read_bytes_s, write_checkpoint)
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


#: (rows, inner, cols) of the float32 product of step 7, and the (batch, classes, height, width) of step 8's logits.
MATMUL, LOGITS = (50_000, 2048, 1000), (16, 150, 518, 518)
#: Models loaded in step 9 (the dry run: ViT-S/14 on the CPU).
LOAD_ROWS = [("dinov2_l", "ViT-L/14"), ("dinov2_g", "ViT-g/14")]


def _synced(fn, device: torch.device):
    """``fn`` followed by a wait for ``device`` (CUDA kernels run asynchronously)."""
    def run() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return run


def fp32_matmul_flops(shape: tuple[int, int, int], device: torch.device, repeats: int) -> float:
    """Best FLOP/s of a float32 ``(m, k) @ (k, n)`` product on ``device`` at torch's default matmul precision."""
    m, k, n = shape
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    run = _synced(lambda: a @ b, device)
    run()
    return 2 * m * k * n / best_s(run, repeats)


def copy_bytes_s(shape: tuple[int, ...], device: torch.device, repeats: int) -> float:
    """Best bytes/s of copying a float32 tensor of ``shape`` on ``device`` (each byte read once and written once)."""
    src = torch.randn(shape, device=device)
    dst = torch.empty_like(src)
    run = _synced(lambda: dst.copy_(src), device)
    run()
    return 2 * src.numel() * 4 / best_s(run, repeats)




def seg_loss_s(shape: tuple[int, int, int, int], device: torch.device, repeats: int) -> float:
    """Best seconds of upsampling ``(B, C, h, w)`` logits (h, w = H/14, W/14) to ``(H, W)`` bilinearly and taking
    the cross entropy with labels, forward and backward (a dense head's loss step)."""
    import torch.nn.functional as F

    bsz, classes, height, width = shape
    logits = torch.randn(bsz, classes, height // 14, width // 14, device=device, requires_grad=True)
    labels = torch.randint(0, classes, (bsz, height, width), device=device)

    def step() -> None:
        up = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        F.cross_entropy(up, labels, ignore_index=255).backward()

    run = _synced(step, device)
    run()
    return best_s(run, repeats)


def h2d_bytes_s(mb: int, repeats: int) -> float:
    """Best bytes/s of copying a ``mb`` MB float32 tensor in pageable host memory to the GPU."""
    src = torch.randn(mb * 2**20 // 4)
    run = _synced(lambda: src.to("cuda"), torch.device("cuda"))
    run()
    return src.numel() * 4 / best_s(run, repeats)


def cold_load_s(model: str, path: Path, device: torch.device, repeats: int) -> float:
    """Best seconds of :func:`vitreg.core.weights.load_model` of ``model`` from ``path`` onto ``device``, the file
    dropped from the page cache before each load."""
    from vitreg.core.weights import load_model

    def load() -> None:
        drop_from_page_cache(path)
        load_model(model, weights=path, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()

    return best_s(load, repeats)


def cost_rows(out: dict, folder: Path, cuda: bool, dry: bool) -> None:
    """Steps 7-9: the GPU figures of :mod:`vitreg.experiments.costs`, each measured beside the one assumed."""
    from vitreg.experiments import costs

    device = torch.device("cuda" if cuda else "cpu")
    toy = " (toy size on the CPU: the number means nothing)" if not cuda or dry else ""
    print(f"\n7. float32 matrix product (costs.FP32_FLOPS x FP32_SHARE), matmul precision "
          f"{torch.get_float32_matmul_precision()}:")
    shape = (500, 256, 100) if dry else MATMUL
    flops = out["fp32_matmul_flops"] = fp32_matmul_flops(shape, device, 3 if dry else 20)
    assumed = costs.FP32_FLOPS * costs.FP32_SHARE
    print(f"  {shape[0]} x {shape[1]} @ {shape[1]} x {shape[2]}: {flops / 1e12:.2f} TFLOP/s measured, "
          f"{assumed / 1e12:.1f} assumed ({flops / costs.FP32_FLOPS:.0%} of {costs.FP32_FLOPS / 1e12:.0f} against "
          f"{costs.FP32_SHARE:.0%}){toy}", flush=True)

    print("\n8. elementwise kernels in GPU memory (costs.HBM_BYTES_S x HBM_SHARE):")
    shape = (2, 15, 56, 56) if dry else LOGITS
    nbytes = 4 * shape[0] * shape[1] * shape[2] * shape[3]
    rate = out["hbm_copy_bytes_s"] = copy_bytes_s(shape, device, 3 if dry else 10)
    assumed = costs.HBM_BYTES_S * costs.HBM_SHARE
    print(f"  copy of a {' x '.join(map(str, shape))} float32 tensor: {rate / 1e12:.2f} TB/s measured, "
          f"{assumed / 1e12:.2f} assumed ({rate / costs.HBM_BYTES_S:.0%} of {costs.HBM_BYTES_S / 1e12:.2f} against "
          f"{costs.HBM_SHARE:.0%}){toy}")
    seconds = out["seg_loss_s"] = seg_loss_s(shape, device, 3 if dry else 5)
    moved = costs.SEG_LOGIT_PASSES * nbytes
    print(f"  F.interpolate + cross_entropy to it, forward and backward: {seconds * 1e3:.1f} ms measured, "
          f"{costs.gpu_bytes_s(moved) * 1e3:.1f} ms by gpu_bytes_s of {costs.SEG_LOGIT_PASSES} passes "
          f"({moved / seconds / 1e12:.2f} TB/s){toy}", flush=True)

    print("\n9. loading models onto the GPU from a cold safetensors file (costs.load_s), and the kernel start:")
    touch = out["host_touch_bytes_s"] = first_touch_bytes_s(64 if dry else 1024, 3)
    print(f"  first write to fresh host memory: {touch / 1e9:.2f} GB/s measured, {costs.HOST_TOUCH_BYTES_S / 1e9:.1f} "
          "assumed (costs.HOST_TOUCH_BYTES_S)")
    if cuda:
        h2d = out["h2d_bytes_s"] = h2d_bytes_s(64 if dry else 1024, 3 if dry else 5)
        print(f"  host to device, pageable: {h2d / 1e9:.1f} GB/s measured, {costs.PCIE_BYTES_S / 1e9:.0f} assumed "
              "(costs.PCIE_BYTES_S)")
    else:
        print("  host to device: not measured: no GPU")
    out["load_s"], out["disk_read_bytes_s"] = {}, {}
    for model, name in ([("dinov2_s", "ViT-S/14")] if dry else LOAD_ROWS):
        path = write_checkpoint(model, folder, device)
        read = out["disk_read_bytes_s"][model] = read_bytes_s(path, 2)
        build = meta_build_s(model, 2 if dry else 3)
        seconds = out["load_s"][model] = cold_load_s(model, path, device, 2)
        path.unlink()
        parts = costs.load_parts(model)
        print(f"  {name}: {seconds:.2f} s measured, {sum(parts.values()):.2f} s by costs.load_s ("
              + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()) + ")" + ("" if cuda else " (on the CPU: no GPU)"))
        print(f"    its file read cold at {read / 1e9:.2f} GB/s ({costs.DISK_BYTES_S / 1e9:.1f} assumed: "
              f"costs.DISK_BYTES_S); Python build on the meta device {build:.2f} s ({costs.build_python_s(model):.2f} "
              "by costs.build_python_s)", flush=True)
    kernel = out["kernel_start_s"] = kernel_start_s(1 if dry else 2)
    print(f"  kernel start + import vitreg, torch, timm + shutdown: {kernel:.1f} s measured, {costs.KERNEL_S:.1f} "
          "assumed (costs.KERNEL_S)")


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

        cost_rows(out, folder, cuda, dry)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

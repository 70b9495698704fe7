"""Benchmark: preparing images (decode, resize, normalise) and reading the feature cache, the two costs that
bound the real run besides the GPU's forwards.

Paper: every finding measured on image datasets (06's and 09's ImageNet forwards dominate the real run).
Prints numbers measured in one run (never asserted in unit tests: machines are shared and noisy):

* image preparation per image on ONE core (``torch.set_num_threads(1)``), photos re-encoded as 500x375 JPEGs
  (the size of a typical ImageNet photo) to 224 and 518 px: before (PIL's bicubic resize and a NumPy float
  conversion, the path this project used until the resize moved to torch; kept here as the reference) and after
  (:func:`vitreg.core.images.preprocess`), interleaved so load drift hits both alike, best of the repeats;
* the GPU image path (:func:`vitreg.core.decode.prepare_files`) against the CPU path on the same JPEGs: its code
  run on the CPU here (and on the GPU where there is one), the gap in grey levels against its tolerance, and on
  a GPU its images/s;
* the feature cache's verified read against a raw read of the same chunk files: GB/s of reading the bytes
  alone, of reading and checking the XXH3-128 digest the cache uses, and of reading and checking SHA-256 (the
  digest it used before), files already in the page cache (so the rates are the CPU's, not the disk's).

    python benchmarks/bench_images.py [--full]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_jpegs(folder: Path, n: int, size: tuple[int, int] = (500, 375)) -> list[Path]:
    """``n`` JPEGs of ``size`` made from the bundled photos (cycled), quality 90."""
    from vitreg.core.images import sample_photos

    photos = [img for _, img in sample_photos()]
    paths = []
    for i in range(n):
        path = folder / f"photo_{i:04d}.jpg"
        photos[i % len(photos)].convert("RGB").resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def prepare_before(paths: list[Path], px: int) -> torch.Tensor:
    """The former CPU path: PIL decode, PIL bicubic resize of the shorter side, centre crop, NumPy floats."""
    from vitreg.core.images import load_image

    out = []
    for p in paths:
        img = load_image(p)
        scale = max(px / img.height, px / img.width)
        nh, nw = max(px, round(img.height * scale)), max(px, round(img.width * scale))
        img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=None)
        top, left = (nh - px) // 2, (nw - px) // 2
        img = img.crop((left, top, left + px, top + px))
        out.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
    return (torch.stack(out) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def preparation_ms(paths: list[Path], px: int, repeats: int) -> dict[str, float]:
    """Best milliseconds per image on one core of the former path and of :func:`preprocess`, interleaved."""
    from vitreg.core.images import preprocess

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(repeats):
            for name, fn in (("before", lambda: prepare_before(paths, px)),
                             ("after", lambda: preprocess(paths, size=px, mean=MEAN, std=STD))):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) / len(paths) * 1e3)
    finally:
        torch.set_num_threads(threads)
    return {name: min(t) for name, t in times.items()}


def device_path_gap(paths: list[Path], px: int, device: str) -> tuple[float, float]:
    """(mean, 99.9th percentile) grey-level gap between the GPU image path on ``device`` and the CPU path."""
    from vitreg.core.decode import prepare_files
    from vitreg.core.images import preprocess

    a = prepare_files(paths, px, MEAN, STD, device=device).cpu()
    b = preprocess(paths, size=px, mean=MEAN, std=STD)
    d = ((a - b) * torch.tensor(STD).view(1, 3, 1, 1)).abs().flatten() * 255
    return float(d.mean()), float(d.quantile(0.999))


def device_images_per_s(paths: list[Path], px: int, batch: int, repeats: int) -> float:
    """Images/s of the GPU image path on CUDA (decode + resize + normalise), best of ``repeats``."""
    from vitreg.core.decode import prepare_files

    best = 0.0
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, len(paths), batch):
            prepare_files(paths[i:i + batch], px, MEAN, STD, device="cuda")
        torch.cuda.synchronize()
        best = max(best, len(paths) / (time.perf_counter() - start))
    return best


def cache_read_rates(n_chunks: int, chunk_mb: float, repeats: int) -> dict[str, float]:
    """GB/s of reading chunk files: bytes only, bytes + XXH3-128 (the cache's check), bytes + SHA-256."""
    from vitreg.utils.cache import chunk_digest

    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as root:
        files = []
        for i in range(n_chunks):
            f = Path(root) / f"chunk-{i:06d}.pt"
            f.write_bytes(os.urandom(int(chunk_mb * 2**20)))
            files.append(f)
        total = sum(f.stat().st_size for f in files)
        checks = {"raw read": lambda b: None, "read + XXH3-128 (now)": chunk_digest,
                  "read + SHA-256 (before)": lambda b: hashlib.sha256(b).hexdigest()}
        for name, check in checks.items():
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                for f in files:
                    check(f.read_bytes())
                best = min(best, time.perf_counter() - start)
            rates[name] = total / best / 1e9
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="more images and repeats, and 518 px")
    args = parser.parse_args()
    n, repeats = (64, 7) if args.full else (16, 5)
    cuda = torch.cuda.is_available()
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}; torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        paths = write_jpegs(Path(folder), n)
        print(f"\nimage preparation on one core, {n} JPEGs of 500x375, ms per image (best of {repeats}):")
        print(f"{'px':>4} {'before':>8} {'after':>8} {'speed-up':>9}")
        for px in ((224, 518) if args.full else (224,)):
            r = preparation_ms(paths, px, repeats)
            print(f"{px:>4} {r['before']:8.2f} {r['after']:8.2f} {r['before'] / r['after']:8.2f}x", flush=True)
        from vitreg.core.decode import TOLERANCE

        print(f"\nGPU image path against the CPU path (tolerance: mean {TOLERANCE[0] * 255:.1f}, "
              f"99.9th percentile {TOLERANCE[1] * 255:.1f} grey levels):")
        for device in ("cpu", "cuda") if cuda else ("cpu",):
            mean, tail = device_path_gap(paths, 224, device)
            ok = mean <= TOLERANCE[0] * 255 and tail <= TOLERANCE[1] * 255
            print(f"  its code on {device}: mean {mean:.2f}, 99.9th percentile {tail:.2f} grey levels "
                  f"({'within' if ok else 'OUTSIDE'} the tolerance)", flush=True)
        if cuda:
            print(f"  GPU decode + resize + normalise to 224 px: {device_images_per_s(paths, 224, 64, 3):.0f} images/s")
        else:
            print("  GPU decode images/s: not measured: no GPU")
    rates = cache_read_rates(16 if args.full else 8, 16.0 if args.full else 8.0, repeats)
    print("\nfeature cache read, files in the page cache, GB/s (best of %d):" % repeats)
    for name, rate in rates.items():
        print(f"  {name:<24} {rate:6.2f}")
    print(f"  verified read / raw read: {rates['read + XXH3-128 (now)'] / rates['raw read']:.2f} "
          f"(SHA-256: {rates['read + SHA-256 (before)'] / rates['raw read']:.2f})")


if __name__ == "__main__":
    main()

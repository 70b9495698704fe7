"""Cost models of the work besides forwards, checked on the CPU at small size (vitreg.experiments.costs).

Paper: all findings (the real run's cost: the README's "Run time (estimate)" table). For each cost model of
:mod:`vitreg.experiments.costs` this prints the measured CPU time of a small problem beside what the model
predicts for that same small problem on this CPU, so the model is checked before its rule scales it to the real
size on the GPU, and the measurements its constants come from. Numbers are printed, never asserted (machines are
shared and noisy). Quick by default (under a minute on 2 cores); ``--full`` repeats more and measures the larger
problems the constants were taken from.

One function per topic, ``<topic>_rows(full) -> list[str]`` (probes, heads, sweeps, loading); :func:`main` prints a
header (device, torch version, load average, threads) then every topic's rows, in the order they are defined.

    python benchmarks/bench_costs.py [--full]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from vitreg.experiments import costs


def best_s(fn: Callable[[], object], repeats: int) -> float:
    """Best wall-clock seconds of ``repeats`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def line(what: str, measured: float, model: float, unit: str = "s", note: str = "") -> str:
    """One printed row: the measured figure beside the cost model's for the same problem, and their ratio."""
    return (f"  {what}: measured {measured:.3g} {unit}, model {model:.3g} {unit} (x{measured / model:.2f})"
            + (f"; {note}" if note else ""))


# ---------------------------------------------------------------------------------------------------
# Loading models (costs.load_s, costs.KERNEL_S)
# ---------------------------------------------------------------------------------------------------


def meta_build_s(model: str, repeats: int) -> float:
    """Best seconds of ``timm.create_model`` of ``model`` on the meta device at its native size: the Python part of
    a build (:data:`vitreg.experiments.costs.BUILD_S_PER_BLOCK`)."""
    import timm

    from vitreg.core.models import get_spec

    spec = get_spec(model)

    def build() -> None:
        with torch.device("meta"):
            timm.create_model(spec.full_name, pretrained=False, num_classes=0, img_size=spec.native_resolution)

    build()  # the first build of a family imports and registers its code
    return best_s(build, repeats)


def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to forget ``path``'s cached pages (written and synced first), so the next read is the disk's."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_bytes_s(path: Path, repeats: int, cold: bool = True) -> float:
    """Best bytes/s of reading ``path`` whole into memory, dropped from the page cache before each read (``cold``)."""
    size = path.stat().st_size
    buf = memoryview(bytearray(size))

    def read() -> None:
        if cold:
            drop_from_page_cache(path)
        with open(path, "rb", buffering=0) as f:
            done = 0
            while done < size and (n := f.readinto(buf[done:])):
                done += n

    return size / best_s(read, repeats)


def first_touch_bytes_s(mb: int, repeats: int) -> float:
    """Best bytes/s of the first write to ``mb`` MB of newly allocated memory (page faults): a new float32 tensor
    filled once, less the same fill again (:data:`vitreg.experiments.costs.HOST_TOUCH_BYTES_S`)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        x = torch.empty(mb * 2**20 // 4).fill_(1.0)
        first = time.perf_counter() - start
        best = min(best, first - best_s(lambda: x.fill_(2.0), 1))
        del x
    return mb * 2**20 / best


def kernel_start_s(repeats: int) -> float:
    """Best seconds of starting the ``vitreg`` Jupyter kernel as papermill does, importing vitreg, torch and timm
    in it, and shutting it down (:data:`vitreg.experiments.costs.KERNEL_S`)."""
    from jupyter_client.manager import KernelManager

    from vitreg.cli.runner import KERNEL_NAME, KERNEL_QUIET

    def start() -> None:
        manager = KernelManager(kernel_name=KERNEL_NAME)
        manager.start_kernel(extra_arguments=KERNEL_QUIET)
        client = manager.client()
        try:
            client.start_channels()
            client.wait_for_ready(timeout=120)
            reply = client.execute_interactive("import vitreg, torch, timm", timeout=120, output_hook=lambda _: None)
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"the kernel could not import vitreg, torch, timm: {reply['content']}")
        finally:
            client.stop_channels()
            manager.shutdown_kernel()

    return best_s(start, repeats)


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread while the block runs: on a shared 2-core machine a second thread waits for a core at
    every parallel kernel, which made the same load take 0.3 to 4 s; one thread takes 0.33-0.39 s every time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write_checkpoint(model: str, folder: Path, device: torch.device = torch.device("cpu")) -> Path:
    """A safetensors file of ``model``'s random weights (drawn on ``device``) in ``folder``, named as the weights
    folder names it: the same bytes as its pretrained file."""
    import timm
    from safetensors.torch import save_file

    from vitreg.core.models import get_spec

    spec = get_spec(model)
    path = folder / f"{spec.full_name}.safetensors"
    with device:
        net = timm.create_model(spec.full_name, pretrained=False, num_classes=0, img_size=spec.native_resolution)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, path)
    return path


def cpu_load_check(model: str, folder: Path, read: float, touch: float, repeats: int
                   ) -> tuple[float, costs.LoadRates]:
    """A pretrained load of ``model`` on this CPU, and the rates of its parts measured in the same rounds.

    Each round times :func:`vitreg.core.weights.load_model` from a safetensors file of random weights dropped from
    the page cache, then, through the code a load runs, timm's random init (a CPU build less the meta build), a
    strict ``load_state_dict`` of the weights (the copy) and :func:`vitreg.core.weight_files.first_non_finite` (the
    check); interleaved, so that other load on the machine hits both alike. ``read``: the disk's rate, ``touch``:
    the first write to fresh memory (:func:`first_touch_bytes_s`).

    Returns:
        (best seconds of the load, :class:`~vitreg.experiments.costs.LoadRates` from the best of each part).
    """
    import timm

    from vitreg.core.models import get_spec
    from vitreg.core.weight_files import first_non_finite
    from vitreg.core.weights import load_model

    spec, nbytes = get_spec(model), costs.checkpoint_bytes(model)
    path = write_checkpoint(model, folder)
    best = {"load": float("inf"), "build": float("inf"), "copy": float("inf"), "check": float("inf")}
    for _ in range(repeats):
        drop_from_page_cache(path)
        times = {"load": best_s(lambda: load_model(model, weights=path, device="cpu"), 1)}
        start = time.perf_counter()
        net = timm.create_model(spec.full_name, pretrained=False, num_classes=0, img_size=spec.native_resolution)
        times["build"] = time.perf_counter() - start
        state = {k: v.clone() for k, v in net.state_dict().items()}
        times["copy"] = best_s(lambda: net.load_state_dict(state, strict=True), 1)
        times["check"] = best_s(lambda: first_non_finite(net), 1)
        best = {k: min(v, times[k]) for k, v in best.items()}
        del net, state
    path.unlink()
    init = best["build"] - meta_build_s(model, repeats)
    return best["load"], costs.LoadRates(init=nbytes / init, read=read, touch=touch, copy=nbytes / best["copy"],
                                         check=nbytes / best["check"])


def loading_rows(full: bool) -> list[str]:
    """Loading models: the Python build on the meta device, the disk, a pretrained load on this CPU against
    :func:`vitreg.experiments.costs.load_s` with this CPU's rates, and the kernel start."""
    repeats = 5 if full else 3
    rows = ["loading models (vitreg.experiments.costs.load_s: Python build + checkpoint bytes over each part's rate):"]
    for model, name in [*([("dinov2_s", "ViT-S/14")] if full else []), ("dinov2_l", "ViT-L/14"),
                        ("dinov2_g", "ViT-g/14")]:
        rows.append(line(f"{name} build on the meta device ({costs.arch(model)[1]} blocks)",
                         meta_build_s(model, repeats), costs.build_python_s(model)))
    with tempfile.TemporaryDirectory(dir=os.environ.get("VITREG_BENCH_TMP")) as tmp:
        folder = Path(tmp)
        raw = folder / "raw.bin"
        raw.write_bytes(os.urandom(200 * 2**20))
        cold, warm = read_bytes_s(raw, repeats), read_bytes_s(raw, repeats, cold=False)
        raw.unlink()
        rows.append(f"  raw read of a 200 MB file: {cold / 1e9:.2f} GB/s from the disk (page cache dropped), "
                    f"{warm / 1e9:.2f} GB/s from the page cache; the model assumes {costs.DISK_BYTES_S / 1e9:.1f} GB/s "
                    "(NVMe on the GPU node)")
        with one_thread():
            touch = first_touch_bytes_s(200, repeats)
        rows.append(line("first write to 200 MB of fresh memory on one thread", touch / 1e9,
                         costs.HOST_TOUCH_BYTES_S / 1e9, unit="GB/s"))
        for model in ["dinov2_s", "dinov2_b", *(["dinov2_l"] if full else [])]:
            with one_thread():
                seconds, rates = cpu_load_check(model, folder, cold, touch, 3 if full else 2)
            parts = costs.load_parts(model, rates)
            rows.append(line(f"pretrained load of {model} on one CPU thread ({costs.checkpoint_bytes(model) / 1e6:.0f} "
                             "MB, cold file)", seconds, sum(parts.values()),
                             note="model " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
                             + f" at this CPU's GB/s: init {rates.init / 1e9:.2f}, copy {rates.copy / 1e9:.2f}, "
                             f"check {rates.check / 1e9:.2f}"))
    rows.append(line("kernel start + import vitreg, torch, timm + shutdown", kernel_start_s(3 if full else 1),
                     costs.KERNEL_S))
    for model in ("dinov2_l", "dinov2_g"):
        parts = costs.load_parts(model)
        rows.append(f"  on one H100-class GPU, {model}: {sum(parts.values()):.2f} s = "
                    + " + ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="more repeats and the larger problems of the constants")
    args = parser.parse_args()
    print(f"device: cpu ({os.cpu_count()} cores); torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.2f}; threads {torch.get_num_threads()}; {'full' if args.full else 'quick'}")
    topics = [fn for name, fn in vars(sys.modules[__name__]).items() if name.endswith("_rows") and callable(fn)]
    for topic in topics:
        start = time.perf_counter()
        print("\n".join(topic(args.full)) + f"\n  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

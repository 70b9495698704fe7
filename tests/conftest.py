"""Test set-up: offline, CPU, small threads, deterministic; helpers to build small random ViTs; the devices an
exactness test runs on (:data:`DEVICES`)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # a pretrained load must fail at once, never retry the network
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

torch.set_num_threads(2)

#: Why a CUDA case is skipped on a machine without a GPU.
NO_CUDA = "no CUDA GPU here (torch.cuda.is_available() is False): `make test-gpu` runs the CUDA cases on a GPU machine"
#: The devices an exactness test (a speed-up that must give the old numbers) is parametrized over: the CPU always,
#: CUDA where a GPU is at hand. The CUDA cases carry the ``gpu`` marker: `make test-gpu` runs them all (``-m gpu``).
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda",
                        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)])]


def small_vit(name: str, *, depth: int = 2, image_size: int | tuple[int, int] | None = None, **kw):
    """A random timm model of a zoo entry with few blocks (fast), in eval mode."""
    import timm

    from vitreg.core.models import get_spec

    spec = get_spec(name)
    size = image_size or 2 * spec.patch_size * 4
    model = timm.create_model(spec.full_name, pretrained=False, num_classes=0, depth=depth, img_size=size, **kw)
    return model.eval()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def wait_for(path, proc, seconds: float = 180) -> None:
    """Wait until ``path`` exists (a child process marks a point it reached), failing with the child's output when
    it ends first or ``seconds`` pass."""
    import time

    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate(timeout=30)
            raise AssertionError(f"{path} never appeared:\n{out}\n{err}")
        time.sleep(0.1)

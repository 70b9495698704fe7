"""Pretrained models are built on the GPU they go to, random-weight models on the CPU
(vitreg.core.weights.build_device); the GPU-only test checks the numbers are the same where a GPU is at hand."""

from __future__ import annotations

import contextlib

import pytest
import torch

from vitreg.core import weights
from vitreg.core.models import ZOO, get_spec
from vitreg.core.weights import build_device, load_model

from conftest import NO_CUDA

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


class _Built(Exception):
    """Raised by the spy in place of building (a CUDA model cannot be built on this machine)."""


def test_only_a_pretrained_load_onto_cuda_is_built_there():
    assert build_device(CUDA, pretrained=True) == CUDA
    assert build_device(torch.device("cuda", 1), pretrained=True) == torch.device("cuda", 1)
    assert build_device(CUDA, pretrained=False) == CPU
    assert build_device(CPU, pretrained=True) == CPU
    assert build_device(torch.device("mps"), pretrained=True) == CPU


def test_the_default_device_context_is_set_for_another_device_and_absent_for_the_cpu():
    assert isinstance(weights._default_device(CPU), contextlib.nullcontext)
    with weights._default_device(torch.device("meta")):
        assert torch.empty(1).device.type == "meta"
    assert torch.empty(1).device.type == "cpu"


@pytest.fixture
def spy(monkeypatch):
    """What torch's default device is set to around each ``timm.create_model`` call: a list of devices (None: not
    set); the call then stops the load."""
    import timm

    seen: list[torch.device | None] = []
    current: list[torch.device | None] = [None]

    @contextlib.contextmanager
    def recorded(device):
        current[0] = None if device.type == "cpu" else device
        try:
            yield
        finally:
            current[0] = None

    def create_model(*args, **kwargs):
        seen.append(current[0])
        raise _Built

    monkeypatch.setattr(weights, "_default_device", recorded)
    monkeypatch.setattr(timm, "create_model", create_model)
    return seen


@pytest.fixture
def tiny_file(tmp_path):
    """A well-formed safetensors file (the header check passes; the spy stops before its tensors matter)."""
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(2)}, path)
    return path


def test_a_pretrained_cuda_load_builds_under_the_cuda_device_and_a_random_one_on_the_cpu(spy, tiny_file):
    with pytest.raises(_Built):
        load_model("dinov2_s", weights=tiny_file, device=CUDA)
    with pytest.raises(_Built):
        load_model("dinov2_s", pretrained=False, device=CUDA)
    with pytest.raises(_Built):
        load_model("dinov2_s", weights=tiny_file, device="cpu")
    assert spy == [CUDA, None, None]


def test_random_weights_are_drawn_on_the_cpu_as_before():
    import timm

    torch.manual_seed(3)
    expected = timm.create_model(get_spec("dinov2_s").full_name, pretrained=False, img_size=(224, 224),
                                 num_classes=0).state_dict()
    torch.manual_seed(3)
    got = load_model("dinov2_s", pretrained=False, image_size=224).model.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def test_the_zoos_only_non_persistent_buffers_are_dinov3_rope_periods_which_timm_computes_on_the_cpu():
    """A pretrained model built on the GPU is the CPU-built one only if every tensor the strict load does not
    overwrite is computed the same there: a new non-persistent buffer in timm must be looked at first."""
    import timm

    for key, spec in ZOO.items():
        with torch.device("meta"):
            model = timm.create_model(spec.full_name, pretrained=False, num_classes=0)
        persistent = set(model.state_dict())
        extra = {name for name, _ in model.named_buffers() if name not in persistent}
        assert extra == ({"rope.periods"} if spec.family == "dinov3" else set()), key
    assert "device='cpu'" in _source_of_rope_periods()


def _source_of_rope_periods() -> str:
    import inspect

    from timm.layers.pos_embed_sincos import RotaryEmbeddingDinoV3

    return inspect.getsource(RotaryEmbeddingDinoV3._compute_periods)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("key, size", [("dinov2_s", 518), ("dinov2_s", 224), ("dinov2_s_reg", 224), ("dinov3_s", 224)])
def test_a_model_built_on_the_gpu_equals_the_cpu_built_one_moved_there(tmp_path, monkeypatch, key, size):
    import timm
    from safetensors.torch import save_file

    spec = get_spec(key)
    torch.manual_seed(0)
    src = timm.create_model(spec.full_name, pretrained=False, num_classes=0, img_size=spec.native_resolution)
    path = tmp_path / f"{spec.full_name}.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, path)
    on_gpu = load_model(key, weights=path, image_size=size, device=CUDA)
    monkeypatch.setattr(weights, "build_device", lambda target, pretrained: CPU)
    moved = load_model(key, weights=path, image_size=size, device=CUDA)
    a, b = on_gpu.model.state_dict(), moved.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for (name, x), (_, y) in zip(on_gpu.model.named_buffers(), moved.model.named_buffers()):
        assert torch.equal(x, y), name
    x = torch.randn(2, 3, size, size, device=CUDA)
    with torch.inference_mode():
        assert torch.equal(on_gpu.model.forward_features(x), moved.model.forward_features(x))

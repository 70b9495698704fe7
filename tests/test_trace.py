"""The run trace (vitreg.core.trace): with VITREG_TRACE set, every model load and every forward (the stream's
batches, a single forward, [TTR]'s detection pass) is one JSON line; unset, nothing is written."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vitreg.core import trace
from vitreg.core.images import preprocess
from vitreg.core.stream import stream
from vitreg.core.weights import load_model


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (60, 70, 3), dtype=np.uint8)) for _ in range(n)]


def test_loads_and_forwards_are_traced(tmp_path, monkeypatch):
    path = tmp_path / "trace.jsonl"
    monkeypatch.setenv(trace.TRACE_ENV, str(path))
    loaded = load_model("dinov2_s_reg", pretrained=False, image_size=56)
    for _ in stream(loaded, _images(5), batch_size=2, progress=False, norms=[-1]):
        pass
    with torch.inference_mode():
        loaded.forward(preprocess(_images(3), loaded))
    events = trace.read(path)
    assert events[0] == {"event": "load", "model": "dinov2_s_reg", "size": [56, 56], "pretrained": False}
    assert [e["images"] for e in events[1:]] == [2, 2, 1, 3]  # the stream's three batches, then the single forward
    assert {tuple(e["size"]) for e in events[1:]} == {(56, 56)}
    assert trace.loads(events) == ["dinov2_s_reg"] and trace.images_per_model(events) == {"dinov2_s_reg": 8}


def test_ttr_detection_forwards_are_traced(tmp_path, monkeypatch):
    from vitreg.measure.ttr import neuron_scores

    path = tmp_path / "trace.jsonl"
    loaded = load_model("dinov2_s", pretrained=False, image_size=56)
    monkeypatch.setenv(trace.TRACE_ENV, str(path))  # set after the load: only the forwards are traced
    neuron_scores(loaded, preprocess(_images(3), loaded), detect_block=-1, threshold=1.0, batch_size=2)
    assert trace.images_per_model(trace.read(path)) == {"dinov2_s": 3}


def test_nothing_is_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(trace.TRACE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    load_model("dinov2_s", pretrained=False, image_size=56)
    assert list(tmp_path.iterdir()) == [] and trace.read(tmp_path / "absent.jsonl") == []

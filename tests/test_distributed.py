"""Data-parallel feature extraction under torchrun (vitreg.utils.distributed), on CPU with gloo and 2 ranks.

Paper: Table 1 / Table 6 (notebook 06's frozen features): the features of a torchrun job equal a single
process's bit for bit, and a job whose rank died resumes by computing only the missing chunks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitreg.utils import cache, distributed
from vitreg.measure import features

ROOT = Path(__file__).resolve().parents[1]

def extract(root: str | Path) -> dict[str, torch.Tensor]:
    """One extraction: notebook 06's single-token features of 12 synthetic images in 6 chunks of 2, on a
    random-weight DINOv2-S+reg at 56 px, one thread (the same code in this process and in every rank)."""
    from vitreg.data.datasets import SyntheticGlobalDataset
    from vitreg.core.weights import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            loaded = load_model("dinov2_s_reg", pretrained=False, image_size=56)
        ds = SyntheticGlobalDataset(n=12, image_size=56)
        return features.single_token_features(loaded, ds, name="synthetic", split="train", n_draws=2, seed=0,
                                              batch_size=2, cache_root=root, chunk_size=2, progress=False)
    finally:
        torch.set_num_threads(threads)


#: A rank of the torchrun job. argv: output file, cache folder, log folder, rank to kill after its first
#: chunk (-1: none). Each rank logs the chunks it writes and saves the features it gets.
WORKER = r'''
import os, sys
sys.path.insert(0, TESTS)
import torch
from vitreg.utils import cache
from test_distributed import extract

out, root, logs, kill = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rank = int(os.environ["RANK"])
write_chunk = cache.FeatureCache.write_chunk

def logged(self, index, start, stop, compute):
    write_chunk(self, index, start, stop, compute)
    with open(os.path.join(logs, f"rank{rank}.log"), "a") as f:
        f.write(f"{index}\n")
    if rank == kill:
        os._exit(3)  # planted failure: this rank dies after its first chunk

cache.FeatureCache.write_chunk = logged
torch.save(extract(root), f"{out}.rank{rank}")
'''


def _run(tmp_path: Path, name: str, *, kill: int = -1) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2`` of :data:`WORKER` (gloo on CPU)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.replace("TESTS", repr(str(ROOT / "tests"))))
    logs = tmp_path / f"logs-{name}"
    logs.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", distributed.SWITCH):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path / "features.pt"), str(tmp_path / "cache"), str(logs), str(kill)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _logged(tmp_path: Path, name: str) -> list[int]:
    return sorted(int(line) for f in (tmp_path / f"logs-{name}").glob("rank*.log") for line in f.read_text().split())


def test_torchrun_features_equal_single_process_and_resume_after_a_killed_rank(tmp_path) -> None:
    reference = extract(tmp_path / "cache-single")  # the single-process run, in this process

    killed = _run(tmp_path, "killed", kill=1)
    assert killed.returncode != 0  # rank 1 died: torchrun stops the job
    entry = next((tmp_path / "cache").iterdir())
    on_disk = sorted(int(f.stem.split("-")[1]) for f in entry.glob("chunk-*.json"))
    assert not (entry / "done.json").exists() and 0 < len(on_disk) < 6
    assert set(_logged(tmp_path, "killed")) == set(on_disk)

    rerun = _run(tmp_path, "rerun")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _logged(tmp_path, "rerun") == sorted(set(range(6)) - set(on_disk))  # only the missing chunks
    for rank in (0, 1):
        got = torch.load(tmp_path / f"features.pt.rank{rank}")
        assert got.keys() == reference.keys()
        assert all(torch.equal(got[k], reference[k]) for k in reference), f"rank {rank} differs"
    assert json.loads((entry / "done.json").read_text())["n_chunks"] == 6


def test_without_torchrun_it_is_the_single_process_cache(tmp_path, monkeypatch) -> None:
    for var in ("WORLD_SIZE", distributed.SWITCH):
        monkeypatch.delenv(var, raising=False)
    assert not distributed.requested() and distributed.setup() == (0, 1) and distributed.is_main()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.requested()
    monkeypatch.setenv(distributed.SWITCH, "0")  # the switch off: every rank computes alone
    assert not distributed.requested()
    key = cache.feature_key(model="m", tag="", resolution=[56, 56], dataset="d", split="s", layer=0)
    compute = lambda a, b: {"x": torch.arange(a, b)}  # noqa: E731
    got = distributed.cached_features(key, 5, compute, chunk_size=2, root=tmp_path, progress=False)
    assert torch.equal(got["x"], torch.arange(5))
    assert (cache.FeatureCache(key, tmp_path, chunk_size=2).path / "done.json").exists()


@pytest.mark.parametrize("n_items", [0, -1])
def test_no_items_is_refused(tmp_path, monkeypatch, n_items) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError):
        distributed.cached_features({"k": 1}, n_items, lambda a, b: {}, root=tmp_path, progress=False)

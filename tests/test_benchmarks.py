"""The prepared GPU benchmark runs end to end (at toy sizes, on the CPU), so it is known to work before a GPU is
at hand; the numbers it prints here mean nothing and are not checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vitreg.utils.paths import repo_root


def test_the_gpu_benchmark_runs_every_step_in_its_dry_run(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(repo_root() / "benchmarks" / "bench_gpu.py"), "--dry-run", "--json",
                           str(out)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for step in ("1. forward", "2. GPU image path", "3. capture overhead", "4. feature cache read", "5. torch.compile",
                 "6. 04_redundant_patches end to end", "7. float32 matrix product", "8. elementwise kernels",
                 "9. loading models"):
        assert step in done.stdout, done.stdout
    got = json.loads(out.read_text())
    assert got["dry_run"] is True and got["notebook_04_s"] > 0 and got["decode"]["gap_mean_levels"] <= 1.0
    assert got["fp32_matmul_flops"] > 0 and got["hbm_copy_bytes_s"] > 0 and got["seg_loss_s"] > 0
    assert got["load_s"]["dinov2_s"] > 0 and got["disk_read_bytes_s"]["dinov2_s"] > 0 and got["kernel_start_s"] > 0
    # `vitreg estimate --rates` reads this file: a dry run is refused, a real one's keys are the rates it replaces
    from vitreg.experiments.timing import rates_from_benchmark

    with pytest.raises(ValueError, match="dry run"):
        rates_from_benchmark(got)
    rates = rates_from_benchmark({**got, "dry_run": False})
    assert {"FP32_SHARE", "HBM_SHARE", "DISK_BYTES_S", "KERNEL_S", "HOST_TOUCH_BYTES_S"} <= set(rates)

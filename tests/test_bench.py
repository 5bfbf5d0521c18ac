"""The speed benchmarks' own plumbing: real short runs, the nanoGPT side's data and log handling."""

from __future__ import annotations

import csv
import pickle

import numpy as np
import pytest

from benchmarks import bench_nanogpt_cpu as ng
from tests.helpers import run_cli


def test_bench_pairs_the_plain_loop_and_the_harness_on_cpu(tmp_path):
    out = tmp_path / "bench.csv"
    proc = run_cli("shakespeare_cpu", "--device", "cpu", "--steps", "4", "--warmup", "2", "--out", out,
                   module="ablations.bench")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = list(csv.DictReader(out.open()))
    assert row["config"] == "shakespeare_cpu" and int(row["steps"]) == 4
    plain, harness = float(row["plain_tokens_per_s"]), float(row["harness_tokens_per_s"])
    assert plain > 0 and harness > 0
    assert float(row["harness_over_plain"]) == pytest.approx(harness / plain)
    assert "harness tok/s" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["65m"], "unknown bench config '65m'"),
    (["shakespeare_cpu", "--device", "cuda"], "--device cuda: no CUDA device here"),
    (["shakespeare_cpu", "--repeats", "0"], "--repeats 0: needs at least 1"),
])
def test_bench_errors_are_one_line(args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = run_cli(*args, module="ablations.bench")
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_nanogpt_data_is_laid_out_as_its_prepare_script_writes_it(tmp_path, shared_data):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    vocab = ng.write_nanogpt_data(text, tmp_path)
    assert vocab == 65  # nanoGPT's shakespeare_char vocabulary
    train = np.fromfile(tmp_path / "train.bin", dtype=np.uint16)
    val = np.fromfile(tmp_path / "val.bin", dtype=np.uint16)
    assert len(train) == int(len(text) * 0.9) and len(train) + len(val) == len(text)
    meta = pickle.loads((tmp_path / "meta.pkl").read_bytes())
    assert meta["vocab_size"] == 65
    assert "".join(meta["itos"][int(i)] for i in val[:40]) == text[int(len(text) * 0.9):][:40]


def test_nanogpt_log_gives_the_final_estimate_and_iteration_time_without_eval_iterations():
    log = "\n".join([
        "step 0: train loss 4.1676, val loss 4.1649",
        "iter 0: loss 4.1700, time 900.00ms, mfu -100.00%",
        "iter 1: loss 4.1000, time 40.00ms, mfu -100.00%",
        "iter 249: loss 2.5000, time 44.00ms, mfu -100.00%",
        "step 250: train loss 2.4293, val loss 2.4447",
        "iter 250: loss 2.4000, time 700.00ms, mfu -100.00%",
    ])
    parsed = ng.parse_nanogpt_log(log, 250)
    assert parsed["val_loss_estimate"] == 2.4447
    assert parsed["ms_per_iter"] == pytest.approx(42.0)  # iterations 0 and 250 ran an evaluation
    with pytest.raises(RuntimeError, match="no 'step 500"):
        ng.parse_nanogpt_log(log, 500)


def test_nanogpt_bench_refuses_a_folder_that_is_not_a_checkout_and_odd_step_counts(tmp_path, shared_data):
    data = shared_data / "tinyshakespeare" / "input.txt"
    proc = run_cli("--nanogpt", tmp_path, "--data", data, module="benchmarks.bench_nanogpt_cpu")
    assert proc.returncode == 2 and "not a nanoGPT checkout (missing train.py" in proc.stderr
    proc = run_cli("--nanogpt", tmp_path, "--data", data, "--steps", "300", module="benchmarks.bench_nanogpt_cpu")
    assert proc.returncode == 2 and "use a multiple of 250" in proc.stderr

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
                   module="benchmarks.bench_harness")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = list(csv.DictReader(out.open()))
    assert row["config"] == "shakespeare_cpu" and int(row["steps"]) == 4
    plain, harness = float(row["plain_tokens_per_s_median"]), float(row["harness_tokens_per_s_median"])
    assert plain > 0 and harness > 0
    assert float(row["harness_over_plain_median_of_pairs"]) == pytest.approx(harness / plain)  # one repeat: one pair
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
    proc = run_cli(*args, module="benchmarks.bench_harness")
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


def _tiny_harness_run(tmp_path, warmup: int, steps: int, log_every: int, callbacks: list):
    """The bench's harness side, on a real Trainer, with extra callbacks watching it."""
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from ablations.train_cell import build_trainer
    from benchmarks import bench_harness as bench
    from research.data.batches import RandomWindows, fixed_windows
    from research.lightning_module import LMModule

    cfg = bench.run_config("tiny", "cpu", False, "32-true")
    bench.set_steps(cfg, warmup + steps)
    cfg.train.log_every = log_every
    tokens = np.random.default_rng(0).integers(0, 64, 20_000).astype(np.uint16)
    module = LMModule(cfg.to_dict(), 64, eot_id=0)
    trainer = build_trainer(cfg, tmp_path, CSVLogger(tmp_path, name="", version=""), callbacks)
    trainer.fit(module, DataLoader(RandomWindows(tokens, 4, 32, seed=0), batch_size=None),
                DataLoader(fixed_windows(tokens, 1, 4, 32), batch_size=None))
    return trainer


def test_bench_window_holds_exactly_the_timed_steps_and_not_the_final_validation(tmp_path):
    import time

    import lightning as L

    from benchmarks import bench_harness as bench

    seen = {}

    class Watch(L.Callback):
        def on_validation_start(self, trainer, pl_module):
            seen.setdefault("val_start", time.perf_counter())

    timer = bench._Timer(3, 5, "cpu")
    trainer = _tiny_harness_run(tmp_path, 3, 5, 2, [timer.callback, Watch()])
    assert trainer.global_step == 8 and timer.timed_steps == 5
    assert timer.window.t0 < timer.window.t1 <= seen["val_start"]  # Lightning validates after the last step


def test_training_steps_do_not_synchronise_with_the_host_except_on_logging_steps(tmp_path, monkeypatch):
    """Each .item(), bool() or float() of a tensor waits for the device to drain its queue, so a
    step that calls one cannot overlap the next step's launches: on a GPU that serialises host and
    device time. On CPU the calls themselves are counted; they are the same calls a GPU run makes."""
    import lightning as L
    import torch

    calls = []
    live = {"on": False}
    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy"):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, _name=name, **k):
            if live["on"]:
                calls.append((_name, running["step"]))
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    running = {"step": 0}

    class Window(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            live["on"] = trainer.global_step >= 2  # after the optimizer's lazy state is built
            running["step"] = trainer.global_step + 1  # the global step this batch will end on

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            live["on"] = False

    _tiny_harness_run(tmp_path, 2, 18, 5, [Window()])
    assert calls, "the counter saw nothing: logging steps must read their values back"
    assert {step for _, step in calls} == {5, 10, 15, 20}  # the logging steps, and no other


def test_bench_profile_writes_a_trace_of_each_timed_window(tmp_path):
    import json

    traces = tmp_path / "traces"
    proc = run_cli("tiny", "--device", "cpu", "--steps", "3", "--warmup", "2", "--out", tmp_path / "b.csv",
                   "--profile", traces, module="benchmarks.bench_harness")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in traces.iterdir()) == ["tiny_harness_0.json", "tiny_plain_0.json"]
    for loop in ("plain", "harness"):
        events = json.loads((traces / f"tiny_{loop}_0.json").read_text())["traceEvents"]
        names = {e.get("name") for e in events}
        assert "Optimizer.step#AdamW.step" in names  # the optimizer steps of the window were recorded
    (row,) = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert row["profiled"] == "True"


def test_cells_per_gpu_bench_trains_every_cell_serially_and_in_parallel(tmp_path):
    out = tmp_path / "cells.csv"
    proc = run_cli("--device", "cpu", "--cells", "2", "--per-gpu", "2", "--steps", "4",
                   "--set", "model.n_layer=1", "--set", "model.n_embd=16", "--set", "model.block_size=32",
                   "--set", "train.batch_size=4", "--set", "data.n_docs=300",
                   "--work", tmp_path / "work", "--out", out, module="benchmarks.bench_cells_per_gpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    serial, parallel = list(csv.DictReader(out.open()))
    assert (serial["runners"], parallel["runners"]) == ("1", "2")
    assert float(parallel["speedup"]) == pytest.approx(float(serial["wall_s"]) / float(parallel["wall_s"]))
    for side in ("serial", "parallel"):
        assert len(list((tmp_path / "work" / side).glob("*/DONE"))) == 2  # every cell trained and finished


def test_training_row_holds_a_plain_loops_values_at_lightnings_steps_without_self_log(tmp_path, monkeypatch):
    """The per-step row bypasses Lightning's `self.log` (about a millisecond of Python per call, a
    tiny model's whole step); it must still hold, at the steps Lightning logs (the last of every
    `log_every`), the loss, gradient norm and next learning rate a plain loop computes."""
    import lightning as L
    import torch
    import torch.nn.functional as F

    from benchmarks import bench_harness as bench
    from research.data.batches import RandomWindows
    from research.models import build_model
    from research.optim import build_optimizer, build_scheduler

    hooks = []
    log = L.LightningModule.log

    def counted(self, name, *a, **k):
        hooks.append(self._current_fx_name)
        return log(self, name, *a, **k)

    monkeypatch.setattr(L.LightningModule, "log", counted)
    torch.manual_seed(0)
    _tiny_harness_run(tmp_path, 0, 10, 5, [])
    assert set(hooks) == {"validation_step"}  # training steps never go through self.log
    got = [(int(r["step"]), float(r["train/loss"]), float(r["train/grad_norm"]), float(r["lr"]))
           for r in csv.DictReader((tmp_path / "metrics.csv").open()) if r["train/loss"]]

    cfg = bench.run_config("tiny", "cpu", False, "32-true")
    bench.set_steps(cfg, 10)
    torch.manual_seed(0)
    model = build_model(cfg.model, 64)
    opt = build_optimizer(model, cfg.train)
    sched = build_scheduler(opt, cfg.train)
    data = RandomWindows(np.random.default_rng(0).integers(0, 64, 20_000).astype(np.uint16), 4, 32, seed=0)
    expected = []
    for step in range(10):
        x, y = data.batch(step)
        loss = F.cross_entropy(model(x).reshape(-1, 64), y.reshape(-1))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad()
        if (step + 1) % 5 == 0:  # self.log stored numbers as float32 tensors: the row keeps that rounding
            expected.append((step, loss.item(), norm.item(), float(np.float32(opt.param_groups[0]["lr"]))))
    assert [g[0] for g in got] == [4, 9]
    assert [g[3] for g in got] == [e[3] for e in expected]
    np.testing.assert_allclose([g[1:3] for g in got], [e[1:3] for e in expected], rtol=1e-5)

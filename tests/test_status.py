"""`ablations.status`: a cell's status, phase and ETA, from its claim and its own progress record."""

from __future__ import annotations

import time

import pytest

from ablations.claims import release, try_claim
from ablations.status import cell_state, format_status, grid_status, grid_times
from research import cell


@pytest.fixture
def grid_dir(tmp_path):
    grid = tmp_path / "g"
    cell.write_grid(grid, {"name": "g", "axes": [], "cells": [{"id": "a", "seed": 0, "axes": {}},
                                                               {"id": "b", "seed": 1, "axes": {}}]})
    cell.write_config(grid / "a", {"train": {"max_steps": 12}})
    return grid


def test_phase_and_eta_come_from_the_progress_record(grid_dir):
    claim = try_claim(grid_dir, "a", "test-runner")  # held by this live process
    try:
        cell.write_progress(grid_dir / "a", "training", 6, 12)
        row = cell_state(grid_dir, {"id": "a", "seed": 0}, now=claim.owner["since"] + 10.0, jobs={})
        assert (row.status, row.phase, row.step, row.progress) == ("running", "training step 6/12", 6, 0.5)
        assert row.elapsed_s == pytest.approx(10.0) and row.eta_s == pytest.approx(10.0)  # half done in 10 s
        cell.write_progress(grid_dir / "a", "evaluating", 12, 12)  # no file says so but the record
        row = cell_state(grid_dir, {"id": "a", "seed": 0}, now=claim.owner["since"] + 30.0, jobs={})
        assert row.phase == "running evals" and row.eta_s is None
    finally:
        release(claim)
    (a, b) = grid_status(grid_dir)
    assert (a.status, a.phase, a.step) == ("partial", None, 12) and (b.status, b.step) == ("pending", None)
    assert "1 partial, 1 pending" in format_status([a, b])


def test_an_older_cell_without_a_record_reads_its_step_from_the_log(grid_dir):
    (grid_dir / "a" / cell.LOG).write_text("step,train/loss\n1,3.0\n5,2.5\n")
    claim = try_claim(grid_dir, "a", "test-runner")
    try:
        row = cell_state(grid_dir, {"id": "a", "seed": 0}, now=time.time(), jobs={})
    finally:
        release(claim)
    assert row.phase == "training step 6/12" and row.progress == 0.5


def test_grid_eta_adds_the_waiting_cells_at_the_mean_wall_clock(grid_dir):
    claim = try_claim(grid_dir, "a", "test-runner")
    try:
        cell.write_progress(grid_dir / "a", "training", 6, 12)
        now = claim.owner["since"] + 10.0
        rows = [cell_state(grid_dir, {"id": "a", "seed": 0}, now=now, jobs={}),
                cell_state(grid_dir, {"id": "b", "seed": 1}, now=now, jobs={})]
    finally:
        release(claim)
    times = grid_times(rows, running=True, now=now)
    # a: 10 s left; b waits: a's estimated wall clock (20 s), one live runner
    assert times["elapsed_s"] == pytest.approx(10.0) and times["eta_s"] == pytest.approx(30.0)

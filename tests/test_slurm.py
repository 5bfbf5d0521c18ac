"""The SLURM launcher against a real SLURM: the single-node cluster of
`../shared/tools/slurm/start-local-slurm.sh` (22.05, accounting on, 8 advertised CPUs so several
jobs run at once), started by the `slurm` fixture when it can be (root, the packages installable)
and skipped with the reason otherwise.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, run_cli, write_grid

START = REPO.parent / "shared" / "tools" / "slurm" / "start-local-slurm.sh"


@pytest.fixture(scope="session")
def slurm() -> None:
    pytest.importorskip("submitit")
    if not START.exists():
        pytest.skip(f"{START} is not present")
    if os.geteuid() != 0 and shutil.which("sbatch") is None:
        pytest.skip("no SLURM here, and starting the local cluster needs root")
    if os.geteuid() == 0:
        env = dict(os.environ, SLURM_LOCAL_CPUS="8")
        up = subprocess.run(["bash", str(START)], capture_output=True, text=True, env=env, timeout=900)
        if up.returncode != 0:
            pytest.skip(f"the local SLURM did not start: {(up.stderr or up.stdout).strip().splitlines()[-1:]}")
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        pytest.skip("sinfo fails: SLURM is not reachable")


def slurm_grid(path: Path, name: str, resources: str = "{cpus: 1, time_min: 10}", **kwargs) -> Path:
    grid = write_grid(path, name=name, **kwargs)
    grid.write_text(grid.read_text() + f"resources: {resources}\n")
    return grid


def submit(grid: Path, results: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(grid, "--results-dir", results, "--launcher", "slurm", *extra, timeout=900)


def metrics_rows(cell_dir: Path) -> list[dict]:
    with open(cell_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def cells(grid_dir: Path) -> list[Path]:
    return sorted(p for p in grid_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def same_rows(got: list[dict], want: list[dict]) -> None:
    """The same rows (steps, columns, filled cells) with the same values, up to float rounding: the
    job trains on the one CPU SLURM gave it, the reference on all of them (other summation orders)."""
    assert [(r["step"], sorted(k for k, v in r.items() if v)) for r in got] == \
           [(r["step"], sorted(k for k, v in r.items() if v)) for r in want]
    for a, b in zip(got, want):
        for key, value in a.items():
            if value and key != "perf/tokens_per_s":  # timing, not a result
                assert float(value) == pytest.approx(float(b[key]), rel=1e-4), (a["step"], key)


def job_logs(grid_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in (grid_dir / ".submitit").glob("*/*_log.err"))


def wait_gone(job_ids: list[str], timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i"], capture_output=True, text=True)
        if not out.stdout.strip():
            return
        time.sleep(2)
    raise AssertionError(f"jobs {job_ids} still queued after {timeout}s")


def array_ids(proc: subprocess.CompletedProcess) -> list[str]:
    return sorted({line.split("job ")[1].split(",")[0].split("_")[0]
                   for line in proc.stderr.splitlines() if ", log " in line})


def test_two_submissions_of_one_grid_train_every_cell_once(slurm, tmp_path):
    """Both arrays are submitted held (an extra sbatch option from the grid), then released together,
    so their tasks race for the same four cells. One cell diverges: its job, and only its, FAILED."""
    grid = slurm_grid(tmp_path / "g.yaml", "twice", grid={"train.lr": [1e-3, 2e-3, 3e-3, 1e9]},
                      resources="{cpus: 1, time_min: 10, sbatch: {hold: true}}")
    results = tmp_path / "results"
    submissions = [submit(grid, results) for _ in range(2)]
    assert all(p.returncode == 0 for p in submissions), [p.stderr for p in submissions]
    arrays = [a for p in submissions for a in array_ids(p)]
    assert len(arrays) == 2
    grid.write_text("name: twice\ngrid: {model.n_embd: [8]}\n")  # edited after submission: jobs run their snapshot
    subprocess.run(["scontrol", "release", *arrays], check=True)
    wait_gone(arrays)
    grid_dir = results / "twice"
    logs = job_logs(grid_dir)
    for cell in cells(grid_dir):
        assert (cell / "DONE").exists() != ("1e+09" in cell.name)
        assert logs.count(f"{cell.name}: training") == 1, logs  # one job trained it, the other did not
        if (cell / "DONE").exists():
            steps = [r["step"] for r in metrics_rows(cell) if r.get("train/loss")]
            assert len(steps) == len(set(steps)), steps  # no step logged twice
            assert json.loads((cell / "manifest.json").read_text())["threads"] == 1  # resources.cpus: 1
    skipped = ("claimed by another runner (skipped)", "already done", "failed in another job (kept")
    assert sum(logs.count(s) for s in skipped) == 4, logs
    assert "loss became nan" in logs and "Traceback" not in logs
    assert not list((grid_dir / ".claims").glob("*.json"))
    sacct = subprocess.run(["sacct", "-n", "-X", "-j", ",".join(arrays), "-o", "State"], capture_output=True,
                           text=True).stdout.split()
    assert sorted(sacct) == ["COMPLETED"] * 7 + ["FAILED"], sacct
    status = run_cli(grid_dir, module="ablations.status")
    assert "3 done, 1 failed" in status.stdout, status.stdout


def test_cancelled_cell_resumed_by_a_new_submission_keeps_every_log_row(slurm, tmp_path):
    """scancel mid-cell (SIGTERM, then SIGKILL), submit again: the new job takes over the dead
    job's claim, resumes from the checkpoint, and the cell's files equal an uninterrupted run's."""
    train = {"max_steps": 150, "checkpoint_every": 25, "eval_every": 50}
    grid = slurm_grid(tmp_path / "g.yaml", "cut", grid={"model.n_embd": [16]}, train=train,
                      eval={"per_position_every": 30, "samples": 0})
    results = tmp_path / "results"
    first = submit(grid, results)
    assert first.returncode == 0, first.stderr
    job = first.stderr.split(": job ")[1].split(",")[0]
    deadline = time.time() + 300
    grid_dir = results / "cut"
    while time.time() < deadline and not list(grid_dir.glob("*/checkpoints/last.ckpt")):
        time.sleep(0.2)
    subprocess.run(["scancel", job], check=True)
    wait_gone([job])
    (cell,) = cells(grid_dir)
    assert not (cell / "DONE").exists(), "the cell finished before it could be cancelled"
    sacct = subprocess.run(["sacct", "-n", "-X", "-j", job, "-o", "State"], capture_output=True, text=True).stdout
    assert "COMPLETED" not in sacct, sacct  # a cancelled cell does not look like a success
    again = submit(grid, results, "--wait")
    assert again.returncode == 0, again.stderr
    assert "resuming from its last checkpoint" in job_logs(grid_dir)
    straight = run_cli(grid, "--results-dir", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    reference = tmp_path / "straight" / "cut" / cell.name
    same_rows(metrics_rows(cell), metrics_rows(reference))
    pos = [r["step"] for r in json.loads((cell / "per_position.json").read_text())]
    assert pos == [r["step"] for r in json.loads((reference / "per_position.json").read_text())]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (cell, reference))
    assert a["train_tokens"] == b["train_tokens"] and a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-4)
    assert a["sessions"] == 2 and a["wall_s"] > a["train_s"] > 0
    assert not list(cell.glob("hpc_ckpt_*")) and not (cell / "checkpoints").exists()


def test_two_device_cell_trains_two_ranks_under_slurm(slurm, tmp_path):
    grid = slurm_grid(tmp_path / "g.yaml", "ddp", grid={"model.n_embd": [16]},
                      train={"strategy": "ddp", "devices": 2, "accelerator": "cpu", "max_steps": 10})
    proc = submit(grid, tmp_path / "r", "--wait")
    assert proc.returncode == 0, proc.stderr
    (cell,) = cells(tmp_path / "r" / "ddp")
    assert json.loads((cell / "metrics.json").read_text())["train_tokens"] == 10 * 4 * 32 * 2
    (script,) = (tmp_path / "r" / "ddp" / ".submitit").glob("*/*_submission.sh")
    assert "#SBATCH --ntasks-per-node=2" in script.read_text()


def test_bad_partition_is_one_line(slurm, tmp_path):
    grid = slurm_grid(tmp_path / "g.yaml", "badpart", resources="{partition: nosuch}")
    proc = submit(grid, tmp_path / "r")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: sbatch refused the job: invalid partition specified: nosuch; "
        "set resources.partition to one that `sinfo` lists"]


@pytest.mark.slow
def test_requeued_cell_resumes_and_keeps_every_log_row(slurm, tmp_path):
    """`scontrol requeue` (what preemption does): SLURM holds the job 2-3 minutes before it runs
    again; meanwhile `ablations.status` shows the cell requeued under its job, not stale."""
    train = {"max_steps": 300, "checkpoint_every": 25, "eval_every": 100}
    grid = slurm_grid(tmp_path / "g.yaml", "requeue", grid={"model.n_embd": [16]}, train=train)
    results = tmp_path / "results"
    first = submit(grid, results)
    assert first.returncode == 0, first.stderr
    job = first.stderr.split(": job ")[1].split(",")[0]
    grid_dir = results / "requeue"
    deadline = time.time() + 300
    while time.time() < deadline and not list(grid_dir.glob("*/checkpoints/last.ckpt")):
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", job], check=True)
    time.sleep(5)
    status = run_cli(grid_dir, "--json", module="ablations.status")
    (row,) = json.loads(status.stdout)
    assert row["status"] == "requeued" and row["runner"] == f"slurm:{job}", row
    wait_gone([job], timeout=900)
    (cell,) = cells(grid_dir)
    assert (cell / "DONE").exists()
    straight = run_cli(grid, "--results-dir", tmp_path / "straight")
    reference = tmp_path / "straight" / "requeue" / cell.name
    assert straight.returncode == 0, straight.stderr
    same_rows(metrics_rows(cell), metrics_rows(reference))


def first_job(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.split(": job ")[1].split(",")[0]


def wait_for(what: str, ready, timeout: float = 300, poll_s: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout}s")


def job_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def start_requeued(job: str) -> None:
    """Wait for `job` to be requeued, then let it start now: SLURM would hold it 2-3 minutes (its
    begin time), which only makes the test slower."""
    wait_for(f"job {job} requeued", lambda: job_state(job) == "PENDING", timeout=300)
    subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], check=True)


def checkpoint_step(cell_dir: Path) -> int:
    from ablations.requeue import saved_step

    try:
        return saved_step(cell_dir)
    except (OSError, RuntimeError, EOFError):  # being replaced right now
        return 0


def straight_run(grid: Path, results: Path) -> None:
    """The uninterrupted reference, on one thread as the job's `cpus: 1` (the same summation order)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "ablations.run", str(grid), "--results-dir", str(results)],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr


def identical_rows(got: list[dict], want: list[dict]) -> None:
    """Row for row, value for value (timings aside)."""
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for a, b in zip(got, want):
        assert {k: v for k, v in a.items() if k != "perf/tokens_per_s"} == \
               {k: v for k, v in b.items() if k != "perf/tokens_per_s"}, a["step"]


@pytest.mark.slow
def test_usr1_requeue_resumes_with_the_uninterrupted_log(slurm, tmp_path):
    """`scancel --signal=USR1` mid-cell: the cell saves at the next step boundary, its job is
    requeued and resumes it, and metrics.csv equals the uninterrupted run's row for row (Lightning's
    own USR1 checkpoint, taken inside the signal handler, shifted every later row by one log row)."""
    train = {"max_steps": 1000, "checkpoint_every": 100, "eval_every": 50}  # ~100 steps/s
    grid = slurm_grid(tmp_path / "g.yaml", "usr1", grid={"model.n_embd": [16]}, train=train,
                      eval={"per_position_every": 30, "samples": 0})
    results = tmp_path / "results"
    first = submit(grid, results)
    assert first.returncode == 0, first.stderr
    job = first_job(first)
    grid_dir = results / "usr1"
    wait_for("a first checkpoint", lambda: list(grid_dir.glob("*/checkpoints/last.ckpt")))
    (cell,) = cells(grid_dir)
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    start_requeued(job)
    wait_gone([job], timeout=900)
    assert (cell / "DONE").exists(), job_logs(grid_dir)
    logs = job_logs(grid_dir)
    assert "requeued by SLURM before its last step" in logs and "resuming from its last checkpoint" in logs, logs
    assert "submit the same command again" not in logs
    assert json.loads((cell / "metrics.json").read_text())["sessions"] == 2
    assert not list(cell.glob("hpc_ckpt_*"))
    straight_run(grid, tmp_path / "straight")
    reference = tmp_path / "straight" / "usr1" / cell.name
    identical_rows(metrics_rows(cell), metrics_rows(reference))
    assert json.loads((cell / "per_position.json").read_text()) == \
           json.loads((reference / "per_position.json").read_text())


@pytest.mark.slow
def test_four_sessions_within_the_requeue_budget_then_out_of_it(slurm, tmp_path):
    """The USR2 SLURM sends before a job's time limit (sent here by the test after each session's
    first new checkpoint, so that every session makes progress): `resources.max_requeues: 3`
    requeues the job three times; status flags the fourth session as the cell's last; a fourth
    signal ends the job with one line saying what to raise; submitting again finishes the cell
    with the uninterrupted run's log."""
    train = {"max_steps": 3000, "checkpoint_every": 250, "eval_every": 500}  # ~100 steps/s: a session saves 1-2
    grid = slurm_grid(tmp_path / "g.yaml", "budget", grid={"model.n_embd": [16]}, train=train,
                      eval={"samples": 0}, resources="{cpus: 1, time_min: 10, max_requeues: 3}")
    results = tmp_path / "results"
    first = submit(grid, results)
    assert first.returncode == 0, first.stderr
    job = first_job(first)
    grid_dir = results / "budget"
    wait_for("the cell's folder", lambda: cells(grid_dir))
    (cell,) = cells(grid_dir)
    for session in range(1, 5):
        resumed_at = checkpoint_step(cell)  # the job is running; a checkpoint after this one is this session's
        wait_for(f"a checkpoint in session {session}", lambda: checkpoint_step(cell) > resumed_at, timeout=600)
        if session == 4:
            status = run_cli(grid_dir, "--json", module="ablations.status")
            (row,) = json.loads(status.stdout)
            assert row["requeues"] == "3/3" and row["last_requeue"] and row["status"] == "running", row
            assert row["elapsed_s"] > 20, row  # from the first session's start, not this one's
            assert "on its last requeue (3/3 used)" in run_cli(grid_dir, module="ablations.status").stdout
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        if session < 4:
            start_requeued(job)
            wait_for(f"job {job} running again", lambda: job_state(job) == "RUNNING")
    wait_gone([job])
    assert not (cell / "DONE").exists() and checkpoint_step(cell) < 3000
    logs = job_logs(grid_dir)
    assert all(f"requeued ({n} of 3 requeues)" in logs for n in (1, 2, 3)), logs
    assert "not requeued: it used its 3 requeue(s)" in logs and "raise resources.time_min" in logs, logs
    again = submit(grid, results, "--wait")
    assert again.returncode == 0, again.stderr
    assert json.loads((cell / "metrics.json").read_text())["sessions"] == 5
    assert "over 5 sessions" in job_logs(grid_dir)
    straight_run(grid, tmp_path / "straight")
    identical_rows(metrics_rows(cell), metrics_rows(tmp_path / "straight" / "budget" / cell.name))


def rank_pids(job: str, rank: int) -> list[int]:
    """The processes of `job`'s task `rank` (the job's python, started by srun), from /proc."""
    array, _, task = job.partition("_")
    ids = {"SLURM_ARRAY_JOB_ID": array, "SLURM_ARRAY_TASK_ID": task} if task else {"SLURM_JOB_ID": job}
    found = []
    for env_file in Path("/proc").glob("[0-9]*/environ"):
        try:
            env = dict(item.split("=", 1) for item in env_file.read_text(errors="replace").split("\0") if "=" in item)
        except OSError:
            continue
        if env.get("SLURM_PROCID") == str(rank) and all(env.get(k) == v for k, v in ids.items()) \
                and "SLURM_STEP_ID" in env:
            cmdline = (env_file.parent / "cmdline").read_bytes()
            if b"submitit" in cmdline:
                found.append(int(env_file.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("when", ["at_start", "mid_training"])
def test_a_rank_that_dies_ends_the_whole_job(slurm, tmp_path, when):
    """Rank 1 of a two-rank cell is killed (as the OOM killer would). At its start, rank 0 would
    wait for it in the rendezvous until the time limit: `srun --kill-on-bad-exit` ends the job.
    Mid-training, gloo reports the lost peer to rank 0 at once and the cell fails with that reason
    (NCCL, untested here, may instead wait: the srun option ends that job too). Either way the
    job ends within a minute, not done and not COMPLETED."""
    grid = slurm_grid(tmp_path / "g.yaml", "rankfail", grid={"model.n_embd": [16]},
                      train={"strategy": "ddp", "devices": 2, "accelerator": "cpu", "max_steps": 100000,
                             "checkpoint_every": 20, "eval_every": 100000},
                      eval={"samples": 0, "per_position_every": 0})
    results = tmp_path / "results"
    first = submit(grid, results)
    assert first.returncode == 0, first.stderr
    job = first_job(first)
    grid_dir = results / "rankfail"
    if when == "mid_training":
        wait_for("a first checkpoint", lambda: list(grid_dir.glob("*/checkpoints/last.ckpt")), timeout=600)
    (victim,) = wait_for("rank 1's process", lambda: rank_pids(job, 1), timeout=300, poll_s=0.05)
    os.kill(victim, 9)
    killed = time.time()
    wait_gone([job], timeout=300)
    assert time.time() - killed < 60, "the surviving rank outlived its peer"
    assert not list(grid_dir.glob("*/DONE"))
    sacct = subprocess.run(["sacct", "-n", "-X", "-j", job, "-o", "State"], capture_output=True, text=True).stdout
    assert "COMPLETED" not in sacct, sacct
    if when == "mid_training":
        (cell,) = cells(grid_dir)
        assert "peer" in json.loads((cell / "error.json").read_text())["reason"]  # gloo: connection reset by peer


TWO_NODES_CONF = """ClusterName=twonodes
SlurmctldHost={host}
SlurmctldPort={port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.%n.pid
SlurmdSpoolDir={dir}/spool/%n
StateSaveLocation={dir}/state
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.%n.log
ReturnToService=2
SlurmdParameters=config_overrides
NodeName={host} NodeHostname={host} NodeAddr=127.0.0.1 Port={port1} CPUs=2 RealMemory=4000
NodeName=localhost NodeHostname={host} NodeAddr=127.0.0.1 Port={port2} CPUs=2 RealMemory=4000
PartitionName=two Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture
def two_nodes(slurm, tmp_path_factory, monkeypatch):
    """A second, private SLURM of two nodes on this one host: this host's name and `localhost`,
    each its own `slurmd -N` on its own port (Debian's SLURM is built with MULTIPLE_SLURMD). The
    shared cluster is left alone; this one has no accounting, so jobs are followed with squeue.
    Commands in the test reach it through SLURM_CONF."""
    import socket

    if os.geteuid() != 0:
        pytest.skip("starting SLURM daemons needs root")
    host = socket.gethostname().split(".")[0]
    folder = tmp_path_factory.mktemp("twonodes")
    (folder / "state").mkdir()
    (folder / "spool").mkdir()
    conf = folder / "slurm.conf"
    conf.write_text(TWO_NODES_CONF.format(host=host, dir=folder, port=17100, port1=17102, port2=17103))
    monkeypatch.setenv("SLURM_CONF", str(conf))
    daemons = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
               for cmd in (["slurmctld", "-D", "-f", str(conf)],)]
    time.sleep(2)
    daemons += [subprocess.Popen(["slurmd", "-D", "-f", str(conf), "-N", node], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True) for node in (host, "localhost")]
    try:
        idle = lambda: subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True,  # noqa: E731
                                      text=True).stdout.split() == ["idle", "idle"]
        try:
            wait_for("two idle nodes", idle, timeout=60, poll_s=1)
        except AssertionError:
            pytest.skip(f"the two-node SLURM did not start (see {folder})")
        yield host
    finally:
        for daemon in reversed(daemons):
            daemon.terminate()
            daemon.wait(timeout=30)


@pytest.mark.slow
def test_a_two_node_cell_trains_one_rank_per_node(two_nodes, tmp_path):
    grid = slurm_grid(tmp_path / "g.yaml", "nodes", grid={"model.n_embd": [16]},
                      train={"strategy": "ddp", "devices": 1, "num_nodes": 2, "accelerator": "cpu", "max_steps": 10},
                      eval={"samples": 0})
    proc = submit(grid, tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    job = first_job(proc)
    nodes = wait_for("the job on two nodes", lambda: subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True, text=True).stdout.strip(), timeout=120)
    assert sorted(nodes.split(",")) == sorted([two_nodes, "localhost"])
    wait_gone([job], timeout=600)
    (cell,) = cells(tmp_path / "r" / "nodes")
    assert (cell / "DONE").exists(), job_logs(tmp_path / "r" / "nodes")
    assert json.loads((cell / "metrics.json").read_text())["train_tokens"] == 10 * 4 * 32 * 2
    (script,) = (tmp_path / "r" / "nodes" / ".submitit").glob("*/*_submission.sh")
    assert "#SBATCH --nodes=2" in script.read_text()

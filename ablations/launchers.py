"""Where cells run: this process, several local worker processes, or a SLURM job array.

Every launcher runs the same runner (`ablations.runner.train_claimed`: claim, train, release)
under the same atomic claims (`ablations.claims`), so launchers differ only in how many runners
they start and where:

- `local`, one worker: cells in order, in this process.
- `local`, k workers: k copies of the runner as subprocesses. With GPUs, worker w sees GPU
  w mod n_gpus only (`CUDA_VISIBLE_DEVICES`), so `--cells-per-gpu k` puts k tiny cells on each
  GPU at once; on CPU the cores are split between workers.
- `slurm`: one submitit job array per task layout, one array task per unfinished cell, resources
  from the grid's `resources` section. A cell of `train.devices: n` (`num_nodes: m`) gets n tasks
  per node on m nodes, so SLURM starts its ranks and Lightning's SLURM environment joins them.
  Jobs run a snapshot of the code and grid taken at submission, not whatever is on disk when
  they start. A preempted or timed-out job is requeued by submitit (`checkpoint()`), comes back
  with its job id, takes its own claim back and resumes the cell from `checkpoints/last.ckpt`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ablations import records, runner
from ablations.runner import quiet_lightning, say
from research.errors import ConfigError, UserError
from research.io import atomic_write_text

#: grid `resources` keys -> submitit parameters (slurm_* apply on SLURM only)
RESOURCE_KEYS = {
    "gpus": "gpus_per_node",
    "cpus": "cpus_per_task",
    "memory_gb": "mem_gb",
    "time_min": "timeout_min",
    "partition": "slurm_partition",
    "account": "slurm_account",
    "qos": "slurm_qos",
    "constraint": "slurm_constraint",
    "max_parallel": "slurm_array_parallelism",
    "sbatch": "slurm_additional_parameters",
    "setup": "slurm_setup",
}

#: SLURM's task layout follows the cell's training config, so these resources keys would contradict it
FROM_TRAIN = {"nodes": "train.num_nodes", "ntasks_per_node": "train.devices", "tasks_per_node": "train.devices"}

#: the time limit of a job when the grid sets no `resources.time_min` (minutes)
DEFAULT_TIME_MIN = 60

#: submitit's own count of timeout requeues, set out of reach (CellJob.checkpoint keeps the budget)
SUBMITIT_TIMEOUTS = 1_000_000

#: the first line SLURM prints for a refused submission -> what to change in the grid
SBATCH_FIXES = {
    "invalid partition": "set resources.partition to one that `sinfo` lists",
    "invalid generic resource": "lower resources.gpus (or drop it) to what the partition's nodes have (`sinfo -o %G`)",
    "invalid account": "set resources.account to one of yours (`sacctmgr show assoc user=$USER`)",
    "invalid qos": "set resources.qos to one your account may use",
    "requested node configuration is not available": "ask for fewer resources (cpus, memory_gb, gpus, nodes)",
    "time limit": "lower resources.time_min to the partition's limit (`sinfo -o %l`)",
}


def visible_gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        return [g for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def spawn_local_workers(argv: list[str], n_workers: int, gpus: list[str]) -> int:
    """Start `n_workers` runner processes on the same grid and wait for all of them."""
    procs = []
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    for w in range(n_workers):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[w % len(gpus)]
        procs.append(subprocess.Popen([sys.executable, "-m", "ablations.run", *argv, "--worker"], env=env))
    codes = [p.wait() for p in procs]
    return max(codes)


def fail_job(line: str) -> SystemExit:
    """Say why on the job's log in one line; exiting non-zero makes `sacct` show FAILED (an
    exception would also work, but submitit prints its traceback in the log)."""
    say(line)
    return SystemExit(1)


class CellJob:
    """A submitit job that runs one cell under the claims protocol (picklable: paths and strings).

    Every task of the job runs it: task 0 claims and trains the cell, the others (ranks of a
    multi-device cell) follow it in the same Lightning run.
    """

    def __init__(self, grid_path: str, overrides: dict, results_dir: str, cell_id: str, retry_failed: bool = False,
                 max_requeues: int | None = None):
        self.grid_path, self.overrides, self.results_dir, self.cell_id = grid_path, overrides, results_dir, cell_id
        self.retry_failed = retry_failed
        self.submitted = time.time()
        self.budget = max_requeues  # None: sized at the first requeue (ablations.requeue.sized_budget)
        self.requeues = 0
        self.session: dict = {}  # this session's cell: where it is and the step it resumed from
        self.requeueing = False  # checkpoint() has handed submitit this job to requeue

    def __call__(self) -> str:
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:  # torch would otherwise use every core of the node, not the ones SLURM gave the job
            import torch

            torch.set_num_threads(int(cpus))
        quiet_lightning()
        cell, grid = self._cell()
        grid_dir = Path(self.results_dir) / grid.name
        if int(os.environ.get("SLURM_PROCID", "0")) > 0:
            return self._follow(cell, grid_dir)
        return self._lead(cell, grid, grid_dir)

    def _cell(self):
        from ablations.grid import load_grid

        grid = load_grid(Path(self.grid_path), self.overrides)
        for cell in grid.cells:
            if cell.id == self.cell_id:
                return cell, grid
        raise fail_job(f"cell {self.cell_id} is not in {self.grid_path}; submit the grid again")

    def _lead(self, cell, grid, grid_dir: Path) -> str:
        from ablations.claims import runner_name
        from ablations.records import cell_status
        from ablations.requeue import requeued_by_slurm, saved_step
        from ablations.summary import write_summary

        cell_dir = grid_dir / cell.id
        if cell_status(cell_dir) == "done":
            say(f"{cell.id}: already done")
            return "done"
        if self._failed_since_submission(cell_dir):
            say(f"{cell.id}: failed in another job (kept; --retry-failed trains it again)")
            return "failed elsewhere"
        requeued = {"by_slurm": False}

        def claimed() -> None:
            record_training_job(grid_dir, cell.id)
            self.session = {"cell_dir": str(cell_dir), "max_steps": cell.config.train.max_steps,
                            "start_step": saved_step(cell_dir)}
            self.requeueing = False

        def keep_claim(e: BaseException) -> bool:
            """A job that SLURM (or submitit's checkpoint()) requeues keeps the cell: it resumes it."""
            if isinstance(e, SystemExit) and type(e).__name__ != "SIGTERMException":
                requeued["by_slurm"] = self.requeueing  # submitit's exit, after checkpoint() reported
            elif isinstance(e, (KeyboardInterrupt, SystemExit)):
                # KeyboardInterrupt: the fit stopped early (USR1, a signal); SIGTERMException: Lightning's
                # SIGTERM (scontrol requeue, preemption, scancel)
                requeued["by_slurm"] = requeued_by_slurm()
            return requeued["by_slurm"]

        try:
            outcome = runner.train_claimed(cell, grid_dir, Path(self.results_dir) / "_cache", runner_name(),
                                           f"[{runner_name()}]", on_claimed=claimed, keep_claim=keep_claim)
        except (KeyboardInterrupt, SystemExit) as e:
            if isinstance(e, SystemExit) and type(e).__name__ != "SIGTERMException":
                raise
            if requeued["by_slurm"]:
                say(f"{cell.id}: requeued by SLURM before its last step; the job resumes it from its "
                    "checkpoint when it runs again (nothing to do)")
                raise SystemExit(0) from None  # this run ends; SLURM starts the job again
            raise fail_job(f"{cell.id}: stopped before its last step (cancelled or signalled); "
                           "submit the same command again to resume it from its checkpoint") from None
        if outcome == runner.CLAIMED_ELSEWHERE:
            say(f"{cell.id}: claimed by another runner (skipped)")
            return "claimed elsewhere"
        if outcome == runner.DONE_ELSEWHERE:
            return "done"
        write_summary(grid, grid_dir)
        if outcome == runner.FAILED:
            raise fail_job(f"{cell.id}: job failed with its cell ({records.ERROR})")
        return "done"

    def _failed_since_submission(self, cell_dir: Path) -> bool:
        """A failure recorded after this job was submitted is another job's verdict: keep it. An
        older one was there at submission, so the cell is in this job only to be retried."""
        from ablations.records import ERROR

        error = cell_dir / ERROR
        return error.exists() and (not self.retry_failed or error.stat().st_mtime > self.submitted)

    def _follow(self, cell, grid_dir: Path) -> str:
        """Wait until task 0 holds the cell (or gave it up), then train alongside it."""
        from ablations.claims import read_claim, runner_name
        from ablations.records import cell_status
        from ablations.train_cell import follow_cell

        deadline = time.time() + 600
        while time.time() < deadline:
            if cell_status(grid_dir / cell.id) == "done":
                return "done"
            claim = read_claim(grid_dir, cell.id)
            if claim is not None:
                if claim.get("runner") != runner_name():
                    return "claimed elsewhere"
                follow_cell(cell, grid_dir / cell.id, Path(self.results_dir) / "_cache")
                return "followed"
            time.sleep(1)
        raise fail_job(f"{cell.id}: task 0 of this job never claimed the cell")

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption or timeout (USR2): requeue this same job, which resumes
        the cell, unless the cell has used its requeue budget (see ablations.requeue)."""
        import submitit

        from ablations.requeue import UNSIZED_REQUEUES, saved_step, sized_budget, write_requeues
        from ablations.runner import say

        if self.session:
            saved = saved_step(Path(self.session["cell_dir"]))
            if self.budget is None:
                self.budget = sized_budget(self.requeues, self.session["max_steps"], self.session["start_step"], saved)
            budget = UNSIZED_REQUEUES if self.budget is None else self.budget
            if self.requeues >= budget:
                say(f"{self.cell_id}: not requeued: it used its {budget} requeue(s) and is at step {saved} of "
                    f"{self.session['max_steps']}; raise resources.time_min or resources.max_requeues, then "
                    "submit the same command again to resume it")
                raise SystemExit(1)  # out of the fit without a failure record: the cell stays resumable
        self.requeues += 1
        if self.session:
            write_requeues(Path(self.session["cell_dir"]).parent, self.cell_id, self.requeues, self.budget)
        of = UNSIZED_REQUEUES if self.budget is None else self.budget
        say(f"{self.cell_id}: requeued ({self.requeues} of {of} requeues); the job resumes it from its checkpoint "
            "when it runs again (nothing to do)")
        # submitit runs `scontrol requeue` next, and SLURM answers it with SIGTERM to every process of the
        # job: ignored here (and so by scontrol, which inherits it), or scontrol dies mid-call and
        # submitit's error would reach the fit as a failure of the cell. submitit exits right after.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.requeueing = True  # (the copy submitit pickles resets it when it runs again)
        return submitit.helpers.DelayedSubmission(self)


def snapshot(grid_path: Path, grid_dir: Path) -> tuple[Path, Path]:
    """Copy the code (every top-level package beside `ablations`) and the grid file into
    `<grid>/.submitit/snapshots/<time>/`, so jobs run what was submitted. Returns (code root, grid file)."""
    root = Path(__file__).resolve().parents[1]
    dest = records.submitit_dir(grid_dir) / "snapshots" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name != "tests" and (child / "__init__.py").exists():
            shutil.copytree(child, dest / child.name, ignore=ignore)
    grid_copy = dest / "grid" / grid_path.name
    grid_copy.parent.mkdir(parents=True)
    shutil.copy2(grid_path, grid_copy)
    return dest, grid_copy


def slurm_parameters(resources: dict | None) -> dict:
    """submitit parameters from the grid's `resources` section, checked."""
    params: dict = {"timeout_min": DEFAULT_TIME_MIN}
    for key, value in (resources or {}).items():
        if key in FROM_TRAIN:
            raise ConfigError(f"resources.{key}: set {FROM_TRAIN[key]} instead; the launcher asks SLURM for "
                              "one task per device on train.num_nodes nodes")
        if key == "max_requeues":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"resources.max_requeues: expected a whole number >= 0, got {value!r} "
                                  "(leave it out to size it from the cell's own pace)")
            params["max_requeues"] = value
            continue
        if key not in RESOURCE_KEYS:
            from research.errors import did_you_mean

            raise ConfigError(f"resources.{key}: unknown key{did_you_mean(key, [*RESOURCE_KEYS, 'max_requeues'])} "
                              f"(valid: {', '.join(RESOURCE_KEYS)}, max_requeues)")
        if key == "sbatch" and not (isinstance(value, dict) and all(isinstance(k, str) for k in value)):
            raise ConfigError("resources.sbatch: expected a mapping of sbatch options without their dashes, "
                              "e.g. {mail-type: END, exclusive: true}")
        if key == "setup" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError("resources.setup: expected a list of shell commands, e.g. ['module load cuda']")
        if key not in ("sbatch", "setup") and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
            raise ConfigError(f"resources.{key}: expected a number or a name, got {value!r}")
        params[RESOURCE_KEYS[key]] = value
    if "slurm_additional_parameters" in params:
        params["slurm_additional_parameters"] = {k.replace("-", "_"): v
                                                 for k, v in params["slurm_additional_parameters"].items()}
    return params


def task_layout(cell) -> tuple[int, int]:
    """(nodes, tasks per node) for one cell: one SLURM task per device, as Lightning's SLURM
    environment expects (it checks `devices` against `--ntasks-per-node`)."""
    t = cell.config.train
    devices = t.devices if isinstance(t.devices, int) and t.devices > 0 else 1
    return int(t.num_nodes or 1), devices


def sbatch_error(e: BaseException) -> UserError | None:
    """The one line a refused submission deserves: SLURM's reason and the grid key to change."""
    found = re.search(r"sbatch: error: (.+)", str(e))  # submitit puts sbatch's stderr in the message
    if found is None:
        return None
    reason = found.group(1).strip()
    if reason.lower().startswith("batch job submission failed: "):
        reason = reason[len("batch job submission failed: "):]
    fix = next((f for k, f in SBATCH_FIXES.items() if k in reason.lower()), "check the grid's resources section")
    return UserError(f"sbatch refused the job: {reason}; {fix}")


def submit_slurm(grid, grid_path: Path, overrides: dict, results_dir: Path, cluster: str,
                 retry_failed: bool) -> list[tuple[str, object]]:
    """Submit one array task per unfinished cell; returns [(cell id, submitit job)]."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher slurm needs the package 'submitit': pip install submitit") from None
    from ablations.records import cell_status

    grid_dir = results_dir / grid.name
    params = slurm_parameters(grid.resources)
    keep = {"done"} if retry_failed else {"done", "failed"}
    todo = [c for c in grid.cells if cell_status(grid_dir / c.id) not in keep]
    if not todo:
        return []
    code, grid_copy = snapshot(grid_path, grid_dir)
    setup = [f"export PYTHONPATH={shlex.quote(str(code))}${{PYTHONPATH:+:$PYTHONPATH}}",
             *params.pop("slurm_setup", [])]
    max_requeues = params.pop("max_requeues", None)
    layouts: dict[tuple[int, int], list] = {}
    for cell in todo:
        layouts.setdefault(task_layout(cell), []).append(cell)
    submitted = []
    for (nodes, tasks), cells in layouts.items():
        # -P: no current directory on sys.path, so the snapshot (PYTHONPATH) is what jobs import
        # submitit would stop requeueing after its own count of timeouts: CellJob.checkpoint keeps the budget
        kwargs = ({"slurm_python": f"{shlex.quote(sys.executable)} -P", "slurm_max_num_timeout": SUBMITIT_TIMEOUTS}
                  if cluster == "slurm" else {})
        executor = submitit.AutoExecutor(folder=str(records.submitit_dir(grid_dir) / "%j"), cluster=cluster, **kwargs)
        # --kill-on-bad-exit: a rank that fails ends its job's other ranks, which would otherwise wait
        # for it in a collective until the time limit
        executor.update_parameters(name=f"ablations-{grid.name}", nodes=nodes, tasks_per_node=tasks,
                                   slurm_setup=setup, slurm_srun_args=["--kill-on-bad-exit=1"], **params)
        echoed = io.StringIO()  # submitit prints sbatch's stderr before raising it: keep it for the one line
        try:
            with contextlib.redirect_stderr(echoed), executor.batch():
                jobs = [executor.submit(CellJob(str(grid_copy), overrides, str(results_dir), c.id, retry_failed,
                                                max_requeues))
                        for c in cells]
        except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedSubmissionError, OSError) as e:
            error = sbatch_error(e)
            if error is None:
                sys.stderr.write(echoed.getvalue())
                raise
            raise error from None
        submitted += [(c.id, j) for c, j in zip(cells, jobs)]
    record_jobs(grid_dir, submitted)
    return submitted


def record_jobs(grid_dir: Path, submitted: list) -> None:
    """`<grid>/.submitit/jobs.json`: cell -> the job that trains it (the latest submitted, until a job
    claims the cell: `record_training_job`), so `ablations.status` can name a queued job. A cell a
    live runner holds keeps its job: this submission's task for it will find it claimed and skip."""
    from ablations.claims import read_claim

    new = {cell_id: str(job.job_id) for cell_id, job in submitted if read_claim(grid_dir, cell_id) is None}
    _update_jobs(grid_dir, new)


def record_training_job(grid_dir: Path, cell_id: str) -> None:
    """The job that has just claimed `cell_id` is the one to name (not a later array whose task skipped it)."""
    from ablations.claims import slurm_job

    job = slurm_job()
    if job is not None:
        _update_jobs(grid_dir, {cell_id: job})


def _update_jobs(grid_dir: Path, new: dict) -> None:
    """Read, update and write jobs.json under an exclusive lock: jobs of several arrays write it at once."""
    import fcntl

    path = records.jobs_path(grid_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(".jobs.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        jobs = submitted_jobs(grid_dir)
        jobs.update(new)
        atomic_write_text(path, json.dumps(jobs, indent=2) + "\n")


def submitted_jobs(grid_dir: Path) -> dict:
    path = records.jobs_path(grid_dir)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def job_outcome(cell_id: str, job, grid_dir: Path) -> str | None:
    """None when the job finished its cell; else one line: what happened and what to do."""
    from submitit.core.utils import UncompletedJobError

    try:
        job.results()  # every task's: a multi-device cell's job has one per rank
        return None
    except UncompletedJobError:
        from ablations.records import cell_status, read_error

        if cell_status(grid_dir / cell_id) == "failed":
            reason = read_error(grid_dir / cell_id) or f"see {records.ERROR}"
            return f"{cell_id}: failed (job {job.job_id}): {reason.splitlines()[0]}"
        return (f"{cell_id}: job {job.job_id} ended {job.state} before finishing the cell; submit the same "
                f"command again to resume it (log: {job.paths.stderr})")
    except Exception as e:  # noqa: BLE001 - the job raised: its message is the story
        return f"{cell_id}: job {job.job_id} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def wait_for_jobs(submitted: list, grid_dir: Path, say, poll_s: float = 10.0) -> list[str]:
    """Wait for the jobs, reporting cells done/failed/running/queued and an ETA when the counts
    change; returns one line per job that did not finish its cell."""
    t0 = time.time()
    outcomes: dict[int, str | None] = {}
    last = None
    while True:
        for i, (cell_id, job) in enumerate(submitted):
            if i not in outcomes and job.done():
                outcomes[i] = job_outcome(cell_id, job, grid_dir)
        running = sum(job.state == "RUNNING" for i, (_, job) in enumerate(submitted) if i not in outcomes)
        failed = sum(o is not None for o in outcomes.values())
        done = len(outcomes)
        if (done, failed, running) != last:
            elapsed = time.time() - t0
            left = len(submitted) - done
            eta = f", ETA {int(elapsed * left / done)}s" if done and left else ""
            say(f"{done - failed} cell(s) done, {failed} failed, {running} running, {left - running} queued; "
                f"{int(elapsed)}s elapsed{eta}")
            last = (done, failed, running)
        if done == len(submitted):
            return [o for _, o in sorted(outcomes.items()) if o is not None]
        time.sleep(poll_s)

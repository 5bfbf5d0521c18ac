"""Lightning's CSV logger, made to keep the log of a resumed run.

Lightning's `CSVLogger` deletes an existing `metrics.csv` when it starts, so a run resumed from
a checkpoint would keep only the rows written after the interruption (and the warning that says
so is easy to miss). `ResumableCSVLogger` instead keeps the rows of steps before the checkpoint
it resumes from and drops the later ones, which the resumed run logs again: the file ends as an
uninterrupted run's would. It writes where Lightning's would (`<save_dir>/metrics.csv`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from research.io import atomic_write_text


class _KeepingWriter(ExperimentWriter):
    """Lightning's writer, starting from the rows of `metrics.csv` logged before `keep_before_step`."""

    def __init__(self, log_dir: str, keep_before_step: int):
        self.keep_before_step = keep_before_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.exists():
            return
        if self.keep_before_step <= 0:
            path.unlink()
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if r.get("step") and int(float(r["step"])) < self.keep_before_step]
            fields = list(reader.fieldnames or [])
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields)  # Lightning's dialect, so appended rows match
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, out.getvalue())
        self.metrics_keys = fields  # new columns are added to these, and the file rewritten with them


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger(save_dir, name="", version="")` that keeps the rows before `keep_before_step`."""

    def __init__(self, save_dir: Path, keep_before_step: int = 0):
        super().__init__(save_dir, name="", version="")
        self._keep_before_step = keep_before_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self._keep_before_step)
        return self._experiment

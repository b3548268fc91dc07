"""The command line's progress bar of a scan: a :func:`gmsense.batch.scan.run_scan` progress callback."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from gmsense.batch.scan import ScanProgress


class ScanProgressBar:
    """A Rich bar on ``console``: licences finished of all, failures, work units finished, time.

    Pass it as ``progress`` to :func:`~gmsense.batch.scan.run_scan` inside ``with``: the bar
    appears with the first event (once the work is planned) and is closed on leaving the block.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ScanProgressBar:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, event: ScanProgress) -> None:
        units = f"{event.units_done}/{event.units}"
        if self._bar is None or self._task is None:
            columns = (TextColumn("[bold]scan {task.fields[scan]}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("failed {task.fields[failed]}"), TextColumn("units {task.fields[units]}"),
                       TimeElapsedColumn(), TimeRemainingColumn())
            self._bar = Progress(*columns, console=self.console)
            self._bar.start()
            self._task = self._bar.add_task("licences", total=event.total, completed=event.done,
                                            scan=event.scan_id, failed=event.failed, units=units)
            return
        self._bar.update(self._task, completed=event.done, failed=event.failed, units=units)

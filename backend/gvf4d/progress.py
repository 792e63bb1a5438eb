"""Progress reporting and cancellation shared by the pipelines and the service."""
from __future__ import annotations

from typing import Callable, Optional

Progress = Callable[[str, float], None]
ShouldCancel = Callable[[], bool]


class Cancelled(Exception):
    """The job was cancelled between two steps."""


def check_cancel(should_cancel: Optional[ShouldCancel]) -> None:
    if should_cancel is not None and should_cancel():
        raise Cancelled("cancelled")

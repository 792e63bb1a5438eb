"""The error every reader of an input file raises: the file and the problem, in one line."""
from __future__ import annotations


class InputFileError(ValueError):
    """A file that cannot be used: `path`, `problem`, and the message "path: problem"."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

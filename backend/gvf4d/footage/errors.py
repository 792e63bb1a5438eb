class FootageError(ValueError):
    """Footage that cannot be used, with the file and the problem named."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

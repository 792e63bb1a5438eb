from ..errors import InputFileError


class FootageError(InputFileError):
    """Footage that cannot be used, with the file and the problem named."""

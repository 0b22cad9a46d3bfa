"""The one exception type a user sees: the CLI prints it as a single line and exits 2."""


class ZhclsError(Exception):
    """A problem with the user's input (files, flags, data) that deserves a one-line message."""


def data_error(path, line: int | None, problem: str) -> ZhclsError:
    """Error naming file, line number and problem: ``train.txt:17: wrong column count ...``."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return ZhclsError(f"{where}: {problem}")

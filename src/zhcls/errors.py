"""The one exception type a user sees: the CLI prints it as a single line and exits 2."""
import importlib


class ZhclsError(Exception):
    """A problem with the user's input (files, flags, data) that deserves a one-line message.

    ``exit_code``: 2 (nothing was written); a subclass whose command still wrote its main output
    (export's refused INT8) says so with another code.
    """

    exit_code = 2


def data_error(path, line: int | None, problem: str) -> ZhclsError:
    """Error naming file, line number and problem: ``train.txt:17: wrong column count ...``."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return ZhclsError(f"{where}: {problem}")


def require(module: str, extra: str, purpose: str):
    """``import module``, or a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ZhclsError(f"{purpose} needs {module}, which is not installed: pip install 'zhcls[{extra}]'") from None

"""Runs drop-table-entry mutants (:mod:`.tables`): each against the module's unit tests.

mutmut's trampolines switch between versions of a *function*; a table is built once at import,
so each table mutant needs its own import of the module. Each worker therefore keeps a scratch
copy of the packages and tests, writes one mutant's source over the module there, runs the
module's unit tests in a fresh ``pytest`` process (``-x``: the first failure kills it), and
writes the original back. A mutant is killed when the tests fail (or cannot even be collected,
e.g. the module no longer imports), timed out when they run for 10 times the clean run (at least
60 s), and survived when they pass.

The scratch copy is checked first: the clean tests must pass there, and ``sesender`` must be
imported from it (not from the worktree the virtualenv points at), or the run stops.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mutation_testing.tables import TableMutant

__all__ = ["COPIED", "TableRunError", "run_table_mutants"]

#: What a scratch copy holds: the packages, the tests and the pytest configuration.
COPIED = ("actors", "sesender", "tests", "pyproject.toml")
#: Prints where the packages are imported from.
IMPORTED_FROM = "import actors, sesender; print(actors.__file__, sesender.__file__)"
#: pytest options: stop at the first failure, quiet, in file order.
PYTEST_OPTIONS = ("-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "--no-header")


class TableRunError(RuntimeError):
    """The scratch copy cannot be trusted (its clean tests fail, or it is not what is imported)."""


def run_table_mutants(
    root: Path,
    mutants: Sequence[TableMutant],
    tests: Sequence[str],
    *,
    workers: int = 2,
    report: Callable[[TableMutant, str], None] | None = None,
) -> dict[str, str]:
    """Mutant name -> ``killed``, ``timeout`` or ``survived``, for each of ``mutants``."""
    if not mutants:
        return {}
    statuses: dict[str, str] = {}
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="sesender-tables-") as scratch_root:
        scratches = [
            _scratch_copy(root, Path(scratch_root) / f"w{n}")
            for n in range(max(1, min(workers, len(mutants))))
        ]
        clean = _clean_run(scratches[0], tests)
        timeout = max(60.0, 10 * clean)

        def work(index: int) -> None:
            scratch = scratches[index]
            for mutant in mutants[index :: len(scratches)]:
                status = _run_one(scratch, root, mutant, tests, timeout)
                with lock:
                    statuses[mutant.name] = status
                    if report is not None:
                        report(mutant, status)

        with ThreadPoolExecutor(len(scratches)) as pool:
            for future in [pool.submit(work, index) for index in range(len(scratches))]:
                future.result()
    return statuses


def _scratch_copy(root: Path, scratch: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    scratch.mkdir(parents=True)
    for name in COPIED:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, scratch / name, ignore=ignore)
        else:
            shutil.copy2(source, scratch / name)
    return scratch


def _environment(scratch: Path) -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(scratch)
    environment.pop("MUTANT_UNDER_TEST", None)
    return environment


def _pytest(scratch: Path, tests: Sequence[str], timeout: float) -> int | None:
    """pytest's exit status, or None when it ran past ``timeout`` seconds."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "pytest", *PYTEST_OPTIONS, *tests],
            cwd=scratch,
            env=_environment(scratch),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        ).returncode
    except subprocess.TimeoutExpired:
        return None


def _clean_run(scratch: Path, tests: Sequence[str]) -> float:
    """Check the scratch copy; return how long its clean tests took (seconds)."""
    imported = subprocess.run(
        [sys.executable, "-c", IMPORTED_FROM],
        cwd=scratch,
        env=_environment(scratch),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not all(Path(path).resolve().is_relative_to(scratch.resolve()) for path in imported):
        raise TableRunError(f"the scratch copy is not what is imported: {imported}")
    began = time.monotonic()
    status = _pytest(scratch, tests, timeout=600)
    if status != 0:
        raise TableRunError(f"the clean tests {list(tests)} fail in the scratch copy ({status})")
    return time.monotonic() - began


def _run_one(
    scratch: Path, root: Path, mutant: TableMutant, tests: Sequence[str], timeout: float
) -> str:
    target = scratch / mutant.path
    original = (root / mutant.path).read_text("utf-8")
    _write_source(target, mutant.source)
    try:
        status = _pytest(scratch, tests, timeout)
    finally:
        _write_source(target, original)
    if status is None:
        return "timeout"
    if status in (1, 2):  # tests failed; or collection stopped (the module does not import)
        return "killed"
    if status == 0:
        return "survived"
    raise TableRunError(f"pytest exited {status} on {mutant.name}")


def _write_source(target: Path, source: str) -> None:
    """Write ``source`` and drop the module's cached bytecode: a cache is trusted when the
    source's size and mtime (whole seconds) match, which two mutants written within one second
    can share."""
    target.write_text(source, "utf-8")
    for cached in (target.parent / "__pycache__").glob(f"{target.stem}.*.pyc"):
        cached.unlink(missing_ok=True)

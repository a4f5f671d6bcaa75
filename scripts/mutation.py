"""Runs mutmut over each module that carries a guarantee and reports its mutation score.

Why a wrapper: mutmut 3 runs one configuration ([tool.mutmut] in pyproject.toml: which files,
which unit tests). This runs it module by module, restricted to the functions that carry the
module's guarantee ([tool.sesender.mutation.modules]: mutmut name patterns), then scores each
module: killed (or timed out) over all its mutants, less the equivalent ones listed with their
reason in mutation-equivalents.toml. mutmut keeps its results in ./mutants, so a second run only
tests mutants whose function or tests changed.

Usage: scripts/mutation [module ...]; exit status 1 when a module scores under 95 %.
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = ROOT / ".venv" / "bin" / "mutmut"
THRESHOLD = 95.0
KILLED = {"killed", "timeout", "caught by type check"}


def load_modules() -> dict[str, list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    modules: dict[str, list[str]] = config["tool"]["sesender"]["mutation"]["modules"]
    return modules


def load_equivalents() -> dict[str, str]:
    """Mutant name -> why it is equivalent (no test can tell it from the original)."""
    path = ROOT / "mutation-equivalents.toml"
    if not path.exists():
        return {}
    document = tomllib.loads(path.read_text("utf-8"))
    return {name: str(entry["reason"]) for name, entry in document.get("mutants", {}).items()}


def results() -> dict[str, str]:
    """Every mutant mutmut knows of and its status."""
    output = subprocess.run(
        [str(MUTMUT), "results", "--all", "true"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found: dict[str, str] = {}
    for line in output.splitlines():
        name, separator, status = line.strip().rpartition(": ")
        if separator and "__mutmut_" in name:
            found[name] = status
    return found


def score(
    patterns: list[str], statuses: dict[str, str], equivalents: dict[str, str]
) -> tuple[float, int, int, list[str]]:
    """(score in %, killed, counted, survivors) of the mutants matching ``patterns``."""
    mine = {
        name: status
        for name, status in statuses.items()
        if any(fnmatch.fnmatch(name, pattern) for pattern in patterns)
    }
    counted = {name: status for name, status in mine.items() if name not in equivalents}
    killed = sum(1 for status in counted.values() if status in KILLED)
    survivors = sorted(name for name, status in counted.items() if status not in KILLED)
    percent = 100.0 * killed / len(counted) if counted else 100.0
    return percent, killed, len(counted), survivors


def main(argv: list[str]) -> int:
    modules = load_modules()
    chosen = argv or list(modules)
    unknown = [name for name in chosen if name not in modules]
    if unknown:
        print(f"unknown module(s) {unknown}; known: {', '.join(modules)}", file=sys.stderr)
        return 2
    equivalents = load_equivalents()
    started = time.monotonic()
    failed = False
    lines: list[str] = []
    for name in chosen:
        began = time.monotonic()
        run = subprocess.run([str(MUTMUT), "run", *modules[name]], cwd=ROOT, check=False)
        if run.returncode != 0:
            print(f"mutmut failed on {name} (exit {run.returncode})", file=sys.stderr)
            return 2
        # Scored at once: a later run may invalidate these results (mutmut re-tests mutants
        # whose tests changed), and only this module's were just brought up to date.
        statuses = results()
        percent, killed, counted, survivors = score(modules[name], statuses, equivalents)
        failed |= percent < THRESHOLD
        took = time.monotonic() - began
        lines.append(f"{name:<14} {percent:6.1f}% {killed:>7} {counted:>8} {took:>6.0f} s")
        lines.extend(f"    survived: {survivor} ({statuses[survivor]})" for survivor in survivors)
        print(lines[-1 - len(survivors)], flush=True)
    print(f"\n{'module':<14} {'score':>7} {'killed':>7} {'mutants':>8} {'time':>8}")
    print("\n".join(lines))
    print("(equivalent mutants, listed in mutation-equivalents.toml, are not counted)")
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\ntotal time {time.monotonic() - started:.0f} s; load average {' '.join(load)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Runs mutation testing over each module that carries a guarantee and reports its score.

Why a wrapper: mutmut 3 runs one configuration ([tool.mutmut] in pyproject.toml: which files,
which unit tests) and scores it as a whole. This runs mutmut once for the chosen modules,
restricted to the functions that carry each module's guarantee
([tool.sesender.mutation.modules.<name>] ``functions``: mutmut name patterns), with the extra
operators that delete statements and negate conditions (mutation_testing/operators.py, added
to mutmut's own), then scores each module on its own. Module- and class-level tables
(``tables``: files) are outside every function, where mutmut does not reach: their
drop-one-entry mutants are run here, each against the module's unit tests (``tests``;
mutation_testing/table_runner.py). A module's score is killed (or timed out) over all its
mutants of both kinds, less the equivalent ones listed with their reason in
mutation-equivalents.toml. A listed mutant that the tests kill is a stale entry (mutmut numbers a
mutant by its place in its function, so a changed function renumbers them and the entry now names
another mutant): it is counted as killed, reported, and fails the run until the entry is fixed.

mutmut keeps its results in ./mutants, but it re-tests every mutant it is given by name, as
here, so each run is a full run; ./mutants is cleared when the extra operators change (mutant
numbers shift, and old results would be read as other mutants').

Usage: scripts/mutation [--no-mutmut] [--no-tables] [module ...]; exit status 1 when a module
scores under 95 % or the equivalents list has a stale entry.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mutation_testing.table_runner import run_table_mutants  # noqa: E402
from mutation_testing.tables import TableMutant, table_mutants  # noqa: E402

MUTMUT = [sys.executable, "-m", "mutation_testing.mutmut_run"]
MUTMUT_RESULTS = [str(ROOT / ".venv" / "bin" / "mutmut"), "results", "--all", "true"]
THRESHOLD = 95.0
KILLED = {"killed", "timeout", "caught by type check"}
#: What the generated mutants depend on besides the sources: when it changes, ./mutants goes.
OPERATORS_STAMP = ROOT / "mutants" / ".sesender-operators"


@dataclass(frozen=True)
class Module:
    name: str
    functions: list[str]
    tests: list[str]
    tables: list[str] = field(default_factory=list)


@dataclass
class Score:
    mutants: int = 0
    killed: int = 0
    equivalent: int = 0
    survivors: list[str] = field(default_factory=list)
    #: listed as equivalent, yet killed: mutmut numbers a mutant by its place in its function,
    #: so once the function changes the entry names another mutant. Counted as killed, reported.
    stale: list[str] = field(default_factory=list)

    @property
    def counted(self) -> int:
        return self.mutants - self.equivalent

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.counted if self.counted else 100.0

    def add(self, statuses: dict[str, str], equivalents: dict[str, str]) -> None:
        for name, status in sorted(statuses.items()):
            self.mutants += 1
            if name in equivalents and status in KILLED:
                self.killed += 1
                self.stale.append(name)
            elif name in equivalents:
                self.equivalent += 1
            elif status in KILLED:
                self.killed += 1
            else:
                self.survivors.append(f"{name} ({status})")


def load_modules() -> dict[str, Module]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    modules = config["tool"]["sesender"]["mutation"]["modules"]
    return {
        name: Module(
            name=name,
            functions=list(entry["functions"]),
            tests=list(entry["tests"]),
            tables=list(entry.get("tables", [])),
        )
        for name, entry in modules.items()
    }


def load_equivalents() -> dict[str, str]:
    """Mutant name -> why it is equivalent (no test can tell it from the original)."""
    path = ROOT / "mutation-equivalents.toml"
    if not path.exists():
        return {}
    document = tomllib.loads(path.read_text("utf-8"))
    return {name: str(entry["reason"]) for name, entry in document.get("mutants", {}).items()}


def clear_stale_mutants() -> None:
    """Mutant numbers depend on the operators: results kept under other operators would be
    read as another mutant's."""
    sources = [ROOT / "mutation_testing" / name for name in ("operators.py", "mutmut_run.py")]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    if OPERATORS_STAMP.exists() and OPERATORS_STAMP.read_text() == digest:
        return
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    OPERATORS_STAMP.parent.mkdir()
    OPERATORS_STAMP.write_text(digest)


def mutmut_statuses(patterns: list[str]) -> dict[str, str]:
    """Every mutant of ``patterns`` mutmut knows of, and its status."""
    output = subprocess.run(
        MUTMUT_RESULTS, cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    found: dict[str, str] = {}
    for line in output.splitlines():
        name, separator, status = line.strip().rpartition(": ")
        if (
            separator
            and "__mutmut_" in name
            and any(fnmatch.fnmatch(name, pattern) for pattern in patterns)
        ):
            found[name] = status
    return found


def module_table_mutants(module: Module) -> list[TableMutant]:
    return [
        mutant
        for path in module.tables
        for mutant in table_mutants(path, (ROOT / path).read_text("utf-8"))
    ]


def report_table_mutant(mutant: TableMutant, status: str) -> None:
    print(f"    table {mutant.name} ({mutant.entry}): {status}", flush=True)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def mutant_seconds(names: set[str]) -> float:
    """The seconds mutmut spent testing ``names`` (its own record, per mutant)."""
    total = 0.0
    for meta in (ROOT / "mutants").rglob("*.py.meta"):
        durations = json.loads(meta.read_text("utf-8")).get("durations_by_key", {})
        total += sum(seconds for name, seconds in durations.items() if name in names)
    return total


def main(argv: list[str]) -> int:
    # --no-mutmut: score mutmut's stored results without testing again (e.g. after re-testing
    # only the survivors by name); --no-tables: leave the table mutants out of this run.
    run_mutmut = "--no-mutmut" not in argv
    run_tables = "--no-tables" not in argv
    argv = [arg for arg in argv if arg not in ("--no-mutmut", "--no-tables")]
    modules = load_modules()
    chosen = argv or list(modules)
    unknown = [name for name in chosen if name not in modules]
    if unknown:
        print(f"unknown module(s) {unknown}; known: {', '.join(modules)}", file=sys.stderr)
        return 2
    equivalents = load_equivalents()
    clear_stale_mutants()
    started, cpu_started = time.monotonic(), children_cpu()
    # One mutmut run for every chosen module: mutmut runs the clean tests, a forced failure and
    # its bookkeeping once per run, which cost as much as a small module's mutants.
    patterns = [pattern for name in chosen for pattern in modules[name].functions]
    log = ROOT / "mutants" / "mutmut.log"
    if run_mutmut:
        with log.open("w") as output:
            run = subprocess.run(
                [*MUTMUT, "run", *patterns],
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if run.returncode != 0:
            print(f"mutmut failed (exit {run.returncode}); see {log}", file=sys.stderr)
            return 2
    mutmut_took, mutmut_cpu = time.monotonic() - started, children_cpu() - cpu_started
    print(f"mutmut: {mutmut_took:.0f} s, CPU {mutmut_cpu:.0f} s", flush=True)
    failed = False
    lines: list[str] = []
    for name in chosen:
        module = modules[name]
        score = Score()
        statuses = mutmut_statuses(module.functions)
        score.add(statuses, equivalents)
        testing = mutant_seconds(set(statuses))
        began, cpu_began = time.monotonic(), children_cpu()
        tables = module_table_mutants(module) if run_tables else []
        score.add(
            run_table_mutants(ROOT, tables, module.tests, report=report_table_mutant),
            equivalents,
        )
        failed |= score.percent < THRESHOLD or bool(score.stale)
        took, cpu = time.monotonic() - began, children_cpu() - cpu_began
        verdict = "PASS" if score.percent >= THRESHOLD and not score.stale else "FAIL"
        lines.append(
            f"{name:<14} {score.mutants:>7} {len(tables):>6} {score.killed:>6}"
            f" {len(score.survivors):>8} {score.equivalent:>5} {score.percent:6.1f}% {verdict}"
            f" {testing:>7.0f} s {took:>5.0f} s {cpu:>5.0f} s"
        )
        lines.extend(f"    survived: {survivor}" for survivor in score.survivors)
        lines.extend(
            f"    stale entry in mutation-equivalents.toml (the tests kill this mutant): {name}"
            for name in score.stale
        )
        print("\n".join(lines[-1 - len(score.survivors) - len(score.stale) :]), flush=True)
    print(
        f"\n{'module':<14} {'mutants':>7} {'tables':>6} {'killed':>6} {'survived':>8}"
        f" {'equiv':>5} {'score':>7} {'aim':>4} {'mutmut':>9} {'tables':>7} {'cpu':>7}"
    )
    print("\n".join(lines))
    print(
        f"(aim: >= {THRESHOLD:g} % on every module. Equivalent mutants, listed in"
        " mutation-equivalents.toml, are not counted. 'tables': drop-table-entry mutants, in"
        " 'mutants' too. Times: 'mutmut' is the seconds mutmut's workers spent testing the"
        " module's mutants (summed over its parallel workers, so more than wall time); 'tables'"
        " the wall time of the table mutants, 'cpu' their CPU time.)"
    )
    total = time.monotonic() - started
    load = Path("/proc/loadavg").read_text().split()[:3]
    timed = run_mutmut and run_tables
    too_slow = timed and total >= 900
    aim = ("PASS" if total < 900 else "FAIL") if timed else "not timed: a partial run"
    print(
        f"\ntotal time {total:.0f} s (aim: < 900 s: {aim}),"
        f" CPU {children_cpu() - cpu_started:.0f} s; load average {' '.join(load)}"
    )
    print("RESULT:", "FAIL" if failed or too_slow else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

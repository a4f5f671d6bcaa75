"""``mutmut`` with the extra operators of :mod:`.operators`: ``python -m
mutation_testing.mutmut_run run [names]`` takes the same arguments as the ``mutmut`` command.

The operators are added before mutmut's entry point is imported and run, in this process: mutmut
generates mutants in worker processes it forks from here, which inherit them, and everything
after generation (trampolines, test selection, caching, results) is mutmut's own.
"""

from __future__ import annotations

from mutation_testing.operators import install


def main() -> None:
    install()
    from mutmut.__main__ import cli

    cli()


if __name__ == "__main__":
    main()

"""Mutation testing helpers for ``scripts/mutation`` (a development tool, not shipped).

mutmut 3 mutates operators, constants and calls inside functions. The issue's measurement also
deleted statements, negated conditions and dropped entries of tables; :mod:`.operators` adds the
first two to mutmut's own operators (so mutmut's trampolines, test selection, caching and report
apply to them), and :mod:`.tables` makes and runs the third, which mutmut cannot (tables live at
module and class level, outside every function).
"""

"""Reading the command lines the steps are given (the same on both backends)."""

from __future__ import annotations


def option(args, name: str) -> str:
    """The value of option ``name`` in a command line: ``--name=value`` (how the steps pass their options) or
    ``--name value`` (spark-submit's own)."""
    args = list(args)
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    if name in args:
        values.append(args[args.index(name) + 1])
    assert len(values) == 1, f"{name} appears {len(values)} times in {args}"
    return values[0]

"""Planning: one explicit plan per run (training or scoring), the storage layout it writes under,
the listing of input images, and the object-store paths every task reads and writes through."""


class PlanError(ValueError):
    """A param or input that makes the run impossible; the message names it."""

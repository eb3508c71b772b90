"""Compute: the backend-neutral Spark steps, artifact staging, the job archive, failure diagnosis,
and one sub-package per backend (``local``: a Spark standalone cluster on this machine; ``emr``)
behind one contract (``backends.compute_steps``)."""

"""Publishing: the run's report read back from the object store, the quality gate, and the latest
successful model (``latest.json``) that predictions and the scoring DAG use."""

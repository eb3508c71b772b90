"""Publishing: the run's report read back from the object store, the quality gate, the latest
successful model (``latest.json``) that predictions and the scoring DAG use, and the resolution of the
model a prediction names."""

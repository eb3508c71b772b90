"""The local backend: a Spark standalone cluster started and stopped by the run, its step operator,
and the Java runtime it needs."""

"""SQLite connection arguments for the test Airflow server (``[database] sql_alchemy_connect_args``).

SQLite lets one writer in at a time, and the scheduler, DAG processor, triggerer and API server of
`airflow standalone` all write. Python's sqlite3 gives up after 5 s by default (the API answered
HTTP 500 "Database error" when a run started as the server came up); on this loaded 2-core machine
the writers wait up to a minute instead. Airflow imports this module by name: it imports nothing.
"""

CONNECT_ARGS = {"timeout": 60}

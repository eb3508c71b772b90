"""Parse-time wiring: the deployment's settings, the trigger forms' params, the model asset.

The DAG files import these at parse time, so nothing here does I/O or imports a heavy library.
"""

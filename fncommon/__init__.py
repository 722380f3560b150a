"""What every function shares: settings read from the environment (`env_settings`), JSON log
lines (`json_log`), the artifact gate (`verified_file`), and for the CloudEvents functions the
request limits (`http_guard`), the outcome vocabulary (`cloudevent_io`) and the metrics port
(`metrics_server`).

This directory is the one source. Each function is built from its own directory alone (func's
builders copy only it), so `make vendor` (scripts/vendor.py) writes a copy of this package into
every function directory, marked as generated; tests/test_function_packaging.py fails when a copy
differs from this source. One package name in every function means one `SettingsError` and one
`BadEvent` type in any process, whichever function directory it was imported from. Every function
gets the whole package and imports what it uses; a module's third-party imports (cloudevents,
orjson, prometheus-client) are dependencies of the functions that import it.
"""

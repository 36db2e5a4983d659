"""Falconet's Python SDK: clients for the Falco-compatible alert API over mTLS or the UNIX socket."""

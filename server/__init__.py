"""Falconet's daemon: sensor -> engine -> alert hub -> outputs, and the gRPC services that stream alerts."""

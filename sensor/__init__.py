"""Falconet's eBPF sensor: real syscalls from the kernel in, enriched `falconet.rules.event.Event`s out."""

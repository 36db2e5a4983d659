"""The ptrace driver: the same records the eBPF probe emits, made by a user-space tracer, for hosts and
containers where no BPF program may be loaded (docs/ptrace.md).

kernel.py holds the ptrace/process_vm_readv calls and the x86-64 register layout, seccomp.py the filter that
keeps untraced syscalls from stopping the workload, launch.py the launcher that installs it, procfs.py the
task and exec facts the probe reads from kernel structures, records.py the record encoding, tracer.py the loop.
"""

// No-op probes for bench/sensor_overhead.py: the cost of attaching alone, without any work in the probe.
//   default:        raw_syscalls:sys_enter only (the reference floor the issue names)
//   -DSENSOR_POINTS: every point sensor/probe.c attaches (the raw tracepoint sys_exit, the syscall tracepoints
//                    sys_enter_unshare/setns/execveat, sched fork and exit)
#ifndef SENSOR_POINTS
TRACEPOINT_PROBE(raw_syscalls, sys_enter) { return 0; }
#else
RAW_TRACEPOINT_PROBE(sys_exit) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_unshare) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_setns) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_execveat) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_fork) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_exit) { return 0; }
#endif

// No-op probes for bench/sensor_overhead.py: the cost of attaching alone, without any work in the probe.
//   default:        raw_syscalls:sys_enter only (the reference floor the issue names)
//   -DSENSOR_POINTS: every tracepoint sensor/probe.c attaches (sys_enter, sys_exit, sched fork and exit)
TRACEPOINT_PROBE(raw_syscalls, sys_enter) { return 0; }
#ifdef SENSOR_POINTS
TRACEPOINT_PROBE(raw_syscalls, sys_exit) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_fork) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_exit) { return 0; }
#endif

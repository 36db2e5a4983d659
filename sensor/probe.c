// Falconet's BPF program: one record per syscall (arguments + result), plus process lifecycle records.
//
// Compiled by bcc at start with parameters as -D cflags (sensor/sensor.py builds them; `falconet capture
// --ebpf` prints the final program with its flags). Kernel struct layouts are NOT taken from headers (they
// belong to another kernel): every kernel field is read with bpf_probe_read_kernel at an offset from the
// running kernel's BTF (OFF_* macros, sensor/btf.py).
//
// Design:
// * One record per syscall, built at sys_exit: a raw tracepoint whose context holds the task's saved user
//   registers (ctx->args[0], a struct pt_regs) and the result (ctx->args[1]). The syscall id and its six
//   arguments are read from those registers (REG_NR, REG_ARG0..5: offsets from the running kernel's BTF of the
//   registers sensor/syscalls.py names for this architecture), so no enter/exit pairing map is needed. The
//   first thing sys_exit does is one array lookup in `sysconf` (syscall id -> on/off and how to read its
//   arguments), so syscalls nobody needs cost about the same as a no-op probe; user space flips entries at
//   run time (set_syscalls) without recompiling. Strings (paths), sockaddrs and data buffers are read from user
//   memory at exit, where the buffers are still the caller's.
// * Seccomp runs before the sys_enter tracepoint, so a syscall a seccomp filter denies reaches only sys_exit:
//   it is recorded like any other, with its error result.
// * Work at a syscall's enter is done only for the few syscalls whose record needs a value their exit can no
//   longer read, on those syscalls' own tracepoints (syscalls:sys_enter_unshare/setns/execveat; the set is
//   SAVED_AT_ENTER, which sensor.py checks against them): the credentials from before unshare/setns change them
//   (probe_creds.h) and execveat's dirfd, flags and path, which a successful exec erases with the registers.
//   They wait in task storage (per task, no global hash) for the syscall's exit.
// * An exec's exit runs in tail programs (`tails`, probe_exec.h), so sys_exit stays within the verifier's
//   budget: exec_args (an EXECARGS record: filename, argv and environment; after a successful exec from the new
//   image's memory, as its stack holds them, otherwise from the argument registers), exec_env (the environment
//   past MAX_ENVP entries, a REC_EXECENV record, when user space asks through `env_more`) and exec_exit (the
//   exec's own record with the new image's path, inode and cgroups). User space joins the three by tgid.
// * A data buffer (read/recv/send: Falco's evt.buffer) is copied up to `snaplen` bytes, only for syscalls user
//   space marks (sysconf.data). Credentials of unshare/setns are the ones from before the call (probe_creds.h).
// * sched_process_fork / sched_process_exit keep user space's process table right (thread vs process from
//   the clone flags the parent's registers still hold at the fork).
// * Records are built in a per-CPU scratch buffer and copied with bpf_ringbuf_output at their real length;
//   a failed output is counted per CPU in `counters` (user space reports it as kernel drops). Which record
//   wakes the consumer: probe_wake.h.
// * The daemon's own process (and any pid user space puts in `excluded`) is filtered here.
// * What no loaded rule can match stays here: opens by their path (probe_openfilter.h), syscalls without a
//   state role by their result, the caller's uid and comm (probe_eventgate.h); both are maps user space
//   fills from the rules' analysis.
//
// The record layout is `struct record_hdr` below; sensor/record.py decodes it, and a test checks the two
// agree field by field. Local includes (probe_*.h, one concern each) are inlined by sensor.py's
// probe_source(), so the program bcc compiles and `capture --ebpf` prints is one text.

#include <uapi/linux/ptrace.h>

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 2048
#endif
#define NR_SYSCALLS_MAX 512
#define STR_MAX 4096          // one path or one argv/env element, bytes incl. NUL
#define PAYLOAD_MASK 16383    // payload offsets are masked with this (the verifier needs a bound)
#define SOCK_MAX 128          // sizeof(struct sockaddr_storage)
#define BLOB_MAX 64
#define DATA_MAX 4096         // the largest snaplen (bytes of a data buffer copied per syscall)
#define DATA_MASK 8191        // a data copy's length is masked with this (the verifier needs a bound)
#define MAX_ARGV 32
#define MAX_ENVP 48
#define ARGS_AREA 4096        // argv (and env) beyond this many bytes is truncated
#define NO_ARG 0xff
#define LEN_IS_PTR 0x80       // sysconf.socklen: the length argument is a pointer to the length (accept)
#ifndef CGROUP_V1_SUBSYS
#define CGROUP_V1_SUBSYS -1   // css_set.subsys index of the v1 controller whose path is read (-1: none)
#endif

enum record_kind { REC_SYSCALL = 1, REC_EXECARGS = 2, REC_FORK = 3, REC_EXIT = 4, REC_EXECENV = 5 };
// REC_EXECARGS args[0]: the record's payload was lost (ring buffer full); it stands in so user space knows
#define EXECARGS_LOST 1
// CNT_UNUSED_1 counted failed enter/exit pairings until records were built at exit alone; kept so the indices
// user space reads stay put.
enum counter { CNT_RINGBUF_DROPS = 0, CNT_UNUSED_1 = 1, CNT_EMITTED = 2, CNT_PATH_FILTERED = 3, CNT_GATED = 4,
               CNT_MAX = 5 };
// payload segments, in this order, lengths in record_hdr.len[]
enum segment { SEG_STR0 = 0, SEG_STR1 = 1, SEG_SOCK = 2, SEG_BLOB = 3, SEG_EXTRA = 4, SEG_EXTRA2 = 5, NSEG = 6 };

struct record_hdr {
    u64 ts;              // bpf_ktime_get_ns (CLOCK_MONOTONIC)
    u32 kind;            // enum record_kind
    u32 size;            // header + payload bytes
    u32 tgid;
    u32 tid;
    u32 ppid;            // real_parent->tgid
    u32 loginuid;        // (u32)-1 when never logged in
    u32 uid;
    u32 gid;
    u32 euid;
    u32 egid;
    u64 cap_inheritable;
    u64 cap_permitted;
    u64 cap_effective;
    u32 tty;             // new_encode_dev(MKDEV(major, minor_start + index)), 0 without a terminal
    u32 sid;
    u32 pgid;
    u32 cpu;
    u32 vtid;            // tid, tgid and pgid as the task's own pid namespace numbers them (0: pgid outside it)
    u32 vpid;
    u32 vpgid;
    u32 pidns_level;     // 0 for the initial pid namespace
    u64 pidns_init_ts;   // start_time (CLOCK_MONOTONIC) of the init of the task's pid namespace; 0 = not read
    s64 nr;              // syscall id (REC_SYSCALL, REC_EXECARGS), -1 otherwise
    s64 res;             // syscall return value
    u64 args[6];         // syscall arguments; REC_FORK: child tid, clone flags; REC_EXIT: group_dead
    char comm[16];
    u16 len[6];          // payload segment lengths (enum segment)
    u32 pad;
};

// The saved user registers sys_exit reads: the span REGS_LO..REGS_HI of struct pt_regs that holds the syscall id
// and its arguments (on x86-64 r10..orig_ax, 72 bytes), as u64 words; REGW(REG_X) is register X's word.
#define REGS_WORDS ((REGS_HI - REGS_LO) / 8)
#define REGW(off) (((off) - REGS_LO) / 8)

// A key of the event gates' value set (probe_eventgate.h).
struct gate_key {
    u32 nr;
    u32 kind;      // GATE_UID (data: the uid, little-endian), GATE_COMM (data: the comm, NUL-padded),
                   // GATE_ARG (data: the argument's value, 8 bytes little-endian)
    u8 data[16];
};

// The syscall as sys_exit read it, for the exec tails, which rebuild the header after EXECARGS went out.
struct sysregs {
    s64 nr;
    s64 res;
    u64 args[6];
};

struct buf {
    struct record_hdr hdr;
    char payload[PAYLOAD_MASK + 1 + DATA_MASK + 1];  // room for a masked offset plus the longest read
    u32 walk_used;   // working state of loops the verifier must not follow per value (never emitted)
    u32 walk_done;
    u32 walk_whole;
    u32 walk_pad;
    struct sysregs sys;
    struct gate_key gkey;  // the event gate's map key (probe_eventgate.h), built here rather than on the stack
};

struct sysconf {
    u8 on;           // track at enter and emit at exit
    u8 str0;         // argument index of a user string (path), NO_ARG for none
    u8 str1;
    u8 sock;         // argument index of a user sockaddr
    u8 socklen;      // argument index of its length (| LEN_IS_PTR when it is a pointer to the length)
    u8 blob;         // argument index of a fixed-size user struct (open_how, int[2] of pipe, ...)
    u8 bloblen;
    u8 exec;         // 1 execve, 2 execveat: read filename/argv/env at enter
    u8 sockfd;       // argument index of a socket fd (SOCKFD_RES: the result) whose kernel socket to read
    u8 pathfilter;   // str0 is an opened path the open-prefix filter applies to; where its flags are:
                     // 1 argument 1 (open), 2 argument 2 (openat), 3 unknown (openat2), 4 creat
    u8 fdeffect;     // FD_CREATES_RES: the result is a new fd; FD_CREATES_PAIR: int[2] at the blob argument;
                     // FD_CLOSES: argument 0 is closed
    u8 credsbefore;  // the record carries the credentials the task had BEFORE the syscall (unshare, setns:
                     // they give the task a new user namespace's full capabilities, which rules must not see)
    u8 data;         // argument index of the data buffer (read/recv/send families), NO_ARG when not copied:
                     // its first min(result, snaplen) bytes go to SEG_STR1 (Falco's evt.buffer)
    u8 forks;        // fork/vfork/clone/clone3: their exit in the CHILD (result 0) is not a record (the
                     // parent's record and REC_FORK say everything about it)
    u8 gated;        // the syscall's event gate applies (probe_eventgate.h): it has no state role, and the
                     // rules bound its events
};

#define SOCKFD_RES 0xfe
#define FD_CREATES_RES 1
#define FD_CREATES_PAIR 2
#define FD_CLOSES 3

// The kernel's view of a socket (SEG_EXTRA of socket syscalls); ports in host order.
struct sockinfo {
    u16 family;
    u16 type;
    u16 protocol;
    u16 lport;
    u16 rport;
    u16 pad[3];
    u8 laddr[16];
    u8 raddr[16];
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_ARRAY(sysconf, struct sysconf, NR_SYSCALLS_MAX);
BPF_HASH(excluded, u32, u8, 64);
BPF_PERCPU_ARRAY(scratch, struct buf, 1);
BPF_PERCPU_ARRAY(counters, u64, CNT_MAX);
BPF_PROG_ARRAY(tails, 3);
BPF_ARRAY(snaplen, u32, 1);  // bytes of a data buffer copied (Falco's snaplen); user space sets it
#define TAIL_EXEC_EXIT 0
#define TAIL_EXEC_ENV 1
#define TAIL_EXEC_ARGS 2
BPF_ARRAY(env_more, u32, 1);  // environment entries to read beyond MAX_ENVP (0: none); user space sets it


// Stage timing for bench/sensor_kprof.py (compiled in only with -DKPROF, never by the sensor): per-CPU sums
// of ns and counts per slot, for the one process `kprof_tgid` names. Each mark costs about one clock read,
// which the bench measures (a calibration slot of two marks back to back) and subtracts.
#ifdef KPROF
#define KP_SLOTS 32
BPF_PERCPU_ARRAY(kprof, u64, KP_SLOTS * 2 + 1);
BPF_ARRAY(kprof_tgid, u32, 1);
static __always_inline void kp_begin(void) {
    int z = KP_SLOTS * 2, zero = 0;
    u64 *t0 = kprof.lookup(&z);
    u32 *want = kprof_tgid.lookup(&zero);
    if (!t0 || !want)
        return;
    *t0 = (*want && *want == bpf_get_current_pid_tgid() >> 32) ? bpf_ktime_get_ns() : 0;
}
static __always_inline void kp_mark(int slot) {
    int z = KP_SLOTS * 2;
    u64 *t0 = kprof.lookup(&z);
    if (!t0 || !*t0)
        return;
    u64 now = bpf_ktime_get_ns();
    int k = (slot & (KP_SLOTS - 1)) * 2;
    u64 *sum = kprof.lookup(&k);
    if (sum)
        *sum += now - *t0;
    k++;
    u64 *cnt = kprof.lookup(&k);
    if (cnt)
        (*cnt)++;
    *t0 = bpf_ktime_get_ns();
}
#define KP_BEGIN() kp_begin()
#define KP(slot) kp_mark(slot)
#else
#define KP_BEGIN()
#define KP(slot)
#endif

static __always_inline void count(int which) {
    u64 *c = counters.lookup(&which);
    if (c)
        (*c)++;
}

static __always_inline u64 read_ptr(u64 addr) {
    u64 v = 0;
    if (addr)
        bpf_probe_read_kernel(&v, sizeof(v), (void *)addr);
    return v;
}

static __always_inline u32 read_u32(u64 addr) {
    u32 v = 0;
    if (addr)
        bpf_probe_read_kernel(&v, sizeof(v), (void *)addr);
    return v;
}

// Loads through a BTF-typed kernel pointer (bpf_get_current_task_btf(), bpf_task_pt_regs() and the struct
// pointers loaded from them): the verifier checks the offset against the running kernel's BTF and turns the load
// into a fault-safe direct load (a fault reads 0), about 1 ns where a bpf_probe_read_kernel call costs about 5.
// Written as assembly so that bcc's rewriter, which turns a C dereference of a kernel pointer into a
// bpf_probe_read, leaves it alone; the offsets are still the OFF_* values from BTF (sensor/btf.py), and the
// verifier rejects the program if one does not name a field of that type.
#define BTF_LOAD64(dst, ptr, off) asm volatile("%0 = *(u64 *)(%1 + %2)" : "=r"(dst) : "r"(ptr), "i"(off))
#define BTF_LOAD32(dst, ptr, off) asm volatile("%0 = *(u32 *)(%1 + %2)" : "=r"(dst) : "r"(ptr), "i"(off))
#define BTF_LOAD16(dst, ptr, off) asm volatile("%0 = *(u16 *)(%1 + %2)" : "=r"(dst) : "r"(ptr), "i"(off))
#define BTF_OFF_OK(off) ((off) >= 0 && (off) < 32768)  // a load's offset is a signed 16-bit field

// struct pid -> its number in the initial namespace (numbers[0].nr)
static __always_inline u32 pid_nr0(u64 pid) {
    return pid ? read_u32(pid + OFF_PID_NUMBERS + OFF_UPID_NR) : 0;
}

// struct pid -> its number at namespace `level` (0 when the pid is not visible there)
static __always_inline u32 pid_nr_at(u64 pid, u32 level) {
    if (!pid || read_u32(pid + OFF_PID_LEVEL) < level)
        return 0;
    return read_u32(pid + OFF_PID_NUMBERS + (level & 63) * SIZEOF_UPID + OFF_UPID_NR);
}

// The pid-namespace view of the task (the h->tgid/tid/pgid of the initial namespace are already set). In the
// initial namespace the numbers are the same and cost two reads; inside a container a few more.
static __always_inline void fill_pidns(struct record_hdr *h, u64 task, u64 pgid_pid) {
    u64 tpid = read_ptr(task + OFF_TASK_THREAD_PID);
    u32 level = tpid ? read_u32(tpid + OFF_PID_LEVEL) : 0;
    h->pidns_level = level;
    h->pidns_init_ts = 0;
    if (level == 0) {
        h->vtid = h->tid;
        h->vpid = h->tgid;
        h->vpgid = h->pgid;
        // The host's init never changes: user space remembers it from the (rarer) non-syscall records.
        if (h->kind == REC_SYSCALL)
            return;
    } else {
        h->vtid = pid_nr_at(tpid, level);
        h->vpid = pid_nr_at(read_ptr(read_ptr(task + OFF_TASK_GROUP_LEADER) + OFF_TASK_THREAD_PID), level);
        h->vpgid = pid_nr_at(pgid_pid, level);
    }
#if OFF_UPID_NS >= 0 && OFF_PIDNS_CHILD_REAPER >= 0 && OFF_TASK_START_TIME >= 0
    u64 ns = read_ptr(tpid + OFF_PID_NUMBERS + (level & 63) * SIZEOF_UPID + OFF_UPID_NS);
    u64 reaper = ns ? read_ptr(ns + OFF_PIDNS_CHILD_REAPER) : 0;
    if (reaper)
        bpf_probe_read_kernel(&h->pidns_init_ts, 8, (void *)(reaper + OFF_TASK_START_TIME));
#endif
}

// A record about to be built: no syscall, no payload yet (fill_task adds the task; it is the costly part, so
// sys_exit calls it only once it knows the record will be emitted).
static __always_inline void reset_hdr(struct record_hdr *h) {
    h->nr = -1;
    h->res = 0;
    for (int i = 0; i < NSEG; i++)
        h->len[i] = 0;
    for (int i = 0; i < 6; i++)
        h->args[i] = 0;
}

// Everything about the calling task that rules read, straight from the kernel at this moment.
static __always_inline void fill_task(struct record_hdr *h, u32 kind) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u64 task = (u64)bpf_get_current_task();
    h->ts = bpf_ktime_get_ns();
    h->kind = kind;
    h->tgid = pid_tgid >> 32;
    h->tid = (u32)pid_tgid;
    h->cpu = bpf_get_smp_processor_id();
    bpf_get_current_comm(&h->comm, sizeof(h->comm));

    h->ppid = read_u32(read_ptr(task + OFF_TASK_REAL_PARENT) + OFF_TASK_TGID);
#if OFF_TASK_LOGINUID >= 0
    h->loginuid = read_u32(task + OFF_TASK_LOGINUID);
#else
    h->loginuid = 0xffffffff;
#endif
    // One read of the cred prefix instead of seven.
    u8 cred[CRED_READ_LEN] = {};
    u64 credp = read_ptr(task + OFF_TASK_CRED);
    if (credp)
        bpf_probe_read_kernel(cred, sizeof(cred), (void *)credp);
    h->uid = *(u32 *)&cred[OFF_CRED_UID];
    h->gid = *(u32 *)&cred[OFF_CRED_GID];
    h->euid = *(u32 *)&cred[OFF_CRED_EUID];
    h->egid = *(u32 *)&cred[OFF_CRED_EGID];
    h->cap_inheritable = *(u64 *)&cred[OFF_CRED_CAP_INHERITABLE];
    h->cap_permitted = *(u64 *)&cred[OFF_CRED_CAP_PERMITTED];
    h->cap_effective = *(u64 *)&cred[OFF_CRED_CAP_EFFECTIVE];

    u64 signal = read_ptr(task + OFF_TASK_SIGNAL);
    h->tty = 0;
    h->sid = 0;
    h->pgid = 0;
    u64 pgid_pid = 0;
    if (signal) {
        u64 tty = read_ptr(signal + OFF_SIGNAL_TTY);
        if (tty) {
            u32 index = read_u32(tty + OFF_TTY_INDEX);
            u64 driver = read_ptr(tty + OFF_TTY_DRIVER);
            u32 major = read_u32(driver + OFF_TTY_DRIVER_MAJOR);
            u32 minor = read_u32(driver + OFF_TTY_DRIVER_MINOR_START) + index;
            h->tty = (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12);
        }
        // signal->pids[PIDTYPE_PGID = 2], [PIDTYPE_SID = 3]
        pgid_pid = read_ptr(signal + OFF_SIGNAL_PIDS + 2 * 8);
        h->pgid = pid_nr0(pgid_pid);
        h->sid = pid_nr0(read_ptr(signal + OFF_SIGNAL_PIDS + 3 * 8));
    }
    fill_pidns(h, task, pgid_pid);
}

static __always_inline struct buf *get_buf(void) {
    int zero = 0;
    return scratch.lookup(&zero);
}

#include "probe_wake.h"

// Returns whether the record went out (a ring buffer too full to take it counts a drop).
static __always_inline int emit(struct buf *b, u32 payload_len) {
    u32 size = sizeof(struct record_hdr) + (payload_len & PAYLOAD_MASK);
    b->hdr.size = size;
    if (size > sizeof(struct buf))
        return 0;
    if (events.ringbuf_output(b, size, 0) != 0) {  // flags: probe_wake.h
        count(CNT_RINGBUF_DROPS);
        return 0;
    }
    count(CNT_EMITTED);
    return 1;
}

// Appends a user string at `off`; returns the bytes written (incl. NUL), 0 when unreadable.
static __always_inline u32 put_user_str(struct buf *b, u32 off, u64 uptr) {
    if (!uptr)
        return 0;
    int n = bpf_probe_read_user_str(&b->payload[off & PAYLOAD_MASK], STR_MAX, (void *)uptr);
    return n > 0 ? (u32)n : 0;
}

static __always_inline u32 put_user_bytes(struct buf *b, u32 off, u64 uptr, u32 len, u32 max) {
    if (!uptr || len == 0)
        return 0;
    if (len > max)
        len = max;
    len &= (SOCK_MAX * 2 - 1);
    if (bpf_probe_read_user(&b->payload[off & PAYLOAD_MASK], len, (void *)uptr) != 0)
        return 0;
    return len;
}

static __always_inline u64 arg_at(u64 *args, u8 idx) {
    return idx < 6 ? args[idx] : 0;
}

#if OFF_TASK_FILES >= 0 && OFF_SOCKET_SK >= 0 && OFF_SK_FAMILY >= 0 && OFF_SK_PROTOCOL >= 0
#define HAVE_SOCKINFO 1
// fd -> file -> socket -> sock of the current task, read at syscall exit: the tuple as the kernel has it.
static __always_inline u32 put_sockinfo(struct buf *b, u32 off, s64 fd) {
    if (fd < 0)
        return 0;
    u64 task = (u64)bpf_get_current_task();
    u64 fdt = read_ptr(read_ptr(task + OFF_TASK_FILES) + OFF_FILES_FDT);
    if (!fdt || fd >= read_u32(fdt + OFF_FDTABLE_MAX_FDS))
        return 0;
    u64 file = read_ptr(read_ptr(fdt + OFF_FDTABLE_FD) + fd * 8);
    u64 sk = read_ptr(read_ptr(file + OFF_FILE_PRIVATE_DATA) + OFF_SOCKET_SK);
    if (!sk)
        return 0;
    struct sockinfo si = {};
    bpf_probe_read_kernel(&si.family, 2, (void *)(sk + OFF_SK_FAMILY));
    bpf_probe_read_kernel(&si.type, 2, (void *)(sk + OFF_SK_TYPE));
    bpf_probe_read_kernel(&si.protocol, 2, (void *)(sk + OFF_SK_PROTOCOL));
    bpf_probe_read_kernel(&si.lport, 2, (void *)(sk + OFF_SK_NUM));
    u16 dport = 0;
    bpf_probe_read_kernel(&dport, 2, (void *)(sk + OFF_SK_DPORT));
    si.rport = (dport >> 8) | (dport << 8);
    if (si.family == 2) {  // AF_INET
        bpf_probe_read_kernel(si.laddr, 4, (void *)(sk + OFF_SK_RCV_SADDR));
        bpf_probe_read_kernel(si.raddr, 4, (void *)(sk + OFF_SK_DADDR));
    } else if (si.family == 10) {  // AF_INET6
        bpf_probe_read_kernel(si.laddr, 16, (void *)(sk + OFF_SK_V6_RCV_SADDR));
        bpf_probe_read_kernel(si.raddr, 16, (void *)(sk + OFF_SK_V6_DADDR));
    }
    __builtin_memcpy(&b->payload[off & PAYLOAD_MASK], &si, sizeof(si));
    return sizeof(si);
}
#endif

#include "probe_openfilter.h"
#include "probe_eventgate.h"
#include "probe_exec.h"
#include "probe_creds.h"
#include "probe_recut.h"

static __always_inline int is_excluded(u32 tgid) {
    return excluded.lookup(&tgid) != 0;
}

// The syscall's arguments and result from the saved user registers, into the record header, and no payload yet:
// what reset_hdr does, without first zeroing the arguments it writes.
static __always_inline void put_syscall(struct buf *b, u64 *regs, s64 id, s64 ret) {
    for (int i = 0; i < NSEG; i++)
        b->hdr.len[i] = 0;
    b->hdr.nr = id;
    b->hdr.res = ret;
    b->hdr.args[0] = regs[REGW(REG_ARG0)];
    b->hdr.args[1] = regs[REGW(REG_ARG1)];
    b->hdr.args[2] = regs[REGW(REG_ARG2)];
    b->hdr.args[3] = regs[REGW(REG_ARG3)];
    b->hdr.args[4] = regs[REGW(REG_ARG4)];
    b->hdr.args[5] = regs[REGW(REG_ARG5)];
}

// Only for the syscalls whose exit cannot see everything their record needs (see the header), each on its own
// syscall tracepoint: a raw sys_enter program ran for every syscall of the machine just to compare the id, and a
// BPF program's invocation costs more than the syscall tracepoints' own per-syscall bit test. A syscall
// tracepoint's record is the id at offset 8 and the arguments as u64 from offset 16 (struct
// syscall_trace_enter), whatever each argument's declared type; the kernel refuses to attach a program that
// reads past the syscall's own arguments, so each program reads only its syscall's.
static __always_inline struct sysconf *enter_conf(void *args) {
    s64 id = *(int *)((u8 *)args + 8);
    if (!SAVED_AT_ENTER(id))
        return 0;
    int key = id;
    struct sysconf *conf = sysconf.lookup(&key);
    return conf && conf->on ? conf : 0;
}

static __always_inline int enter_creds(void *args) {
    struct sysconf *conf = enter_conf(args);
    if (conf && conf->credsbefore)
        save_precreds(*(int *)((u8 *)args + 8));
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_unshare) {
    return enter_creds(args);
}

TRACEPOINT_PROBE(syscalls, sys_enter_setns) {
    return enter_creds(args);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat) {
    struct sysconf *conf = enter_conf(args);
    if (conf && conf->exec == 2) {
        u64 *arg = (u64 *)((u8 *)args + 16);
        save_execat(*(int *)((u8 *)args + 8), arg[0], arg[1], arg[4]);  // execveat(dirfd, pathname, argv, envp, flags)
    }
    return 0;
}

RAW_TRACEPOINT_PROBE(sys_exit) {
    KP_BEGIN();
    KP(0);
    // The saved user registers (the same pt_regs as ctx->args[0], which is an untyped number to the verifier)
    // through the task's typed pointer: the id first, the arguments only for a syscall that is on. Typed loads
    // (BTF_LOAD64) instead of one bpf_probe_read_kernel of the whole span: every syscall of the machine pays
    // for the id's read.
    // The task pointer is taken once here and handed down (the kept-back open's directory check and the fd
    // marks need it): each bpf_get_current_task_btf() is a helper call.
    struct task_struct *task = bpf_get_current_task_btf();
    u64 ptregs = bpf_task_pt_regs(task);
    if (!ptregs)
        return 0;
    s64 id = -1;
    BTF_LOAD64(id, ptregs, REG_NR);
    if (id < 0 || id >= NR_SYSCALLS_MAX)
        return 0;
    int key = id;
    struct sysconf *conf = sysconf.lookup(&key);
    if (!conf || !conf->on) {
        KP(2);
        return 0;
    }
    u64 regs[REGS_WORDS] = {};
    BTF_LOAD64(regs[REGW(REG_ARG0)], ptregs, REG_ARG0);
    BTF_LOAD64(regs[REGW(REG_ARG1)], ptregs, REG_ARG1);
    BTF_LOAD64(regs[REGW(REG_ARG2)], ptregs, REG_ARG2);
    BTF_LOAD64(regs[REGW(REG_ARG3)], ptregs, REG_ARG3);
    BTF_LOAD64(regs[REGW(REG_ARG4)], ptregs, REG_ARG4);
    BTF_LOAD64(regs[REGW(REG_ARG5)], ptregs, REG_ARG5);
    KP(1);
    s64 ret = ctx->args[1];
    if (conf->forks && ret == 0)
        return 0;
    // The close of an fd whose open was kept back needs no record (and close has no gate: it changes the fd
    // table), so it is decided first, from the register alone.
    if (conf->fdeffect == FD_CLOSES && fd_unhide(task, (int)regs[REGW(REG_ARG0)])) {
        count(CNT_PATH_FILTERED);  // it was marked: user space never heard of the fd
        KP(5);
        return 0;
    }
    struct buf *b = get_buf();
    if (!b)
        return 0;
    if (conf->gated && gate_drops(b, regs, id, ret)) {
        count(CNT_GATED);
        return 0;
    }
    if (recut_drops(id, ret, regs))  // a record that changes no table and no rule can match (probe_recut.h)
        return 0;
    KP(3);
    put_syscall(b, regs, id, ret);
    KP(4);
    if (conf->exec) {
        if (is_excluded(bpf_get_current_pid_tgid() >> 32))
            return 0;
        // A successful exec has no argument registers left (the new image starts with them cleared): its
        // records come from the tails (probe_exec.h). If the tail call cannot be made, the exec goes out below
        // with its header alone (user space falls back to what it knew).
        b->sys.nr = id;
        b->sys.res = ret;
#pragma unroll
        for (int i = 0; i < 6; i++)
            b->sys.args[i] = b->hdr.args[i];
        tails.call(ctx, TAIL_EXEC_ARGS);
        fill_task(&b->hdr, REC_SYSCALL);
        emit(b, 0);
        return 0;
    }

    // What the open filter keeps in the kernel is decided before anything else is looked up (the `excluded`
    // check included: a dropped record needs none), so a kept-back open costs its path read, the path's scan,
    // the map lookups and its fd's mark (a bit in the process's bitmap), and its close one bit test.
    u32 off = 0, n = 0;
    if (conf->str0 != NO_ARG) {
        n = put_user_str(b, off, arg_at(b->hdr.args, conf->str0));
        b->hdr.len[SEG_STR0] = n;
        off += n;
        KP(6);
        if (conf->pathfilter) {
            u8 need = open_need(conf->pathfilter, b->hdr.args);
            KP(7);
            if (path_filtered(b, n, need) && !fd_may_be_dir(task, b->hdr.res, need)) {
                KP(11);
                count(CNT_PATH_FILTERED);
                fd_hide(task, b->hdr.res);
                KP(12);
                return 0;
            }
        }
    }
    if (is_excluded(bpf_get_current_pid_tgid() >> 32))
        return 0;
    // This record reaches user space: a new fd it makes must not keep a mark an earlier kept-back open of
    // the same number left (its close would be held back).
    if (conf->fdeffect == FD_CREATES_RES && b->hdr.res >= 0) {
        fd_unhide(task, b->hdr.res);
    } else if (conf->fdeffect == FD_CREATES_PAIR && b->hdr.res == 0) {
        int pair[2] = {};
        u8 at = conf->blob < 6 ? conf->blob : 0;
        if (bpf_probe_read_user(pair, sizeof(pair), (void *)arg_at(b->hdr.args, at)) == 0) {
            fd_unhide(task, pair[0]);
            fd_unhide(task, pair[1]);
        }
    }
    if (conf->str1 != NO_ARG) {
        n = put_user_str(b, off, arg_at(b->hdr.args, conf->str1));
        b->hdr.len[SEG_STR1] = n;
        off += n;
    }
    if (conf->data != NO_ARG && b->hdr.res > 0) {
        int zero = 0;
        u32 *snap = snaplen.lookup(&zero);
        u32 len = snap ? *snap : 0;
        if ((u64)b->hdr.res < len)
            len = b->hdr.res;
        if (len > DATA_MAX)
            len = DATA_MAX;
        asm volatile("" : "+r"(len));  // keep clang from dropping the mask the verifier needs
        len &= DATA_MASK;
        if (len && bpf_probe_read_user(&b->payload[off & PAYLOAD_MASK], len, (void *)arg_at(b->hdr.args, conf->data)) == 0) {
            b->hdr.len[SEG_STR1] = len;
            off += len;
        }
    }
    if (conf->sock != NO_ARG) {
        u64 lenarg = arg_at(b->hdr.args, conf->socklen & ~LEN_IS_PTR);
        u32 slen = (u32)lenarg;
        if (conf->socklen & LEN_IS_PTR) {
            slen = 0;
            if (lenarg)
                bpf_probe_read_user(&slen, sizeof(slen), (void *)lenarg);
        }
        n = put_user_bytes(b, off, arg_at(b->hdr.args, conf->sock), slen, SOCK_MAX);
        b->hdr.len[SEG_SOCK] = n;
        off += n;
    }
    if (conf->blob != NO_ARG) {
        n = put_user_bytes(b, off, arg_at(b->hdr.args, conf->blob), conf->bloblen, BLOB_MAX);
        b->hdr.len[SEG_BLOB] = n;
        off += n;
    }
#ifdef HAVE_SOCKINFO
    if (conf->sockfd != NO_ARG) {
        s64 fd = conf->sockfd == SOCKFD_RES ? b->hdr.res : (s64)(int)arg_at(b->hdr.args, conf->sockfd);
        n = put_sockinfo(b, off, fd);
        b->hdr.len[SEG_EXTRA] = n;
        off += n;
    }
#endif
    fill_task(&b->hdr, REC_SYSCALL);
    if (conf->credsbefore)
        apply_precreds(&b->hdr);
    emit(b, off);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork) {
    // Not filtered by `excluded`: the children of an excluded process are ordinary processes, and user
    // space needs the fork to give them their parent's cwd, fds and image.
    struct buf *b = get_buf();
    if (!b)
        return 0;
    reset_hdr(&b->hdr);
    fill_task(&b->hdr, REC_FORK);
    b->hdr.args[0] = args->child_pid;
    // The clone flags say whether the child is a thread; the parent is inside its clone syscall here, so they
    // are in its saved registers (a kernel thread's fork has none of these syscall numbers: a plain fork).
    u64 flags = 17;  // SIGCHLD: plain fork
    u64 regs = bpf_task_pt_regs(bpf_get_current_task_btf());
    s64 nr = -1;
    u64 arg0 = 0;
    if (regs) {
        bpf_probe_read_kernel(&nr, sizeof(nr), (void *)(regs + REG_NR));
        bpf_probe_read_kernel(&arg0, sizeof(arg0), (void *)(regs + REG_ARG0));
    }
    if (nr == CLONE3_NR) {
        bpf_probe_read_user(&flags, sizeof(flags), (void *)arg0);  // struct clone_args starts with its flags
    } else if (nr == CLONE_NR) {
        flags = arg0;
    } else if (nr == VFORK_NR) {
        flags = 0x4000 | 0x100 | 17;  // CLONE_VFORK | CLONE_VM | SIGCHLD
    } else if (nr != FORK_NR) {
        nr = -1;
    }
    b->hdr.nr = nr;
    b->hdr.args[1] = flags;
    emit(b, 0);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    // (A thread that dies inside a syscall never reaches sys_exit; what sys_enter kept for it is task storage,
    // which goes with the task.)
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!args->group_dead)
        return 0;
    if (is_excluded(pid_tgid >> 32))
        return 0;
    struct buf *b = get_buf();
    if (!b)
        return 0;
    reset_hdr(&b->hdr);
    fill_task(&b->hdr, REC_EXIT);
    b->hdr.args[0] = 1;
    emit(b, 0);
    return 0;
}

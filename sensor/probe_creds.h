// Credentials from before a syscall, for the syscalls that change them in a way rules must not see
// (sysconf.credsbefore: unshare and setns give the caller a new user namespace's full capabilities).
// Part of Falconet's BPF program: included by probe.c (sensor.py inlines it; see probe.c's header).

// Credentials at sys_enter of a `credsbefore` syscall, per thread, until its exit (or the thread's end).
struct precred {
    u32 uid, gid, euid, egid;
    u64 cap_inheritable, cap_permitted, cap_effective;
};
BPF_HASH(precreds, u64, struct precred, 1024);

// At sys_enter: the task's ids and capability sets now.
static __always_inline void save_precreds(u64 pid_tgid) {
    struct precred pc = {};
    u8 cred[CRED_READ_LEN] = {};
    u64 credp = read_ptr((u64)bpf_get_current_task() + OFF_TASK_CRED);
    if (!credp || bpf_probe_read_kernel(cred, sizeof(cred), (void *)credp) != 0)
        return;
    pc.uid = *(u32 *)&cred[OFF_CRED_UID];
    pc.gid = *(u32 *)&cred[OFF_CRED_GID];
    pc.euid = *(u32 *)&cred[OFF_CRED_EUID];
    pc.egid = *(u32 *)&cred[OFF_CRED_EGID];
    pc.cap_inheritable = *(u64 *)&cred[OFF_CRED_CAP_INHERITABLE];
    pc.cap_permitted = *(u64 *)&cred[OFF_CRED_CAP_PERMITTED];
    pc.cap_effective = *(u64 *)&cred[OFF_CRED_CAP_EFFECTIVE];
    precreds.update(&pid_tgid, &pc);  // a full map only loses this: the record then shows the after-values
}

// At sys_exit, after fill_task: the record shows the credentials saved at enter.
static __always_inline void apply_precreds(struct record_hdr *h, u64 pid_tgid) {
    struct precred *pc = precreds.lookup(&pid_tgid);
    if (!pc)
        return;
    h->uid = pc->uid;
    h->gid = pc->gid;
    h->euid = pc->euid;
    h->egid = pc->egid;
    h->cap_inheritable = pc->cap_inheritable;
    h->cap_permitted = pc->cap_permitted;
    h->cap_effective = pc->cap_effective;
    precreds.delete(&pid_tgid);
}

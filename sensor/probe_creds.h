// Credentials from before a syscall, for the syscalls that change them in a way rules must not see
// (sysconf.credsbefore: unshare and setns give the caller a new user namespace's full capabilities).
// Part of Falconet's BPF program: included by probe.c (sensor.py inlines it; see probe.c's header).

// Credentials at sys_enter of a `credsbefore` syscall, in the task's own storage until that syscall's exit.
// `nr` says which syscall saved them (-1 once used), so an exit never takes values another call left: a
// syscall seccomp denied has no enter (and changed nothing, so the credentials at its exit are the ones).
struct precred {
    s64 nr;
    u32 uid, gid, euid, egid;
    u64 cap_inheritable, cap_permitted, cap_effective;
};
BPF_TASK_STORAGE(precreds, struct precred);

// At sys_enter: the task's ids and capability sets now.
static __always_inline void save_precreds(s64 nr) {
    u8 cred[CRED_READ_LEN] = {};
    u64 credp = read_ptr((u64)bpf_get_current_task() + OFF_TASK_CRED);
    if (!credp || bpf_probe_read_kernel(cred, sizeof(cred), (void *)credp) != 0)
        return;
    // A failed create only loses this: the record then shows the after-values.
    struct precred *pc = precreds.task_storage_get(bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!pc)
        return;
    pc->nr = nr;
    pc->uid = *(u32 *)&cred[OFF_CRED_UID];
    pc->gid = *(u32 *)&cred[OFF_CRED_GID];
    pc->euid = *(u32 *)&cred[OFF_CRED_EUID];
    pc->egid = *(u32 *)&cred[OFF_CRED_EGID];
    pc->cap_inheritable = *(u64 *)&cred[OFF_CRED_CAP_INHERITABLE];
    pc->cap_permitted = *(u64 *)&cred[OFF_CRED_CAP_PERMITTED];
    pc->cap_effective = *(u64 *)&cred[OFF_CRED_CAP_EFFECTIVE];
}

// At sys_exit, after fill_task: the record shows the credentials saved at enter. The slot stays with the task
// (a few dozen bytes, freed with it), marked used.
static __always_inline void apply_precreds(struct record_hdr *h) {
    struct precred *pc = precreds.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    if (!pc || pc->nr != h->nr)
        return;
    h->uid = pc->uid;
    h->gid = pc->gid;
    h->euid = pc->euid;
    h->egid = pc->egid;
    h->cap_inheritable = pc->cap_inheritable;
    h->cap_permitted = pc->cap_permitted;
    h->cap_effective = pc->cap_effective;
    pc->nr = -1;
}

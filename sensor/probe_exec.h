// An exec's records, all built at its exit by tails of sys_exit: exec_args (EXECARGS: filename, argv and the
// first MAX_ENVP environment entries), exec_env (the environment past those, when user space asks) and
// exec_exit (the exec's own record: once it succeeded, the new image's path and inode facts and the cgroup
// paths container identity is read from). After a successful exec the argument registers are cleared and the
// caller's memory is gone: the arguments and environment come from the new image's stack (mm->arg_start..
// arg_end, env_start..env_end, where the kernel copied them back to back) and the filename from just past the
// environment (where the kernel put the name the exec was given, AT_EXECFN), as Falco's modern probe reads
// them. A failed exec still has its registers and memory: those are read. execveat's dirfd, flags and path are
// saved at its enter (save_execat), since a successful exec leaves nothing of them.
// Part of Falconet's BPF program: included by probe.c (sensor.py inlines it; see probe.c's header).

#define CG_DEPTH 10          // cgroup path components read (leaf first); deeper paths lose their top ones
#define CG_NAME_MAX 256      // a kernfs name is at most NAME_MAX bytes
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#define ENV_MORE_MAX 1024     // environment entries read beyond the first MAX_ENVP when asked (env_more)
#define ENV_MORE_AREA 12288   // ... within this many bytes

// execveat's arguments a successful exec erases, from its enter to its exit (task storage, deleted at the exit).
struct execat {
    s64 nr;
    s64 dirfd;
    u64 flags;
    char path[STR_MAX];
};
BPF_TASK_STORAGE(execat, struct execat);

// At the enter of execveat(dirfd, pathname, argv, envp, flags).
static __always_inline void save_execat(s64 nr, u64 dirfd, u64 path, u64 flags) {
    struct execat *ea = execat.task_storage_get(bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!ea)
        return;  // the exec's record then lacks dirfd and flags; its filename is the kernel's (AT_EXECFN)
    ea->nr = nr;
    ea->dirfd = dirfd;
    ea->flags = flags;
    ea->path[0] = 0;
    if (path)
        bpf_probe_read_user_str(ea->path, STR_MAX, (void *)path);
}

// The executable as the kernel holds it right after exec (SEG_BLOB of a successful execve/execveat).
struct execinfo {
    u64 ino;
    s64 ctime_sec;
    s64 mtime_sec;
    u64 sb_magic;
    u64 sb_flags;
    u32 ctime_nsec;
    u32 mtime_nsec;
    u32 mode;
    u32 uid;             // owner of the file
    u32 gid;
    u32 iflags;          // inode flags (S_IMMUTABLE, ...)
    u32 fsuid;           // the credentials the new image runs with, for proc.is_exe_writable
    u32 fsgid;
    u32 flags;           // EXE_* below
    u32 pad;
};
#define EXE_KNOWN 1          // an exe_file was found (the rest is meaningful)
#define EXE_UPPER 2          // on overlayfs, with an upper dentry: the file is in (or was copied up to) the upper layer
#define EXE_PATH_KNOWN 4     // SEG_STR0 holds the exe's whole path (components leaf first) up to the task's root
#define EXE_PATH_DELETED 8   // the file is unlinked, or a pseudo file (memfd): d_path says "<path> (deleted)"
#define EXE_PATH_PSEUDO 16   // a pseudo file with no directory (memfd, anon inode): its one name, no parents
#define EXE_DEPTH 24         // path components plus mount crossings walked; deeper: the path is not known
#define EXE_NAME_MAX 256

#if OFF_FILE_PATH_MNT >= 0 && OFF_FILE_PATH_DENTRY >= 0 && OFF_DENTRY_PARENT >= 0 && OFF_DENTRY_NAME >= 0 && \
    OFF_DENTRY_HASH_PPREV >= 0 && OFF_VFSMOUNT_ROOT >= 0 && OFF_MOUNT_MNT >= 0 && OFF_MOUNT_PARENT >= 0 && \
    OFF_MOUNT_MOUNTPOINT >= 0 && OFF_TASK_FS >= 0 && OFF_FS_ROOT_MNT >= 0 && OFF_FS_ROOT_DENTRY >= 0
#define HAVE_EXE_PATH 1
// The path of the file the new image runs from, as d_path would give it to the task: dentry names up to the
// task's root, crossing mount points (so inside a container it is the container's path). The kernel's own
// file, not the exec's filename argument: execve("/proc/self/fd/N") of a memfd and execveat(fd, "",
// AT_EMPTY_PATH) name what actually runs. Components go leaf first, NUL-separated; `flags` gets EXE_PATH_*.
static __always_inline u32 put_exe_path(struct buf *b, u32 off, u64 task, u64 file, u32 *flags) {
    u64 dentry = read_ptr(file + OFF_FILE_PATH_DENTRY);
    u64 vfsmnt = read_ptr(file + OFF_FILE_PATH_MNT);
    u64 fs = read_ptr(task + OFF_TASK_FS);
    u64 root_d = fs ? read_ptr(fs + OFF_FS_ROOT_DENTRY) : 0;
    u64 root_m = fs ? read_ptr(fs + OFF_FS_ROOT_MNT) : 0;
    if (!dentry || !vfsmnt)
        return 0;
    if (!read_ptr(dentry + OFF_DENTRY_HASH_PPREV) && read_ptr(dentry + OFF_DENTRY_PARENT) != dentry)
        *flags |= EXE_PATH_DELETED;  // d_unlinked: unhashed and not a root
    // The bytes written and the outcome live in the scratch map, not in registers: the verifier then sees the
    // same state at every iteration's head and prunes, instead of following each path's own length (which
    // took it past its budget). A bounded loop, not unrolled, for the same reason.
    b->walk_used = 0;
    b->walk_done = 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < EXE_DEPTH; i++) {
        if (dentry == root_d && vfsmnt == root_m) {
            b->walk_done = 1;
            break;
        }
        u64 parent = read_ptr(dentry + OFF_DENTRY_PARENT);
        if (dentry == read_ptr(vfsmnt + OFF_VFSMOUNT_ROOT)) {
            u64 mnt = vfsmnt - OFF_MOUNT_MNT;
            u64 up = read_ptr(mnt + OFF_MOUNT_PARENT);
            if (!up || up == mnt) {  // the namespace's root mount: the path is complete (as d_path's global root)
                b->walk_done = 1;
                break;
            }
            dentry = read_ptr(mnt + OFF_MOUNT_MOUNTPOINT);
            vfsmnt = up + OFF_MOUNT_MNT;
            continue;
        }
        u32 used = b->walk_used;
        u64 name = read_ptr(dentry + OFF_DENTRY_NAME);
        int n = name ? bpf_probe_read_kernel_str(&b->payload[(off + used) & PAYLOAD_MASK], EXE_NAME_MAX,
                                                 (void *)name) : 0;
        if (n <= 0)
            break;
        b->walk_used = used + n;
        if (parent == dentry) {  // a root that is not a mount's root: a pseudo file (memfd) named by itself
            b->walk_done = used == 0 ? 2 : 1;
            break;
        }
        dentry = parent;
    }
    if (!b->walk_done)
        return 0;
    if (b->walk_done == 2)
        *flags |= EXE_PATH_PSEUDO | EXE_PATH_DELETED;
    u32 used = b->walk_used;
    if (used > EXE_DEPTH * EXE_NAME_MAX)
        return 0;
    *flags |= EXE_PATH_KNOWN;
    return used;
}
#endif

#if OFF_TASK_CGROUPS >= 0 && OFF_CGROUP_KN >= 0 && OFF_KERNFS_NODE_NAME >= 0 && OFF_KERNFS_NODE_PARENT >= 0
#define HAVE_CGROUP_PATH 1
// A cgroup's path, leaf first, as NUL-separated kernfs names (the root, which has no name, is left out).
// Read from the kernel's own tree, so it is the host-side path even inside a cgroup namespace.
static __always_inline u32 put_cgroup_path(struct buf *b, u32 off, u64 cgrp) {
    u64 kn = cgrp ? read_ptr(cgrp + OFF_CGROUP_KN) : 0;
    u32 used = 0;
#pragma unroll
    for (int i = 0; i < CG_DEPTH; i++) {
        if (!kn)
            break;
        u64 parent = read_ptr(kn + OFF_KERNFS_NODE_PARENT);
        if (!parent)
            break;
        u64 name = read_ptr(kn + OFF_KERNFS_NODE_NAME);
        int n = name ? bpf_probe_read_kernel_str(&b->payload[(off + used) & PAYLOAD_MASK], CG_NAME_MAX,
                                                 (void *)name) : 0;
        if (n <= 0)
            break;
        used += n;
        kn = parent;
    }
    return used;
}
#endif

// Payload segments go in enum segment order, so the exe facts (SEG_BLOB) come before the paths (SEG_EXTRA*).
static __always_inline u32 put_exec_facts(struct buf *b, u32 off) {
    u64 task = (u64)bpf_get_current_task();
#if OFF_TASK_MM >= 0 && OFF_MM_EXE_FILE >= 0 && OFF_FILE_INODE >= 0 && OFF_INODE_SB >= 0
    struct execinfo ei = {};
    u64 file = read_ptr(read_ptr(task + OFF_TASK_MM) + OFF_MM_EXE_FILE);
#ifdef HAVE_EXE_PATH
    if (file && off == 0) {  // SEG_STR0 is free at an exec's exit (its filename came with EXECARGS)
        u32 flags = 0;
        u32 n = put_exe_path(b, off, task, file, &flags);
        b->hdr.len[SEG_STR0] = n;
        off += n;
        asm volatile("" : "+r"(off));  // keep the masks below: clang knows the bound, the verifier does not
        ei.flags = flags & ~EXE_KNOWN;
    }
#endif
    u64 inode = file ? read_ptr(file + OFF_FILE_INODE) : 0;
    if (inode) {
        ei.flags |= EXE_KNOWN;
        ei.ino = read_ptr(inode + OFF_INODE_INO);
        u16 mode = 0;
        bpf_probe_read_kernel(&mode, 2, (void *)(inode + OFF_INODE_MODE));
        ei.mode = mode;
        ei.uid = read_u32(inode + OFF_INODE_UID);
        ei.gid = read_u32(inode + OFF_INODE_GID);
        ei.iflags = read_u32(inode + OFF_INODE_FLAGS);
#if OFF_INODE_CTIME_SEC >= 0 && OFF_INODE_CTIME_NSEC >= 0 && OFF_INODE_MTIME_SEC >= 0 && OFF_INODE_MTIME_NSEC >= 0
        bpf_probe_read_kernel(&ei.ctime_sec, 8, (void *)(inode + OFF_INODE_CTIME_SEC));
        bpf_probe_read_kernel(&ei.mtime_sec, 8, (void *)(inode + OFF_INODE_MTIME_SEC));
        ei.ctime_nsec = read_u32(inode + OFF_INODE_CTIME_NSEC);
        ei.mtime_nsec = read_u32(inode + OFF_INODE_MTIME_NSEC);
#endif
        u64 sb = read_ptr(inode + OFF_INODE_SB);
        ei.sb_magic = read_ptr(sb + OFF_SB_MAGIC);
        ei.sb_flags = read_ptr(sb + OFF_SB_FLAGS);
#if OFF_OVL_UPPERDENTRY >= 0
        if ((u32)ei.sb_magic == OVERLAYFS_SUPER_MAGIC && read_ptr(inode + OFF_OVL_UPPERDENTRY))
            ei.flags |= EXE_UPPER;
#endif
        u64 credp = read_ptr(task + OFF_TASK_CRED);
        ei.fsuid = read_u32(credp + OFF_CRED_FSUID);
        ei.fsgid = read_u32(credp + OFF_CRED_FSGID);
    }
    __builtin_memcpy(&b->payload[off & PAYLOAD_MASK], &ei, sizeof(ei));
    b->hdr.len[SEG_BLOB] = sizeof(ei);
    off += sizeof(ei);
#endif
#ifdef HAVE_CGROUP_PATH
    // Container identity: the default (v2) hierarchy's path, and one v1 controller's (hybrid and v1 hosts,
    // where a runtime may leave the unified hierarchy alone). User space reads whichever names a container.
    u32 n = 0;
    u64 cgroups = read_ptr(task + OFF_TASK_CGROUPS);
#if OFF_CSS_SET_DFL_CGRP >= 0
    n = put_cgroup_path(b, off, read_ptr(cgroups + OFF_CSS_SET_DFL_CGRP));
    b->hdr.len[SEG_EXTRA] = n;
    off += n;
#endif
#if CGROUP_V1_SUBSYS >= 0 && OFF_CSS_SET_SUBSYS >= 0 && OFF_CSS_CGROUP >= 0
    u64 css = read_ptr(cgroups + OFF_CSS_SET_SUBSYS + CGROUP_V1_SUBSYS * 8);
    n = put_cgroup_path(b, off, css ? read_ptr(css + OFF_CSS_CGROUP) : 0);
    b->hdr.len[SEG_EXTRA2] = n;
    off += n;
#endif
#endif
    return off;
}

// A NUL-separated list (argv or envp) of at most `max` entries within ARGS_AREA bytes, from a user vector of
// string pointers (`end` 0: the exec's arguments as the caller passed them) or from a user area where the
// strings lie back to back up to `end` (the new image's argv and environment, as its stack holds them).
// *count gets the entries read whole and *whole their bytes (where a continuation starts). A bounded loop with
// its state in the scratch map, not unrolled: the verifier then prunes per iteration (see put_exe_path).
static __always_inline u32 put_user_strv(struct buf *b, u32 off, u64 src, u64 end, u32 max, u32 *count,
                                         u32 *whole) {
    b->walk_used = 0;
    b->walk_done = 0;
    b->walk_whole = 0;
    if (!src)
        return 0;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_ENVP; i++) {
        if (i >= max)
            break;
        u32 used = b->walk_used;
        if (used >= ARGS_AREA)
            break;
        u64 p = 0;
        if (end) {
            p = src + used;
            if (p >= end)
                break;
        } else if (bpf_probe_read_user(&p, sizeof(p), (void *)(src + i * 8)) != 0 || !p) {
            break;
        }
        asm volatile("" : "+r"(used));  // keep the mask: clang knows used < ARGS_AREA, the verifier does not
        int n = bpf_probe_read_user_str(&b->payload[(off + used) & PAYLOAD_MASK], STR_MAX, (void *)p);
        if (n <= 0)
            break;
        used += n;
        b->walk_used = used;
        if (used <= ARGS_AREA) {
            b->walk_done = i + 1;
            b->walk_whole = used;
        }
    }
    *count = b->walk_done;
    *whole = b->walk_whole;
    u32 used = b->walk_used;
    return used > ARGS_AREA ? ARGS_AREA : used;
}

#if OFF_TASK_MM >= 0 && OFF_MM_ARG_START >= 0 && OFF_MM_ARG_END >= 0 && OFF_MM_ENV_START >= 0 && OFF_MM_ENV_END >= 0
#define HAVE_MM_ARGS 1
#endif

// Tail of sys_exit for every execve/execveat (tails[TAIL_EXEC_ARGS]): the EXECARGS record. sys_exit left the
// syscall in b->sys. Then the rest of the environment (exec_env) when asked, and the exec's record (exec_exit).
int exec_args(struct bpf_raw_tracepoint_args *ctx) {
    struct buf *b = get_buf();
    if (!b)
        return 0;
    s64 nr = b->sys.nr;
    s64 res = b->sys.res;
    // What execveat's enter saved. A successful execveat reaches sys_exit with execve's id in its registers
    // (the kernel's exec path leaves it so): the saved record says which it was.
    struct task_struct *task = bpf_get_current_task_btf();
    struct execat *ea = execat.task_storage_get(task, 0, 0);
    int at = 0;  // ea holds this execveat's arguments
    if (ea) {
        if (ea->nr == EXECVEAT_NR)
            at = 1;
        if (at && res == 0) {
            nr = EXECVEAT_NR;
            b->sys.nr = nr;
            b->sys.args[0] = ea->dirfd;
            b->sys.args[4] = ea->flags;
        }
    }
    reset_hdr(&b->hdr);
    fill_task(&b->hdr, REC_EXECARGS);
    b->hdr.nr = nr;
    u64 argv = 0, argv_end = 0, envp = 0, envp_end = 0;
    u32 off = 0;
    if (res == 0) {
#ifdef HAVE_MM_ARGS
        u64 mm = read_ptr((u64)bpf_get_current_task() + OFF_TASK_MM);
        argv = read_ptr(mm + OFF_MM_ARG_START);
        argv_end = read_ptr(mm + OFF_MM_ARG_END);
        envp = read_ptr(mm + OFF_MM_ENV_START);
        envp_end = read_ptr(mm + OFF_MM_ENV_END);
        if (!argv_end)
            argv = 0;
        if (!envp_end)
            envp = 0;
        if (ea && at) {
            int n = bpf_probe_read_kernel_str(&b->payload[0], STR_MAX, ea->path);
            off = n > 0 ? n : 0;
        } else {
            off = put_user_str(b, 0, envp_end);  // AT_EXECFN: the name the exec was given
        }
#endif
    } else {
        // execve(filename, argv, envp); execveat(dirfd, filename, argv, envp, flags)
        int base = nr == EXECVEAT_NR ? 1 : 0;
        off = put_user_str(b, 0, b->sys.args[base & 1]);
        argv = b->sys.args[(base + 1) & 3];
        envp = b->sys.args[(base + 2) & 3];
    }
    if (ea)
        execat.task_storage_delete(task);
    b->hdr.len[SEG_STR0] = off;
    u32 count = 0, whole = 0;
    u32 n = put_user_strv(b, off, argv, argv_end, MAX_ARGV, &count, &whole);
    b->hdr.len[SEG_EXTRA] = n;
    off += n;
    count = 0;
    whole = 0;
    n = put_user_strv(b, off, envp, envp_end, MAX_ENVP, &count, &whole);
    b->hdr.len[SEG_EXTRA2] = n;
    off += n;
    if (!emit(b, off)) {
        // The ring buffer had no room for the arguments, and may still have room for the exec's own, smaller
        // record: say they were lost (a header alone), or user space shows the process without arguments.
#pragma unroll
        for (int i = 0; i < NSEG; i++)
            b->hdr.len[i] = 0;
        b->hdr.args[0] = EXECARGS_LOST;
        emit(b, 0);
        envp = 0;  // nor the rest of the environment
    }
    // The rest of the environment, when the rules look for a variable: a record of its own (REC_EXECENV)
    // from a tail program, so the common exec pays one map lookup for it.
    int zero = 0;
    u32 *more = env_more.lookup(&zero);
    if (more && *more && envp) {
        b->hdr.args[0] = envp;
        b->hdr.args[1] = count;
        b->hdr.args[2] = envp_end;
        b->hdr.args[3] = whole;
        tails.call(ctx, TAIL_EXEC_ENV);
    }
    tails.call(ctx, TAIL_EXEC_EXIT);
    return 0;
}

// Tail for every execve/execveat (tails[TAIL_EXEC_EXIT]): the exec's own record, rebuilt from b->sys (the
// EXECARGS record used the buffer; exec_args put a successful execveat's dirfd and flags there).
int exec_exit(struct bpf_raw_tracepoint_args *ctx) {
    struct buf *b = get_buf();
    if (!b)
        return 0;
    reset_hdr(&b->hdr);
    b->hdr.nr = b->sys.nr;
    b->hdr.res = b->sys.res;
#pragma unroll
    for (int i = 0; i < 6; i++)
        b->hdr.args[i] = b->sys.args[i];
    u32 off = 0;
    if (b->hdr.res == 0)
        off = put_exec_facts(b, 0);
    fill_task(&b->hdr, REC_SYSCALL);
    emit(b, off);
    return 0;
}

// Tail of exec_args (tails[TAIL_EXEC_ENV]): environment entries past the args[1] EXECARGS carries whole, up to
// env_more entries and ENV_MORE_AREA bytes, as REC_EXECENV (SEG_EXTRA2). The source is the user vector at
// args[0] (args[2] 0) or the area args[0]..args[2] whose first args[3] bytes EXECARGS carries. The scratch
// buffer still holds the EXECARGS header (task, syscall). Working state lives in the map (see put_exe_path).
int exec_env(struct bpf_raw_tracepoint_args *ctx) {
    struct buf *b = get_buf();
    int zero = 0;
    u32 *more = env_more.lookup(&zero);
    if (!b || !more)
        return 0;
    u64 envp = b->hdr.args[0];
    u32 start = b->hdr.args[1];
    u64 end = b->hdr.args[2];
    u64 from = envp + (b->hdr.args[3] & 0xffff);
    u32 max = *more;
    b->walk_used = 0;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < ENV_MORE_MAX; i++) {
        if (i >= max)
            break;
        u32 used = b->walk_used;
        if (used >= ENV_MORE_AREA)
            break;
        u64 p = 0;
        if (end) {
            p = from + used;
            if (p >= end)
                break;
        } else if (bpf_probe_read_user(&p, sizeof(p), (void *)(envp + (u64)(start + i) * 8)) != 0 || !p) {
            break;
        }
        asm volatile("" : "+r"(used));  // keep the mask: clang knows used < ENV_MORE_AREA, the verifier does not
        int n = bpf_probe_read_user_str(&b->payload[used & PAYLOAD_MASK], STR_MAX, (void *)p);
        if (n <= 0)
            break;
        b->walk_used = used + n;
    }
    u32 used = b->walk_used;
    if (used && used <= ENV_MORE_AREA + STR_MAX) {
        b->hdr.kind = REC_EXECENV;
        for (int i = 0; i < NSEG; i++)
            b->hdr.len[i] = 0;
        b->hdr.len[SEG_EXTRA2] = used;
        emit(b, used);
    }
    tails.call(ctx, TAIL_EXEC_EXIT);
    return 0;
}

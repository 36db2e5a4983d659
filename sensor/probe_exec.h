// What a successful exec records about the new image: the exe's inode facts and the cgroup paths
// container identity is read from.
// Part of Falconet's BPF program: included by probe.c (sensor.py inlines it; see probe.c's header).

#define CG_DEPTH 10          // cgroup path components read (leaf first); deeper paths lose their top ones
#define CG_NAME_MAX 256      // a kernfs name is at most NAME_MAX bytes
#define OVERLAYFS_SUPER_MAGIC 0x794c7630

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
    u64 inode = file ? read_ptr(file + OFF_FILE_INODE) : 0;
    if (inode) {
        ei.flags = EXE_KNOWN;
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

// The open-path filter's decisions: which opens a prefix covers, and what never to keep back.
// Part of Falconet's BPF program: included by probe.c (sensor.py inlines it; see probe.c's header).

// Which opens a prefix covers (the trie's value): read opens, write opens, opens with any other flag.
#define OPEN_READ 1
#define OPEN_WRITE 2
#define OPEN_OTHER 4
#define OPEN_KEEP 8  // never filtered
// Flags that change nothing a rule can ask about an open (evt.is_open_read/write, flags containing O_CREAT...
// are all covered by the bits above): O_NONBLOCK O_LARGEFILE O_DIRECTORY O_NOFOLLOW O_NOCTTY O_NOATIME O_CLOEXEC
#define OPEN_QUIET_FLAGS (04000 | 0100000 | 0200000 | 0400000 | 0400 | 01000000 | 02000000)

// What an open needs from its prefix, from its flags; OPEN_READ|OPEN_WRITE|OPEN_OTHER when unknown.
static __always_inline u8 open_need(u8 how, u64 *args) {
    u64 flags;
    if (how == 1)
        flags = args[1];  // open(path, flags, mode)
    else if (how == 2)
        flags = args[2];  // openat(dirfd, path, flags, mode)
    else if (how == 4)
        return OPEN_WRITE | OPEN_OTHER;  // creat = O_CREAT|O_WRONLY|O_TRUNC
    else
        return OPEN_KEEP;  // openat2: flags are in open_how, O_DIRECTORY or O_PATH may be among them
    // A directory fd may become the dirfd of later *at() calls or the target of fchdir: user space must know
    // its path to resolve those, whatever the rules say about the directory itself.
    if (flags & (0200000 | 010000000))  // O_DIRECTORY, O_PATH
        return OPEN_KEEP;
    u8 need = 0;
    u64 acc = flags & 3;
    if (acc == 0 || acc == 2)
        need |= OPEN_READ;
    if (acc == 1 || acc == 2)
        need |= OPEN_WRITE;
    if (flags & ~(u64)(3 | OPEN_QUIET_FLAGS))
        need |= OPEN_OTHER;
    // Access mode 3 (no read, no write) is neither kind, but a rule that does not test the kind still matches
    // it: count it as "other" rather than needing nothing (which no prefix would cover).
    return need ? need : OPEN_OTHER;
}

// 1 when the path at payload[0] may be dropped: absolute, clean, and under no prefix that covers this open.
static __always_inline int path_filtered(struct buf *b, u32 len, u8 need) {
    int zero = 0;
    u32 *on = path_filter_on.lookup(&zero);
    if (!on || !*on || (need & OPEN_KEEP) || len < 2 || len > PATH_SCAN_MAX || b->payload[0] != '/')
        return 0;
    for (int i = 0; i < PATH_SCAN_MAX - 3; i++) {
        if (i >= len)
            break;
        if (b->payload[i] != '/')
            continue;
        char c1 = b->payload[i + 1], c2 = b->payload[i + 2], c3 = b->payload[i + 3];
        if (c1 == '/')
            return 0;
        if (c1 == '.' && (c2 == '/' || c2 == 0 || (c2 == '.' && (c3 == '/' || c3 == 0))))
            return 0;
    }
    struct prefix_key key = {};
    u32 n = len - 1;  // without the NUL
    if (n > PREFIX_MAX)
        n = PREFIX_MAX;
    key.prefixlen = n * 8;
    bpf_probe_read_kernel(key.data, PREFIX_MAX, b->payload);
    u8 *covers = open_prefixes.lookup(&key);  // the longest matching prefix (user space ORs in its ancestors)
    return !covers || !(*covers & need);
}

// 1 when the fd the open returned may be a directory. The open-path filter never keeps one back: it can become
// the base of later *at() paths or of fchdir, which user space can only resolve if it saw the open. Opening a
// directory without O_DIRECTORY (plain O_RDONLY works) is enough to need this check. Unknown: 1 (keep it).
#if OFF_TASK_FILES >= 0 && OFF_FILES_FDT >= 0 && OFF_FDTABLE_FD >= 0 && OFF_FILE_INODE >= 0 && OFF_INODE_MODE >= 0
static __always_inline int fd_may_be_dir(s64 fd) {
    if (fd < 0)
        return 0;  // a failed open makes no fd
    u64 task = (u64)bpf_get_current_task();
    u64 fdt = read_ptr(read_ptr(task + OFF_TASK_FILES) + OFF_FILES_FDT);
    if (!fdt || fd >= read_u32(fdt + OFF_FDTABLE_MAX_FDS))
        return 1;
    u64 file = read_ptr(read_ptr(fdt + OFF_FDTABLE_FD) + fd * 8);
    u64 inode = file ? read_ptr(file + OFF_FILE_INODE) : 0;
    if (!inode)
        return 1;
    u16 mode = 0;
    if (bpf_probe_read_kernel(&mode, sizeof(mode), (void *)(inode + OFF_INODE_MODE)) != 0)
        return 1;
    return (mode & 0170000) == 0040000;  // S_ISDIR
}
#else
static __always_inline int fd_may_be_dir(s64 fd) {
    return fd >= 0;
}
#endif

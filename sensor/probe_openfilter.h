// The open-path filter's decisions: which opens an atom covers, and what never to keep back.
// Part of Falconet's BPF program: included by probe.c (sensor.py inlines it; see probe.c's header).
//
// The rules say, for the opens some rule may match, which atoms their path satisfies (rules/open_prefixes.py):
// a prefix (the LPM trie `open_prefixes`) or a suffix (the hash `open_suffixes`, tried at the few lengths
// `open_suffix_lens` lists). Both are maps user space fills (sensor/openfilter.py), so a rule reload rewrites
// them and never the program. Only an absolute, lexically clean path is ever kept back (path_clean): for it
// the path as passed is the fd.name user space would have made, which is what makes the atoms sound.

// Which opens an atom covers (the maps' values): read opens, write opens, opens with any other flag.
#define OPEN_READ 1
#define OPEN_WRITE 2
#define OPEN_OTHER 4
#define OPEN_KEEP 8  // never filtered
// Flags that change nothing a rule can ask about an open (evt.is_open_read/write, flags containing O_CREAT...
// are all covered by the bits above): O_NONBLOCK O_LARGEFILE O_DIRECTORY O_NOFOLLOW O_NOCTTY O_NOATIME O_CLOEXEC
#define OPEN_QUIET_FLAGS (04000 | 0100000 | 0200000 | 0400000 | 0400 | 01000000 | 02000000)
#define PREFIX_MAX 64         // open path prefixes are matched on their first PREFIX_MAX bytes
#define PATH_SCAN_MAX 256     // paths this long or longer are never filtered (not scanned for . and ..)
#define SUFFIX_MAX 32         // suffixes are matched on their last SUFFIX_MAX bytes (user space cuts them)
#define SUFFIX_LENS 8         // distinct suffix lengths tried

// The filter is off unless user space turns it on (path_filter_on) with atoms the rules provably need.
struct prefix_key {
    u32 prefixlen;  // bits
    u8 data[PREFIX_MAX];
};
BPF_LPM_TRIE(open_prefixes, struct prefix_key, u8, 1024);
BPF_ARRAY(path_filter_on, u32, 1);  // 0: off; on: the maps' generation (user space changes it at every reload)
// fds whose open the filter kept in the kernel: their close is meaningless to user space (it never heard of the
// fd), so it stays here too. Any fd-creating syscall that reaches user space clears its number first, so a close
// user space needs is never held back. One bitmap per process (HIDDEN_FD_BITS bits), in the task storage of the
// process's group leader: a kept-back open and its close cost one storage lookup (the leader's own cache, no
// hash) and one atomic bit operation each (session 5 replaced a hash entry per fd, about 55 and 45 ns, with a
// tgid-keyed LRU hash of bitmaps, about 13-16 ns; the task storage saves that hash). An fd at or above
// HIDDEN_FD_BITS is not marked: its open is still kept back and its close reaches user space, which ignores the
// close of an fd it never knew. Bits change only atomically (threads of one process share a word). The storage
// lives and dies with the leader's task_struct, so a new process (a fork, or a reused pid, which the kernel gives
// out only after the old leader is freed) starts with no marks; when a thread other than the leader execs, it
// becomes the leader with empty storage, which loses marks only (their closes reach user space).
#define HIDDEN_FD_BITS 1024
#define HIDDEN_FD_WORDS (HIDDEN_FD_BITS / 64)
struct fd_bits {
    u64 w[HIDDEN_FD_WORDS];
};
#if BTF_OFF_OK(OFF_TASK_GROUP_LEADER)
BPF_TASK_STORAGE(hidden_fds, struct fd_bits);

// The bitmap of the calling process (task: the current task, bpf_get_current_task_btf(), which sys_exit reads
// once), created when `create`, or 0.
static __always_inline struct fd_bits *fd_bits_of(struct task_struct *task, int create) {
    struct task_struct *leader = 0;
    BTF_LOAD64(leader, task, OFF_TASK_GROUP_LEADER);
    if (!leader)
        return 0;
    return hidden_fds.task_storage_get(leader, 0, create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}
#else
static __always_inline struct fd_bits *fd_bits_of(struct task_struct *task, int create) {
    return 0;  // no marks: every close of a kept-back fd reaches user space
}
#endif

// Marks fd as kept back for the calling process.
static __always_inline void fd_hide(struct task_struct *task, s64 fd) {
    if (fd < 0 || fd >= HIDDEN_FD_BITS)
        return;
    struct fd_bits *bits = fd_bits_of(task, 1);
    if (bits)
        __sync_fetch_and_or(&bits->w[(fd >> 6) & (HIDDEN_FD_WORDS - 1)], 1ULL << (fd & 63));
}

// Clears fd's mark (a new fd with this number that user space hears of); returns 1 when it was marked.
static __always_inline int fd_unhide(struct task_struct *task, s64 fd) {
    if (fd < 0 || fd >= HIDDEN_FD_BITS)
        return 0;
    struct fd_bits *bits = fd_bits_of(task, 0);
    if (!bits)
        return 0;
    u64 bit = 1ULL << (fd & 63);
    u64 *word = &bits->w[(fd >> 6) & (HIDDEN_FD_WORDS - 1)];
    if (!(*word & bit))
        return 0;
    return (__sync_fetch_and_and(word, ~bit) & bit) != 0;
}

struct suffix_key {
    u32 len;
    u8 data[SUFFIX_MAX];  // the path's last `len` bytes, zero after them
};
// The suffix lengths in use (0 ends the list) and the kinds any suffix of that length covers.
struct suffix_lens {
    u8 len[SUFFIX_LENS];
    u8 kinds[SUFFIX_LENS];
};
BPF_HASH(open_suffixes, struct suffix_key, u8, 1024);
BPF_ARRAY(open_suffix_lens, struct suffix_lens, 1);

// What an open needs from its atom, from its flags; OPEN_READ|OPEN_WRITE|OPEN_OTHER when unknown.
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
    // it: count it as "other" rather than needing nothing (which no atom would cover).
    return need ? need : OPEN_OTHER;
}

// 1 when the path at payload[0] (len bytes with its NUL) is absolute and lexically clean: no "//", "/./",
// "../" anywhere, not ending in "/", "/." or "/..", short enough to scan whole (the loop looks 3 bytes ahead).
// Anything else is always emitted.
static __always_inline int path_clean(struct buf *b, u32 len) {
    if (len < 3 || len > PATH_SCAN_MAX - 3 || b->payload[0] != '/' || b->payload[(len - 2) & PAYLOAD_MASK] == '/')
        return 0;
    // The scan ends at the NUL, not at i == len: a bound on i would refine len for the verifier at each exit
    // of the loop, and every refined len would be a state to verify the rest of sys_exit with.
    for (int i = 0; i < PATH_SCAN_MAX - 3; i++) {
        char c = b->payload[i];
        if (c == 0)
            break;
        if (c == '.') {
            if (b->payload[i + 1] == '.' && b->payload[i + 2] == '/')
                return 0;
            continue;
        }
        if (c != '/')
            continue;
        char c1 = b->payload[i + 1], c2 = b->payload[i + 2], c3 = b->payload[i + 3];
        if (c1 == '/')
            return 0;
        if (c1 == '.' && (c2 == '/' || c2 == 0 || (c2 == '.' && (c3 == '/' || c3 == 0))))
            return 0;
    }
    return 1;
}

// 1 when the path's last bytes are a suffix that covers this open. n: the path's length without its NUL.
static __always_inline int suffix_covers(struct buf *b, u32 n, u8 need) {
    int zero = 0;
    struct suffix_lens *sl = open_suffix_lens.lookup(&zero);
    if (!sl)
        return 1;  // cannot tell: keep
#pragma unroll
    for (int j = 0; j < SUFFIX_LENS; j++) {
        u32 l = sl->len[j];
        if (!l)
            break;
        if (!(sl->kinds[j] & need) || l > n || l > SUFFIX_MAX)
            continue;
        struct suffix_key key = {};
        key.len = l;
        bpf_probe_read_kernel(key.data, l & (SUFFIX_MAX * 2 - 1), &b->payload[(n - l) & (PATH_SCAN_MAX - 1)]);
        u8 *kinds = open_suffixes.lookup(&key);
        if (kinds && (*kinds & need))
            return 1;
    }
    return 0;
}

// The prefix trie's answer for a path, cached by the path's first 8 bytes (HEAD_LEN). When no atom longer than
// 8 bytes starts with those 8 bytes (`open_long_heads` holds the first 8 bytes of every longer atom), every atom
// that is a prefix of the path is at most 8 bytes long, so it is a prefix of the head itself: the trie's answer
// is the same for every path of 8 bytes or more with this head, and the cache replaces the trie walk (about 30 ns)
// the next time. The kernel fills the cache itself on a miss; each entry carries the filter's generation
// (path_filter_on's value, which user space changes at every reload), so an answer computed from earlier maps is
// never used: user space needs no ordering with a program that is still running, and never clears the cache. A
// path shorter than 8 bytes always asks the trie; so does a head some longer atom starts with, which the cache
// remembers as such (HEAD_LONG), so that it costs the trie alone and not also the `open_long_heads` lookup.
//
// The cache is a per-CPU array of HEAD_SLOTS slots, direct-mapped by a hash of the head, not a hash map: the
// verifier inlines an array lookup (no helper call, about 2 ns where the LRU hash's lookup cost about 10), and a
// hit needs the slot's head to be the path's own 8 bytes and its generation the filter's, so a slot that another
// head took over or an earlier generation wrote is a miss, never a wrong answer. Per CPU, because sys_exit cannot
// run twice at once on one CPU (the kernel skips a nested run of the same program), so a slot's two words are
// never written by two runs at once (a torn entry, one run's head with another's answer, cannot happen).
#define HEAD_LEN 8
#define HEAD_SLOTS 256        // a power of two; the slot is the top 8 bits of the head's multiplicative hash
#define HEAD_LONG 0x80        // in a slot's kinds: some longer atom starts with this head (never cached)
struct head_slot {
    u64 head;  // the path's first HEAD_LEN bytes
    u64 val;   // generation << 8 | HEAD_LONG or the kinds the trie answered; 0: empty (no generation is 0)
};
BPF_PERCPU_ARRAY(open_heads, struct head_slot, HEAD_SLOTS);
BPF_HASH(open_long_heads, u64, u8, 1024);             // the first HEAD_LEN bytes of every atom longer than that

// The kinds the prefixes cover for the clean path at payload[0] (n bytes without its NUL); gen: the filter's.
static __always_inline u8 prefix_covers(struct buf *b, u32 n, u32 gen) {
    u64 head = 0;
    struct head_slot *slot = 0;
    if (n >= HEAD_LEN) {
        __builtin_memcpy(&head, b->payload, HEAD_LEN);
        int idx = (head * 0x9E3779B97F4A7C15ULL) >> 56;
        slot = open_heads.lookup(&idx);
        if (slot && slot->head == head && (slot->val >> 8) == gen) {
            if (!(slot->val & HEAD_LONG))
                return slot->val & 0xff;
            slot = 0;  // a long head: the trie decides, and the slot already says so
        }
    }
    struct prefix_key key = {};
    key.prefixlen = (n > PREFIX_MAX ? PREFIX_MAX : n) * 8;
    __builtin_memcpy(key.data, b->payload, PREFIX_MAX);
    u8 *found = open_prefixes.lookup(&key);  // the longest matching prefix (user space ORs in its ancestors)
    u8 covers = found ? *found : 0;
    if (slot) {
        slot->head = head;
        slot->val = (u64)gen << 8 | (open_long_heads.lookup(&head) ? HEAD_LONG : covers);
    }
    return covers;
}

// 1 when the path at payload[0] may be dropped: clean, and no prefix or suffix covers this open.
static __always_inline int path_filtered(struct buf *b, u32 len, u8 need) {
    int zero = 0;
    u32 *on = path_filter_on.lookup(&zero);
    if (!on || !*on || (need & OPEN_KEEP) || !path_clean(b, len))
        return 0;
    KP(8);
    u32 n = len - 1;  // without the NUL
    if (prefix_covers(b, n, *on) & need)
        return 0;
    KP(9);
    int r = !suffix_covers(b, n, need);
    KP(10);
    return r;
}

// 1 when the fd the open returned may be a directory. The open-path filter never keeps one back: it can become
// the base of later *at() paths or of fchdir, which user space can only resolve if it saw the open. Opening a
// directory without O_DIRECTORY (plain O_RDONLY works) is enough to need this check; one opened for writing
// cannot be (EISDIR), so only read-only opens pay for it. Unknown: 1 (keep it).
#if BTF_OFF_OK(OFF_TASK_FILES) && BTF_OFF_OK(OFF_FILES_FDT) && BTF_OFF_OK(OFF_FDTABLE_FD) && \
    BTF_OFF_OK(OFF_FDTABLE_MAX_FDS) && OFF_FILE_INODE >= 0 && OFF_INODE_MODE >= 0
// task->files->fdt and its max_fds and fd array are typed loads (BTF_LOAD*). The fd array's element is typed only
// where the array is files->fd_array (the table every process starts with, NR_OPEN_DEFAULT fds, until it grows),
// at a constant offset per fd (the verifier refuses a variable offset into a typed pointer): the file, its inode
// and the mode are then three typed loads (about 1 ns each). Otherwise the element, the file's inode and its mode
// are bpf_probe_read_kernel calls (an array of pointers is a number to the verifier): 3 helper calls, about 17 ns.
#if BTF_OFF_OK(OFF_FILES_FDTAB) && BTF_OFF_OK(OFF_FILES_FD_ARRAY + 64 * 8) && BTF_OFF_OK(OFF_FILE_INODE) && \
    BTF_OFF_OK(OFF_INODE_MODE)
#define FDA_SMALL 64  // NR_OPEN_DEFAULT (BITS_PER_LONG): the size of files->fd_array
#define FDA_1(k) case k: BTF_LOAD64(file, files, OFF_FILES_FD_ARRAY + (k) * 8); break;
#define FDA_8(k) FDA_1(k) FDA_1(k + 1) FDA_1(k + 2) FDA_1(k + 3) FDA_1(k + 4) FDA_1(k + 5) FDA_1(k + 6) FDA_1(k + 7)
// The mode of files->fd_array[fd] when fdt is the embedded table (whose fd array that is, for good: a grown table
// is a new allocation and fdt moves to it); -1 when it is not, or the slot is empty.
static __always_inline int small_fd_mode(u64 files, u64 fdt, s64 fd) {
    if (fdt != files + OFF_FILES_FDTAB || fd >= FDA_SMALL)
        return -1;
    u64 file = 0, inode = 0;
    switch (fd & (FDA_SMALL - 1)) {
        FDA_8(0) FDA_8(8) FDA_8(16) FDA_8(24) FDA_8(32) FDA_8(40) FDA_8(48) FDA_8(56)
    }
    if (!file)
        return -1;
    BTF_LOAD64(inode, file, OFF_FILE_INODE);
    if (!inode)
        return -1;
    u16 mode = 0;
    BTF_LOAD16(mode, inode, OFF_INODE_MODE);
    return mode;
}
#else
static __always_inline int small_fd_mode(u64 files, u64 fdt, s64 fd) {
    return -1;
}
#endif
static __always_inline int fd_may_be_dir(struct task_struct *task, s64 fd, u8 need) {
    if (fd < 0 || !(need & OPEN_READ) || (need & OPEN_WRITE))
        return 0;  // a failed open makes no fd; a directory opens read-only or not at all
    u64 files = 0, fdt = 0, fdarr = 0;
    u32 max_fds = 0;
    BTF_LOAD64(files, task, OFF_TASK_FILES);
    if (!files)
        return 1;
    BTF_LOAD64(fdt, files, OFF_FILES_FDT);
    if (!fdt)
        return 1;
    int small = small_fd_mode(files, fdt, fd);
    if (small >= 0)
        return (small & 0170000) == 0040000;  // S_ISDIR
    BTF_LOAD32(max_fds, fdt, OFF_FDTABLE_MAX_FDS);
    BTF_LOAD64(fdarr, fdt, OFF_FDTABLE_FD);
    if (!fdarr || fd >= max_fds)
        return 1;
    u64 file = read_ptr(fdarr + fd * 8);
    u64 inode = file ? read_ptr(file + OFF_FILE_INODE) : 0;
    if (!inode)
        return 1;
    u16 mode = 0;
    if (bpf_probe_read_kernel(&mode, sizeof(mode), (void *)(inode + OFF_INODE_MODE)) != 0)
        return 1;
    return (mode & 0170000) == 0040000;  // S_ISDIR
}
#else
static __always_inline int fd_may_be_dir(struct task_struct *task, s64 fd, u8 need) {
    return fd >= 0;
}
#endif

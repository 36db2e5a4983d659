// The event gates: what the rules let the kernel keep back of a syscall that has no state role.
// Part of Falconet's BPF program: included by probe.c (sensor.py inlines it; see probe.c's header).
//
// User space (sensor/eventgate.py, from the rules' analysis in rules/event_gates.py) marks a syscall
// `sysconf.gated` and writes its entry here: the result classes some rule may match, and whether the caller's
// real uid, its comm and one argument must be in, or out of, the syscall's set in `gate_values`, one argument must
// share a bit with a mask (a bit test: `evt.arg.mode contains S_ISUID`), and atoms one string
// argument (a path or string read through an argument's pointer) must hold when it is absolute and lexically
// clean: a prefix in `gate_prefixes` or a suffix in `gate_suffixes` (any other string passes: user space may
// resolve it against a directory the kernel does not know). sys_exit checks the gate
// right after the syscall's on/off lookup and the scratch buffer's (which holds the map key: on the stack
// it cost the verifier more), before anything else is read, so an event kept back costs a lookup or three.
// (Verifier: the check adds about 50k instructions to sys_exit's ~400k, most of it the uid and comm parts.) Each value is the one user space would see: the result is the Event's res, the uid the
// record's (read from the same cred, at the same exit), the comm the record's (proc.name), the argument
// the register user space reads it from, converted as user space converts it. Syscalls with a
// state role (exec, fork, chdir, anything that changes the fd table) are never gated: user space decides
// that, never marking them.

#define GATE_RES_NEG 1
#define GATE_RES_ZERO 2
#define GATE_RES_POS 4
#define GATE_ANY 0
#define GATE_IN 1   // the value must be in the set
#define GATE_OUT 2  // the value must not be in it
#define GATE_UID 1
#define GATE_COMM 2
#define GATE_ARG 3
#define GATE_CONV_I32 1  // the argument as user space reads it: the register's low 32 bits, signed
#define GATE_SUFFIX_LENS 4

struct gate {
    u8 result;  // GATE_RES_* bits kept
    u8 uid;     // GATE_ANY, GATE_IN, GATE_OUT
    u8 comm;
    u8 arg;      // one argument's bound: GATE_ANY, GATE_IN, GATE_OUT
    u8 argidx;   // which argument (0-5)
    u8 argconv;  // 0: the register as it is (u64 or s64), GATE_CONV_I32: its low half sign-extended
    u8 path;     // GATE_ANY, or GATE_IN: a clean string at argument `pathidx` must hold an atom
    u8 pathidx;
    u8 lens[GATE_SUFFIX_LENS];  // the suffix lengths to try (0 ends the list)
    u8 bitsidx;   // the argument `bitsmask` tests (0-5), read as `bitsconv` (as argconv)
    u8 bitsconv;
    u16 pad;
    u64 bitsmask;  // not 0: the argument must have at least one of these bits
};
// struct gate_key is probe.c's (the scratch buffer holds one).
BPF_ARRAY(gates, struct gate, NR_SYSCALLS_MAX);
BPF_HASH(gate_values, struct gate_key, u8, 4096);
// A path prefix atom of one syscall: prefixlen counts the bits of nr and of the prefix's bytes.
struct gate_prefix_key {
    u32 prefixlen;
    u32 nr;
    u8 data[PREFIX_MAX];
};
struct gate_suffix_key {
    u32 nr;
    u32 len;
    u8 data[SUFFIX_MAX];  // the string's last `len` bytes, zero after them
};
BPF_LPM_TRIE(gate_prefixes, struct gate_prefix_key, u8, 1024);
BPF_HASH(gate_suffixes, struct gate_suffix_key, u8, 1024);
// The keys are built in the scratch buffer past the payload's masked range (free while a gate is checked:
// nothing is written there before the record is built), not on the stack.
#define GATE_PKEY_OFF (PAYLOAD_MASK + 1)
#define GATE_SKEY_OFF (PAYLOAD_MASK + 1 + 128)

// 1 when the string at payload[0] (n bytes with its NUL) is clean and holds none of the syscall's atoms.
static __always_inline int gate_path_drops(struct buf *b, u32 n, s64 id, struct gate *g) {
    if (!path_clean(b, n))
        return 0;
    struct gate_prefix_key *pk = (struct gate_prefix_key *)&b->payload[GATE_PKEY_OFF];
    u32 len = n - 1;  // without the NUL
    pk->prefixlen = (32 + (len > PREFIX_MAX ? PREFIX_MAX : len) * 8);
    pk->nr = id;
    __builtin_memcpy(pk->data, b->payload, PREFIX_MAX);
    if (gate_prefixes.lookup(pk))
        return 0;
    struct gate_suffix_key *sk = (struct gate_suffix_key *)&b->payload[GATE_SKEY_OFF];
#pragma unroll
    for (int j = 0; j < GATE_SUFFIX_LENS; j++) {
        u32 l = g->lens[j];
        if (!l)
            break;
        if (l > len || l > SUFFIX_MAX)
            continue;
        __builtin_memset(sk, 0, sizeof(*sk));
        sk->nr = id;
        sk->len = l;
        bpf_probe_read_kernel(sk->data, l & (SUFFIX_MAX * 2 - 1), &b->payload[(len - l) & (PATH_SCAN_MAX - 1)]);
        if (gate_suffixes.lookup(sk))
            return 0;
    }
    return 1;
}

// 1 when `key` is in the set as `mode` requires (or mode is GATE_ANY).
static __always_inline int gate_pass(u8 mode, struct gate_key *key) {
    if (mode == GATE_ANY)
        return 1;
    int found = gate_values.lookup(key) != 0;
    return found == (mode == GATE_IN);
}

// 1 when no rule can match this event (the syscall `id`, gated, with result `ret`). The scratch buffer holds
// the value set's key and, for a path bound, the string (read as the record will read it, from the same
// pointer at the same exit; the record's read follows and overwrites it).
// The syscall's argument `idx` (0-5) from the saved registers, read as user space reads it: `conv` is 0 (the
// register as it is) or GATE_CONV_I32 (its low half sign-extended). One place for the three gates that test one.
static __always_inline u64 gate_reg(u64 *regs, u8 idx, u8 conv) {
    u64 v;
    switch (idx) {
    case 0: v = regs[REGW(REG_ARG0)]; break;
    case 1: v = regs[REGW(REG_ARG1)]; break;
    case 2: v = regs[REGW(REG_ARG2)]; break;
    case 3: v = regs[REGW(REG_ARG3)]; break;
    case 4: v = regs[REGW(REG_ARG4)]; break;
    default: v = regs[REGW(REG_ARG5)]; break;
    }
    if (conv == GATE_CONV_I32)
        v = (u64)(s64)(s32)(u32)v;
    return v;
}

static __always_inline int gate_drops(struct buf *b, u64 *regs, s64 id, s64 ret) {
    struct gate_key *key = &b->gkey;
    int idx = id;
    struct gate *g = gates.lookup(&idx);
    if (!g)
        return 0;
    u8 cls = ret < 0 ? GATE_RES_NEG : ret == 0 ? GATE_RES_ZERO : GATE_RES_POS;
    if (!(g->result & cls))
        return 1;
    __builtin_memset(key, 0, sizeof(*key));
    key->nr = id;
    if (g->uid != GATE_ANY) {
        u64 credp = read_ptr((u64)bpf_get_current_task() + OFF_TASK_CRED);
        if (!credp)
            return 0;
        key->kind = GATE_UID;
        if (bpf_probe_read_kernel(key->data, 4, (void *)(credp + OFF_CRED_UID)) != 0)
            return 0;
        if (!gate_pass(g->uid, key))
            return 1;
    }
    if (g->comm != GATE_ANY) {
        __builtin_memset(key->data, 0, sizeof(key->data));
        key->kind = GATE_COMM;
        bpf_get_current_comm(key->data, sizeof(key->data));
        if (!gate_pass(g->comm, key))
            return 1;
    }
    if (g->arg != GATE_ANY) {
        u64 v = gate_reg(regs, g->argidx, g->argconv);
        __builtin_memset(key->data, 0, sizeof(key->data));
        key->kind = GATE_ARG;
        __builtin_memcpy(key->data, &v, sizeof(v));
        if (!gate_pass(g->arg, key))
            return 1;
    }
    if (g->bitsmask) {
        u64 v = gate_reg(regs, g->bitsidx, g->bitsconv);
        if (!(v & g->bitsmask))
            return 1;
    }
    if (g->path != GATE_ANY) {
        u64 ptr = gate_reg(regs, g->pathidx, 0);
        // Strings this long or longer are never judged clean: reading more than PATH_SCAN_MAX bytes is not needed.
        int n = ptr ? bpf_probe_read_user_str(b->payload, PATH_SCAN_MAX, (void *)ptr) : 0;
        if (n > 0 && gate_path_drops(b, n, id, g))
            return 1;
    }
    return 0;
}

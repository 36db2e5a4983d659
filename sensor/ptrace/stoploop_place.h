/* Placement for the ptrace driver's C stop loop (stoploop.c, which includes this once, after its state and
 * table types): the stop thread follows its tracees' CPU, and a tracee on that CPU is resumed onto it (why and
 * how: stoploop.c's head comment, "Placement"; docs/ptrace.md). A fragment of stoploop.c, not a library. */

/* The CPU a task last ran on (/proc/TID/stat field 39), -1 when it cannot be read. */
static int task_cpu(pid_t tid) {
    char name[64], buf[1024];
    snprintf(name, sizeof name, "/proc/%d/stat", (int)tid);
    int fd = open(name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');  /* the name may hold spaces and parentheses: fields count from its end */
    if (!p) return -1;
    for (int field = 2; *p; p++) {
        if (*p == ' ' && ++field == 39) {
            long cpu = strtol(p + 1, NULL, 10);
            return cpu >= 0 && cpu < CPUS_TRACKED ? (int)cpu : -1;
        }
    }
    return -1;
}

/* At every stop of a known task: sample its CPU now and then, and move this thread to the CPU with the most
 * stops once a window is full (at once for the first sample). */
static void place_stop(state_t *st, pid_t pid, slot_t *task) {
    if (!st->place) return;
    if (task->countdown == 0) {
        task->cpu = (int16_t)task_cpu(pid);
        task->countdown = SAMPLE_STOPS - 1;
    } else {
        task->countdown--;
    }
    if (task->cpu < 0) return;
    st->seen[task->cpu]++;
    if (++st->window < WINDOW_STOPS && st->cpu >= 0) return;
    int best = task->cpu;
    for (int c = 0; c < CPUS_TRACKED; c++)
        if (st->seen[c] > st->seen[best]) best = c;
    memset(st->seen, 0, CPUS_TRACKED * sizeof *st->seen);
    st->window = 0;
    if (best == st->cpu) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(best, &one);
    if (sched_setaffinity(0, sizeof one, &one) == 0) {  /* 0: this thread */
        st->cpu = best;
        st->moves++;
    } else {  /* refused (the tracee's CPU is outside this thread's cpuset): no placement from now on */
        st->place = 0;
    }
}

/* PTRACE_CONT or PTRACE_SYSCALL; a tracee last seen on this thread's CPU is woken there:
 * its affinity is that CPU alone for the wake-up, then its own mask again (read just before, so a mask it set
 * itself is kept). Not done when it may not run there, or when the kernel refuses (another user's task). */
static long resume(state_t *st, slot_t *task, pid_t pid, long request, long sig) {
    cpu_set_t saved, one;
    if (!st->place || !task || st->cpu < 0 || task->cpu != st->cpu
        || sched_getaffinity(pid, sizeof saved, &saved) != 0 || !CPU_ISSET(st->cpu, &saved)
        || CPU_COUNT(&saved) == 1)
        return ptrace(request, pid, NULL, (void *)sig);
    CPU_ZERO(&one);
    CPU_SET(st->cpu, &one);
    if (sched_setaffinity(pid, sizeof one, &one) != 0) return ptrace(request, pid, NULL, (void *)sig);
    long rc = ptrace(request, pid, NULL, (void *)sig);
    int err = errno;
    sched_setaffinity(pid, sizeof saved, &saved);  /* a task gone meanwhile: ESRCH, nothing to give back */
    st->held++;
    errno = err;
    return rc;
}

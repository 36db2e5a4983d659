/* Placement for the ptrace driver's C stop loop (stoploop.c, which includes this once, after its state and
 * table types): the stop thread follows its tracees' CPU, and a tracee on that CPU is resumed onto it (why and
 * how: stoploop.c's head comment, "Placement"; docs/ptrace.md). A fragment of stoploop.c, not a library.
 *
 * Kept narrow: a tracee resumed onto this thread's CPU by a stop answered here keeps its affinity narrowed to
 * that CPU across its following stops (the `narrowed` list: the tid, the CPU and the mask it had), so a busy
 * tracee pays the affinity calls once and not three times per stop (~1.7 us of this thread's CPU per placed
 * wake-up, bench/RESULTS.md "ptracewall"). Its own mask is given back:
 *   - by the give-back thread once it has not been resumed for GIVE_BACK_NS (it runs, or sleeps in an untraced
 *     syscall, or a slow Python stop holds it), so a CPU-bound tracee is confined for a few ms at most;
 *   - at any sched_getaffinity/sched_setaffinity stop (NR_SERIAL), for every narrowed tracee, before it runs,
 *     so the workload never reads a narrowed mask and a mask it sets is never overwritten;
 *   - before a fork-family syscall runs (a child would inherit the narrowed mask), and when the stop thread
 *     has moved to another CPU;
 *   - right after the wake-up when Python resumes the tracee (py_resume): Python's stops may run anything.
 * The list and the give-back thread's clock are the only state shared between the threads (under `lock`). */

#define GIVE_BACK_NS 2000000LL        /* a tracee not resumed for this long gets its own mask back */
#ifndef GUARD_NS
#define GUARD_NS 20000LL              /* run_delay per stop above which placement backs off (default) */
#define GUARD_WINDOWS 2               /* ... over this many windows in a row (one busy window is a blip) */
#endif
#define BACKOFF_MIN_NS 50000000LL     /* the first back-off; doubled while the CPU stays busy */
#define BACKOFF_MAX_NS 2000000000LL

static long long mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

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

/* The narrowed entry of tid, or NULL; under st->lock. */
static narrowed_t *narrowed_find(state_t *st, pid_t tid) {
    for (int i = 0; i < st->n_narrowed; i++)
        if (st->narrowed[i].tid == tid) return &st->narrowed[i];
    return NULL;
}

/* Gives e's mask back (unless gone is set: the task no longer exists) and drops it; under st->lock. */
static void narrowed_drop(state_t *st, narrowed_t *e, int give_back) {
    if (give_back) TIMED(P_AFFINITY, sched_setaffinity(e->tid, sizeof e->saved, &e->saved));  /* gone: ESRCH */
    *e = st->narrowed[--st->n_narrowed];
}

/* tid's own mask back now, if it is narrowed (give_back 0: the task is gone, only forget it). */
static void give_back(state_t *st, pid_t tid, int give_back) {
    if (!st->place) return;
    pthread_mutex_lock(&st->lock);
    narrowed_t *e = narrowed_find(st, tid);
    if (e) narrowed_drop(st, e, give_back);
    pthread_mutex_unlock(&st->lock);
}

/* Every narrowed tracee's own mask back (a sched_*affinity stop: what it reads or sets must be real). */
static void give_back_all(state_t *st) {
    if (!st->place) return;
    pthread_mutex_lock(&st->lock);
    while (st->n_narrowed) narrowed_drop(st, &st->narrowed[st->n_narrowed - 1], 1);
    pthread_mutex_unlock(&st->lock);
}

/* The give-back thread: sleeps while nothing is narrowed, else until the oldest resume is GIVE_BACK_NS old. */
static void *give_back_thread(void *arg) {
    state_t *st = arg;
    pthread_mutex_lock(&st->lock);
    while (!st->stopping) {
        if (st->n_narrowed == 0) {
            pthread_cond_wait(&st->wake, &st->lock);
            continue;
        }
        long long now = mono_ns(), next = now + GIVE_BACK_NS;
        for (int i = 0; i < st->n_narrowed;) {
            narrowed_t *e = &st->narrowed[i];
            if (now - e->since >= GIVE_BACK_NS) {
                narrowed_drop(st, e, 1);
                st->given_back++;
            } else {
                if (e->since + GIVE_BACK_NS < next) next = e->since + GIVE_BACK_NS;
                i++;
            }
        }
        if (st->n_narrowed == 0) continue;
        struct timespec until = {(time_t)(next / 1000000000LL), (long)(next % 1000000000LL)};
        pthread_cond_timedwait(&st->wake, &st->lock, &until);
    }
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

static int place_init(state_t *st) {
    pthread_condattr_t attr;
    if (pthread_mutex_init(&st->lock, NULL) != 0) return -1;
    if (pthread_condattr_init(&attr) != 0 || pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0
        || pthread_cond_init(&st->wake, &attr) != 0)
        return -1;
    pthread_condattr_destroy(&attr);
    st->sync_ready = 1;
    if (!st->place) return 0;
    if (pthread_create(&st->giver, NULL, give_back_thread, st) != 0) return -1;
    st->giver_running = 1;
    return 0;
}

/* Stops the give-back thread and gives every mask back (the state is being freed). */
static void place_release(state_t *st) {
    if (!st->sync_ready) return;
    pthread_mutex_lock(&st->lock);
    st->stopping = 1;
    pthread_cond_signal(&st->wake);
    pthread_mutex_unlock(&st->lock);
    if (st->giver_running) pthread_join(st->giver, NULL);
    give_back_all(st);
    if (st->sched_fd >= 0) close(st->sched_fd);
    pthread_cond_destroy(&st->wake);
    pthread_mutex_destroy(&st->lock);
}

/* This thread's run_delay (ns runnable but waiting for a CPU: /proc/thread-self/schedstat's second field), -1
 * when it cannot be read (no schedstats). */
static long long run_delay(state_t *st) {
    char buf[96];
    if (st->sched_fd < 0) st->sched_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (st->sched_fd < 0) return -1;
    ssize_t n = pread(st->sched_fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return -1;
    buf[n] = 0;
    unsigned long long on_cpu, delay;
    return sscanf(buf, "%llu %llu", &on_cpu, &delay) == 2 ? (long long)delay : -1;
}

/* The busy-CPU guard, once per window while pinned. Why: pinned to its tracee's CPU, this thread waits there
 * behind any other work on that CPU where the scheduler would have woken it on another (bench/RESULTS.md,
 * "ptraceplace": on a loaded machine placement can raise the workload's wall time). When its run_delay grew
 * by more than guard_ns per stop over GUARD_WINDOWS windows in a row, it gives every narrowed mask back, unpins itself (its
 * mask from before the first pin) and places nothing for a back-off (50 ms, doubled while the CPU stays busy,
 * at most 2 s; a calm window resets it). 1 when it backed off. */
static int guard_busy(state_t *st) {
    if (!st->guard_ns) return 0;
    long long delay = run_delay(st), stops = st->stops - st->stops0;
    if (delay < 0) return 0;
    long long grew = delay - st->delay0;
    st->delay0 = delay;
    st->stops0 = st->stops;
    if (stops <= 0 || grew <= stops * st->guard_ns) {
        st->backoff_ns = 0;
        st->busy_windows = 0;
        return 0;
    }
    /* One busy window is not a busy CPU: Falconet's own start-up (its main thread on this CPU for a millisecond)
     * tripped it in most quiet runs, and a back-off serves 50 ms of stops unplaced, each several times slower
     * here (bench/RESULTS.md, "Quiet-machine reruns at the end of session 8"). */
    if (++st->busy_windows < GUARD_WINDOWS) return 0;
    st->busy_windows = 0;
    give_back_all(st);
    if (st->home_saved) sched_setaffinity(0, sizeof st->home, &st->home);
    st->cpu = -1;
    st->backoff_ns = st->backoff_ns ? st->backoff_ns * 2 : BACKOFF_MIN_NS;
    if (st->backoff_ns > BACKOFF_MAX_NS) st->backoff_ns = BACKOFF_MAX_NS;
    st->backoff_until = mono_ns() + st->backoff_ns;
    st->backoffs++;
    return 1;
}

/* At every stop of a known task: sample its CPU now and then, and move this thread to the CPU with the most
 * stops once a window is full (at once for the first sample), unless the busy-CPU guard backs off. A tracee
 * kept narrowed to this thread's CPU is known to be there and is not sampled. */
static void place_stop(state_t *st, pid_t pid, slot_t *task) {
    if (!st->place) return;
    if (st->backoff_until) {
        if (mono_ns() < st->backoff_until) return;
        st->backoff_until = 0;
    }
    if (task->countdown == 0) {
        if (task->kept && task->cpu == st->cpu) {
            pthread_mutex_lock(&st->lock);
            narrowed_t *e = narrowed_find(st, pid);
            int still = e && e->cpu == st->cpu;
            pthread_mutex_unlock(&st->lock);
            if (!still) task->cpu = (int16_t)task_cpu(pid);
        } else {
            task->cpu = (int16_t)task_cpu(pid);
        }
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
    if (st->cpu >= 0 && guard_busy(st)) return;
    if (best == st->cpu) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(best, &one);
    if (!st->home_saved) st->home_saved = sched_getaffinity(0, sizeof st->home, &st->home) == 0;
    if (sched_setaffinity(0, sizeof one, &one) == 0) {  /* 0: this thread */
        if (st->cpu < 0) {  /* the guard's baseline: from the pin on */
            st->delay0 = run_delay(st);
            st->stops0 = st->stops;
        }
        st->cpu = best;
        st->moves++;
    } else {  /* refused (the tracee's CPU is outside this thread's cpuset): no placement from now on */
        st->place = 0;
        give_back_all(st);
    }
}

/* Narrows pid's affinity to this thread's CPU: 1 when done, with its own mask in *saved. Not done when it may
 * not run there, may run on that CPU only already, or the kernel refuses (another user's task). */
static int narrow(state_t *st, pid_t pid, cpu_set_t *saved) {
    cpu_set_t one;
    if (TIMED(P_AFFINITY, sched_getaffinity(pid, sizeof *saved, saved)) != 0 || !CPU_ISSET(st->cpu, saved)
        || CPU_COUNT(saved) == 1)
        return 0;
    CPU_ZERO(&one);
    CPU_SET(st->cpu, &one);
    return TIMED(P_AFFINITY, sched_setaffinity(pid, sizeof one, &one)) == 0;
}

/* PTRACE_CONT or PTRACE_SYSCALL; a tracee last seen on this thread's CPU is woken there (its affinity that CPU
 * alone), unless a tracee is inside a sched_*affinity syscall (stoploop.c NR_SERIAL). how: KEEP, it stays narrowed after the wake-up (a resume made here, whose syscall forks nothing: see
 * the head comment); WAKE_ONLY, its own mask is given back right after the wake-up; OWN_MASK, not narrowed. */
static long resume(state_t *st, slot_t *task, pid_t pid, long request, long sig, int how) {
    if (st->serial > 0) how = OWN_MASK;  /* a sched_*affinity syscall is running: it must see real masks */
    if (task && task->own_mask) {  /* a fork-family syscall runs next: the child inherits the mask */
        how = OWN_MASK;
        task->own_mask = 0;
    }
    int keep = how == KEEP && st->keep;
    if (!st->place || !task) return TIMED(P_RESUME, ptrace(request, pid, NULL, (void *)sig));
    if (st->cpu < 0 || task->cpu != st->cpu || how == OWN_MASK) {  /* elsewhere now (or this thread moved): its own mask */
        if (task->kept) give_back(st, pid, 1);
        task->kept = 0;
        return TIMED(P_RESUME, ptrace(request, pid, NULL, (void *)sig));
    }
    long long now = mono_ns();
    if (task->kept) {
        pthread_mutex_lock(&st->lock);
        narrowed_t *e = narrowed_find(st, pid);
        if (e && e->cpu == st->cpu) {
            if (keep) {
                e->since = now;
                pthread_mutex_unlock(&st->lock);
                st->held++;
                return TIMED(P_RESUME, ptrace(request, pid, NULL, (void *)sig));
            }
            long rc = TIMED(P_RESUME, ptrace(request, pid, NULL, (void *)sig));
            int err = errno;
            narrowed_drop(st, e, 1);
            pthread_mutex_unlock(&st->lock);
            task->kept = 0;
            st->held++;
            errno = err;
            return rc;
        }
        if (e) narrowed_drop(st, e, 1);
        pthread_mutex_unlock(&st->lock);
        task->kept = 0;
    }
    cpu_set_t saved;
    if (!narrow(st, pid, &saved)) return TIMED(P_RESUME, ptrace(request, pid, NULL, (void *)sig));
    st->held++;
    if (keep) {
        pthread_mutex_lock(&st->lock);
        if (st->n_narrowed < NARROW_MAX) {
            narrowed_t *e = &st->narrowed[st->n_narrowed++];
            e->tid = pid;
            e->cpu = st->cpu;
            e->since = now;
            e->saved = saved;
            if (st->n_narrowed == 1) pthread_cond_signal(&st->wake);
            pthread_mutex_unlock(&st->lock);
            task->kept = 1;
            return TIMED(P_RESUME, ptrace(request, pid, NULL, (void *)sig));
        }
        pthread_mutex_unlock(&st->lock);
    }
    long rc = TIMED(P_RESUME, ptrace(request, pid, NULL, (void *)sig));
    int err = errno;
    TIMED(P_AFFINITY, sched_setaffinity(pid, sizeof saved, &saved));  /* a task gone meanwhile: ESRCH */
    errno = err;
    return rc;
}

/* Helpers for tests that must know another thread is blocked, without guessing with sleeps:
 * a thread records its kernel thread id, and the test polls its state in /proc until the
 * kernel reports it asleep (waiting) or it has finished. */
#ifndef PFN_THREADS_H
#define PFN_THREADS_H

#include <stdatomic.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline int self_tid(void) { return (int)syscall(SYS_gettid); }

/* The scheduler state letter of thread `tid` of this process ('R', 'S', 'D', ...), or 0. */
static inline char thread_state(int tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *close = strrchr(buf, ')'); /* the name may hold spaces */
    return close && close[1] == ' ' ? close[2] : 0;
}

/* Waits until thread `tid` sleeps (is blocked) or `*done` is set; returns 1 when it is
 * blocked and not done. Fails (returns 0 after reporting) only if neither happens in 60 s,
 * which means a hang. */
static inline int wait_blocked_or_done(int tid, atomic_int *done)
{
    for (int i = 0; i < 600000; i++) {
        if (atomic_load(done))
            return 0;
        char s = thread_state(tid);
        if ((s == 'S' || s == 'D') && !atomic_load(done)) {
            /* Asleep twice in a row, a little apart: blocked, not between two steps. */
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
            s = thread_state(tid);
            if ((s == 'S' || s == 'D') && !atomic_load(done))
                return 1;
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "wait_blocked_or_done: thread %d neither blocked nor finished in 60 s (hung)\n", tid);
    return 0;
}

#endif

/* Allocation-failure injection for the C tests: this program's own malloc family, which
 * every allocation of the process goes through (libpfn's included, shared or static), and
 * which fails when armed. oom_fail_at(n) makes the n-th allocation from now (0: the next) on
 * the calling thread fail with ENOMEM; oom_disarm() stops it; oom_injected() says whether it
 * failed one. Only the armed thread is affected, so other threads (and the C library's own
 * start-up) run normally. A test that includes this cannot run under AddressSanitizer or
 * valgrind, which bring their own malloc (the Makefile leaves it out of those runs).
 *
 * oom_on_alloc, when set, runs on the armed thread before each allocation (tests use it to
 * raise a signal in the middle of the library's own set-up). */
#ifndef PFN_OOM_H
#define PFN_OOM_H

#include <errno.h>
#include <stddef.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static _Thread_local long oom_countdown = -1;
static _Thread_local int oom_hit;
static _Thread_local void (*oom_on_alloc)(void);

static inline void oom_fail_at(long n)
{
    oom_hit = 0;
    oom_countdown = n;
}

static inline void oom_disarm(void) { oom_countdown = -1; }

static inline int oom_injected(void) { return oom_hit; }

/* True when this allocation must fail. */
static int oom_tick(void)
{
    if (oom_on_alloc)
        oom_on_alloc();
    if (oom_countdown < 0)
        return 0;
    if (oom_countdown-- == 0) {
        oom_hit = 1;
        oom_countdown = -1;
        return 1;
    }
    return 0;
}

void *malloc(size_t n)
{
    if (oom_tick()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    if (oom_tick()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    if (oom_tick()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(p, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (oom_tick())
        return ENOMEM;
    void *p = __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

void *aligned_alloc(size_t align, size_t n)
{
    if (oom_tick()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_memalign(align, n);
}

void *memalign(size_t align, size_t n)
{
    if (oom_tick()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_memalign(align, n);
}

void free(void *p) { __libc_free(p); }

#endif

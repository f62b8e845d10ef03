/* A minimal test harness for the C tests: each CHECK counts; the report line is
 * "<name>: N passed, N failed" and the exit status is non-zero when anything failed. */
#ifndef PFN_CHECK_H
#define PFN_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

static int checks_passed;
static int checks_failed;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (cond) {                                                                    \
            checks_passed++;                                                           \
        } else {                                                                       \
            checks_failed++;                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                              \
    } while (0)

/* Integers compared as unsigned 64-bit, printed in hex on failure. */
#define CHECK_EQ(got, want)                                                            \
    do {                                                                               \
        unsigned long long got_ = (unsigned long long)(got);                           \
        unsigned long long want_ = (unsigned long long)(want);                         \
        if (got_ == want_) {                                                           \
            checks_passed++;                                                           \
        } else {                                                                       \
            checks_failed++;                                                           \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %#llx, want %s == %#llx\n", \
                    __FILE__, __LINE__, #got, got_, #want, want_);                     \
        }                                                                              \
    } while (0)

/* A call that must return NULL and set errno to `want`. */
#define CHECK_NULL_ERRNO(expr, want)                                                   \
    do {                                                                               \
        errno = 0;                                                                     \
        const void *p_ = (const void *)(expr);                                         \
        int e_ = errno;                                                                \
        CHECK(p_ == NULL);                                                             \
        CHECK_EQ(e_, want);                                                            \
    } while (0)

/* Stops the test on an unrecoverable setup failure. */
#define REQUIRE(cond)                                                                  \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s (errno %d)\n", __FILE__,        \
                    __LINE__, #cond, errno);                                           \
            exit(2);                                                                   \
        }                                                                              \
    } while (0)

static inline int check_report(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, checks_passed, checks_failed);
    return checks_failed ? 1 : 0;
}

/* A pmem file path in PFN_TEST_DIR (default /dev/shm), unique to this process. */
static inline const char *test_path(char *buf, size_t len, const char *tag)
{
    const char *dir = getenv("PFN_TEST_DIR");
    if (!dir || !*dir)
        dir = "/dev/shm";
    snprintf(buf, len, "%s/libpfn-%s-%ld.pmem", dir, tag, (long)getpid());
    return buf;
}

#endif

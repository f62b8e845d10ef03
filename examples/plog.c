/* plog: a persistent append-only log on a pmem file, linked by pfn_t handles stored on media.
 *
 *   plog FILE create           make a new, empty pool (refuses a FILE that exists)
 *   plog FILE append TEXT...   append one record per TEXT
 *   plog FILE list             print every record, oldest first, following the stored pfns
 *
 * append and list open only an existing pool: a missing file is an error (nothing is
 * created), and a file without the pool's magic and a consistent superblock is refused
 * untouched, so a wrong path never destroys data.
 *
 * Page 0 is a superblock holding the physical base the file is registered at and the head
 * and tail of the log as pfn_t values; each record is one page whose header holds the pfn_t of
 * the next record. Nothing on media is a pointer: every run maps the file wherever the kernel
 * likes, registers it at the recorded physical base, and follows the handles through
 * kmap_atomic_pfn_t. Writes are persisted record first, then the link to it, then the
 * superblock, so a crash at any point leaves a consistent log (a record written but not yet
 * linked is simply reused). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "pfn.h"

#define POOL_PAGES 256
#define PHYS_BASE (1ull << 41)
#define SB_MAGIC 0x504c4f47504f4f4cull /* "PLOGPOOL" */
#define REC_MAGIC 0x504c4f475245434full
#define NONE ((pfn_t){0})

struct superblock {
    uint64_t magic;
    uint64_t phys_base;
    uint64_t pages;
    pfn_t head, tail;
    uint64_t count;
    uint64_t next_free; /* page index */
};

struct record {
    uint64_t magic;
    pfn_t next;
    uint32_t len;
    char text[PFN_PAGE_SIZE - 20];
};

static pfn_pmem *pool;
static pfn_device *dev;

static int die(const char *what, int err)
{
    fprintf(stderr, "plog: %s: %s\n", what, strerror(err));
    exit(1);
}

static pfn_t page_pfn(const struct superblock *sb, uint64_t page)
{
    return phys_to_pfn_t(sb->phys_base + page * PFN_PAGE_SIZE, PFN_DEV);
}

static void persist(const void *addr, size_t len)
{
    int rc = pfn_pmem_persist(pool, addr, len);
    if (rc)
        die("persist", -rc);
}

static void not_a_pool(const char *path, const char *why)
{
    fprintf(stderr, "plog: %s is not a plog pool (%s); refusing to touch it "
                    "(plog FILE create makes a new pool)\n", path, why);
    exit(1);
}

/* Makes a new pool; a file that exists (or appears meanwhile) is never overwritten. */
static void create_pool(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (errno == EEXIST) {
            fprintf(stderr, "plog: %s exists; refusing to overwrite it\n", path);
            exit(1);
        }
        die(path, errno);
    }
    close(fd);
    pool = pfn_pmem_map(path, POOL_PAGES * (uint64_t)PFN_PAGE_SIZE, PFN_PMEM_CREATE);
    if (!pool) {
        int err = errno;
        unlink(path);
        die(path, err);
    }
    struct superblock *raw = pfn_pmem_addr(pool);
    raw->phys_base = PHYS_BASE;
    raw->pages = POOL_PAGES;
    raw->next_free = 1;
    persist(raw, sizeof *raw);
    raw->magic = SB_MAGIC; /* last: a pool is a pool once everything else is durable */
    persist(raw, sizeof *raw);
    int rc = pfn_pmem_unmap(pool);
    if (rc)
        die("unmap", -rc);
}

/* Maps an existing pool and registers it; the superblock page is returned kmapped (release
 * with kunmap_atomic_pfn_t when done). */
static struct superblock *open_pool(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        die(path, errno); /* a missing pool is an error: list and append create nothing */
    if (!S_ISREG(st.st_mode))
        not_a_pool(path, "not a regular file");
    if (st.st_size < (off_t)PFN_PAGE_SIZE || st.st_size % PFN_PAGE_SIZE != 0)
        not_a_pool(path, "its size is not a whole number of pages");
    pool = pfn_pmem_map(path, 0, 0); /* the file as it is: never created, never extended */
    if (!pool)
        die(path, errno);
    const struct superblock *raw = pfn_pmem_addr(pool);
    uint64_t file_pages = pfn_pmem_size(pool) / PFN_PAGE_SIZE;
    if (raw->magic != SB_MAGIC)
        not_a_pool(path, "no plog magic in its first page");
    if (raw->pages < 2 || raw->pages > file_pages || raw->next_free < 1 ||
        raw->next_free > raw->pages || raw->count >= raw->pages ||
        raw->phys_base % PFN_PAGE_SIZE != 0 || raw->phys_base > UINT64_MAX - raw->pages * PFN_PAGE_SIZE)
        not_a_pool(path, "its superblock is inconsistent");
    dev = pfn_device_new("plog");
    if (!dev)
        die("pfn_device_new", errno);
    pfn_resource res = {raw->phys_base, raw->phys_base + raw->pages * PFN_PAGE_SIZE - 1, path};
    int rc = devm_register_kmap_pfn_range(dev, &res, pfn_pmem_addr(pool));
    if (rc)
        die("register", -rc);
    struct superblock *sb = kmap_atomic_pfn_t(phys_to_pfn_t(raw->phys_base, PFN_DEV));
    if (!sb)
        die("kmap superblock", errno);
    return sb;
}

static void close_pool(struct superblock *sb)
{
    kunmap_atomic_pfn_t(sb);
    int rc = pfn_device_free(dev);
    if (!rc)
        rc = pfn_pmem_unmap(pool);
    if (rc)
        die("close", -rc);
}

static void append(struct superblock *sb, const char *text)
{
    if (sb->next_free >= sb->pages)
        die("append", ENOSPC);
    pfn_t new_pfn = page_pfn(sb, sb->next_free);
    struct record *rec = kmap_atomic_pfn_t(new_pfn);
    if (!rec)
        die("kmap record", errno);
    size_t len = strlen(text);
    if (len > sizeof rec->text)
        len = sizeof rec->text;
    rec->next = NONE;
    rec->len = (uint32_t)len;
    memcpy(rec->text, text, len);
    rec->magic = REC_MAGIC;
    persist(rec, sizeof *rec);
    kunmap_atomic_pfn_t(rec);

    if (sb->tail.val) {
        struct record *tail = kmap_atomic_pfn_t(sb->tail);
        if (!tail)
            die("kmap tail", errno);
        tail->next = new_pfn;
        persist(&tail->next, sizeof tail->next);
        kunmap_atomic_pfn_t(tail);
    } else {
        sb->head = new_pfn;
    }
    sb->tail = new_pfn;
    sb->count++;
    sb->next_free++;
    persist(sb, sizeof *sb);
}

static int list(const struct superblock *sb)
{
    uint64_t n = 0;
    for (pfn_t p = sb->head; p.val; n++) {
        if (n >= sb->count) { /* also ends a cycle of links */
            fprintf(stderr, "plog: more records linked than the superblock's %" PRIu64 "\n", sb->count);
            return 1;
        }
        const struct record *rec = kmap_atomic_pfn_t(p);
        if (!rec || rec->magic != REC_MAGIC || rec->len > sizeof rec->text) {
            fprintf(stderr, "plog: broken link at pfn %#" PRIx64 "\n", pfn_t_to_pfn(p));
            kunmap_atomic_pfn_t((void *)rec);
            return 1;
        }
        printf("%" PRIu64 ": %.*s\n", n + 1, (int)rec->len, rec->text);
        pfn_t next = rec->next;
        kunmap_atomic_pfn_t((void *)rec);
        p = next;
    }
    if (n != sb->count) {
        fprintf(stderr, "plog: %" PRIu64 " records linked, superblock says %" PRIu64 "\n", n,
                sb->count);
        return 1;
    }
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: plog FILE create | plog FILE append TEXT... | plog FILE list\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return usage();
    const char *cmd = argv[2];
    if (!strcmp(cmd, "create")) {
        if (argc != 3)
            return usage();
        create_pool(argv[1]);
        printf("plog: created %s\n", argv[1]);
        return 0;
    }
    if (strcmp(cmd, "append") && strcmp(cmd, "list"))
        return usage();
    struct superblock *sb = open_pool(argv[1]);
    int rc = 0;
    if (!strcmp(cmd, "append"))
        for (int i = 3; i < argc; i++)
            append(sb, argv[i]);
    else
        rc = list(sb);
    close_pool(sb);
    return rc;
}

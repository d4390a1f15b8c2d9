/* neoarray._vmem: address space whose pages are filled on first touch.
 *
 * A Region reserves address space and hands every first touch of a page to a
 * Python loader, in the thread that touched it: the fault arrives as a signal
 * (SIGBUS from userfaultfd with UFFD_FEATURE_SIGBUS, or SIGSEGV from a
 * PROT_NONE / read-only page under the mprotect fallback), the handler takes
 * the GIL with PyGILState_Ensure (a no-op when this thread already holds it:
 * numpy loops that keep the GIL fault in place instead of deadlocking against
 * a handler thread), calls loader(offset, is_write), and returns, so the
 * access is retried on the page the loader installed.  Why, and the
 * measurements: see neoarray/vm/__init__.py.
 *
 * The loader installs pages with Region.install and install_filled (a staging
 * block, filled and then moved into place with mremap: other threads see the
 * whole unit or a fault, never a half-copied page), install_zero, protect and
 * evict; staging blocks come from a pool of touched memory (evicted units'
 * pages, and blocks that prefill touches off the fault path).  Chunk records
 * the client keeps in a Block (the payload on pages of its own) are not copied:
 * Region.adopt moves the payload's pages into the unit and give_back moves them
 * home; Region.arm has the handler itself do that move at the first read of a
 * unit, before it takes the GIL (see Armed).  A frozen Block's pages are read-only,
 * as they are in a view: a move is one mremap, no mprotect.  Freed Blocks' mappings
 * are kept warm for new ones of the same geometry (block_pool, bounded in bytes).
 * Faults outside every region go to the handler installed before ours.
 * A fault in a fork child, or in a closed region, stops the process with a
 * message: a page fault cannot raise a Python exception.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sched.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define MODE_MPROTECT 0
#define MODE_UFFD 1
#define SLOTS_MAX 4096
#define ARMED_MAX 1024

/* A unit armed for the fault handler to map by itself, without Python: the payload
 * pages of a Block (see Block), moved into place with one mremap when touched.
 * state goes READY -> MAPPING -> MAPPED in the handler (any thread, no GIL), and
 * READY or MAPPED -> EMPTY under the GIL (Region.disarm, take_mapped). */
enum { ARM_EMPTY = 0, ARM_READY = 1, ARM_MAPPING = 2, ARM_MAPPED = 3 };
typedef struct {
    _Atomic int state;
    uintptr_t offset;
    size_t length;
    char *payload;
    int *lent;                      /* the block's lent flag */
    int home_prot;                  /* the payload's protection at home (see Block_freeze) */
    PyObject *block;                /* a reference, touched under the GIL only */
} Armed;

typedef struct {
    _Atomic uintptr_t start, end;   /* end == 0: free slot */
    _Atomic int closed;
    pid_t pid;
    PyObject *loader;               /* read under the GIL only */
    Armed *_Atomic armed;           /* ARMED_MAX entries, or NULL */
} Slot;

static Slot slots[SLOTS_MAX];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction previous_segv, previous_bus;
static int handlers_installed = 0;
static int uffd = -1;
static const char *uffd_reason = "not probed";
static long page_bytes = 4096;

/* ------------------------------------------------------------ fatal path */

static void say(const char *text) {
    ssize_t left = (ssize_t)strlen(text);
    while (left > 0) {
        ssize_t n = write(2, text, (size_t)left);
        if (n <= 0) return;
        text += n; left -= n;
    }
}

static void die(const char *why) {
    say("neoarray: fatal page fault in a mapped view: ");
    say(why);
    say("\n");
    abort();
}

/* ------------------------------------------------------------ signals */

static int find_slot(uintptr_t address) {
    for (int i = 0; i < SLOTS_MAX; i++) {
        uintptr_t end = atomic_load(&slots[i].end);
        if (end && address < end && address >= atomic_load(&slots[i].start))
            return i;
    }
    return -1;
}

static void chain(int sig, siginfo_t *info, void *context) {
    struct sigaction *old = sig == SIGBUS ? &previous_bus : &previous_segv;
    if (old->sa_flags & SA_SIGINFO) {
        old->sa_sigaction(sig, info, context);
        return;
    }
    if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    /* default action: restore it; the faulting access runs again and gets it */
    signal(sig, SIG_DFL);
    if (info->si_code <= 0) raise(sig);
}

static int fault_is_write(int sig, void *context) {
#if defined(__x86_64__)
    if (sig == SIGSEGV) {
        ucontext_t *uc = (ucontext_t *)context;
        return (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
    }
    return 0;
#else
    (void)context;
    return sig == SIGBUS ? 0 : -1;   /* unknown: see MappedView._fault */
#endif
}

static int map_armed(int i, uintptr_t address, int is_write) {
    /* the fault handler's own path: a read of an armed unit moves the unit's pages in
     * (async-signal-safe: atomics and two system calls); 1 when the access can run
     * again, 0 for the Python loader */
    Armed *table = atomic_load(&slots[i].armed);
    if (!table || is_write == 1) return 0;
    uintptr_t start = atomic_load(&slots[i].start);
    uintptr_t at = address - start;
    for (int k = 0; k < ARMED_MAX; k++) {
        Armed *a = &table[k];
        int state = atomic_load(&a->state);
        if (state == ARM_EMPTY || at < a->offset || at - a->offset >= a->length) continue;
        if (state == ARM_READY) {
            int expected = ARM_READY;
            if (!atomic_compare_exchange_strong(&a->state, &expected, ARM_MAPPING)) {
                k--;        /* taken meanwhile: look at it again */
                continue;
            }
            /* the payload is read-only since Region.arm: one system call here */
            if (mremap(a->payload, a->length, a->length,
                       MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, (char *)start + a->offset)
                    != MAP_FAILED) {
                *a->lent = 1;
                atomic_store(&a->state, ARM_MAPPED);
                return 1;
            }
            atomic_store(&a->state, ARM_READY);
            return 0;
        }
        while (atomic_load(&a->state) == ARM_MAPPING) sched_yield();    /* another thread's */
        return 1;
    }
    return 0;
}

static void on_fault(int sig, siginfo_t *info, void *context) {
    int saved_errno = errno;
    uintptr_t address = (uintptr_t)info->si_addr;
    int i = info->si_code > 0 ? find_slot(address) : -1;
    if (i < 0) {
        chain(sig, info, context);
        errno = saved_errno;
        return;
    }
    if (slots[i].pid != getpid())
        die("this process is a fork child of the process that mapped the view; "
            "views do not survive fork: open the array again in the child");
    if (atomic_load(&slots[i].closed))
        die("the view was used after its region was closed (a numpy array kept "
            "beyond its `with A.mapped(...)` block)");
    if (!Py_IsInitialized())
        die("the Python interpreter is not running");
    int is_write = fault_is_write(sig, context);
    if (map_armed(i, address, is_write)) {
        errno = saved_errno;
        return;
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    int interrupted = 0;
    for (;;) {
        if (find_slot(address) != i || atomic_load(&slots[i].closed) || !slots[i].loader)
            die("the view's region was closed while one of its pages was faulting");
        PyObject *loader = slots[i].loader;
        Py_INCREF(loader);
        PyObject *result = PyObject_CallFunction(
            loader, "Ki", (unsigned long long)(address - atomic_load(&slots[i].start)), is_write);
        Py_DECREF(loader);
        if (result) {
            Py_DECREF(result);
            break;
        }
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            PyErr_Clear();      /* delivered again once the page is in */
            interrupted = 1;
            continue;
        }
        PyErr_Print();
        die("loading its page failed (the Python error above)");
    }
    if (interrupted) PyErr_SetInterrupt();
    PyGILState_Release(gil);
    errno = saved_errno;
}

static void kill_children_views(void) {
    /* in a fork child: every view faults (and stops with a message) instead of
     * showing stale pages, or zeros where userfaultfd is not inherited */
    for (int i = 0; i < SLOTS_MAX; i++) {
        uintptr_t end = atomic_load(&slots[i].end);
        if (end) {
            uintptr_t start = atomic_load(&slots[i].start);
            mprotect((void *)start, end - start, PROT_NONE);
        }
    }
}

static int install_handlers(void) {
    if (handlers_installed) return 0;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, &previous_segv) || sigaction(SIGBUS, &action, &previous_bus)) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    static int atfork_registered = 0;
    if (!atfork_registered) pthread_atfork(NULL, NULL, kill_children_views);
    atfork_registered = 1;
    handlers_installed = 1;
    return 0;
}

/* ------------------------------------------------------------ userfaultfd */

static void probe_uffd(void) {
    if (uffd >= 0 || strcmp(uffd_reason, "not probed")) return;
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev >= 0) {
            fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
            close(dev);
        }
    }
    if (fd < 0) {
        uffd_reason = "userfaultfd is not allowed here (syscall and /dev/userfaultfd refused)";
        return;
    }
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_SIGBUS};
    if (ioctl(fd, UFFDIO_API, &api) || !(api.features & UFFD_FEATURE_SIGBUS)) {
        close(fd);
        uffd_reason = "userfaultfd lacks UFFD_FEATURE_SIGBUS (Linux >= 4.14)";
        return;
    }
    uffd = fd;
    uffd_reason = "available";
}

static PyObject *vm_probe(PyObject *self, PyObject *args) {
    probe_uffd();
    return Py_BuildValue("{s:O,s:s,s:O,s:l}", "uffd", uffd >= 0 ? Py_True : Py_False,
                         "uffd_reason", uffd_reason, "mprotect", Py_True, "page_bytes", page_bytes);
}

/* ------------------------------------------------------------ Region */

#define POOL_MAX 8
#define HUGE_BYTES (2UL << 20)
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

typedef struct {
    PyObject_HEAD
    char *base;
    Py_ssize_t nbytes;
    int mode, slot, writable, closed, unmapped;
    Py_ssize_t exports;
    /* blocks of writable, already touched memory for installs: evicted units' pages,
     * and blocks that prefill() touched off the fault path (first touch of fresh
     * memory is the dearest part of a fault in a VM); under pool_lock, since
     * prefill runs in another thread without the GIL */
    void *pool[POOL_MAX];
    int pool_n, pool_pending;
    size_t pool_bytes;          /* the size of each pooled block */
    pthread_mutex_t pool_lock;
    Armed *armed;               /* units the handler maps by itself (see Armed) */
} Region;

static int reserve_range(Region *r, char *target, size_t length) {
    /* fresh, empty address space at target: faults again on first touch */
    int prot = r->mode == MODE_UFFD ? PROT_READ : PROT_NONE;
    if (mmap(target, length, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0)
        == MAP_FAILED)
        return -1;
    if (r->mode == MODE_UFFD) {
        struct uffdio_register reg = {.range = {.start = (uintptr_t)target, .len = length},
                                      .mode = UFFDIO_REGISTER_MODE_MISSING};
        if (ioctl(uffd, UFFDIO_REGISTER, &reg)) return -1;
    }
    return 0;
}

static void *fresh_block(size_t length) {
    /* writable anonymous memory, 2 MiB aligned when that large (one huge page per
     * 2 MiB where the kernel gives them: one page fault instead of 512) */
    size_t align = length >= HUGE_BYTES ? HUGE_BYTES : 0;
    char *raw = mmap(NULL, length + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *block = raw;
    if (align) {
        block = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
        if (block > raw) munmap(raw, (size_t)(block - raw));
        if (block + length < raw + length + align)
            munmap(block + length, (size_t)(raw + length + align - (block + length)));
        madvise(block, length, MADV_HUGEPAGE);
    }
    return block;
}

static char *aligned_address(size_t length) {
    /* untouched address space for a block of length, 2 MiB aligned when that large,
     * for mremap(MREMAP_FIXED) to replace (kept mapped until then: no other thread's
     * mmap can land there meanwhile): a block moved there keeps its huge pages, and
     * moves in and out of the region (2 MiB aligned too) as page-table entries of
     * 2 MiB, not 512 of 4 KiB */
    return fresh_block(length);
}

static void *take_block(Region *r, size_t length) {
    void *block = NULL;
    pthread_mutex_lock(&r->pool_lock);
    if (r->pool_n && r->pool_bytes == length) block = r->pool[--r->pool_n];
    pthread_mutex_unlock(&r->pool_lock);
    return block ? block : fresh_block(length);
}

static int pool_put(Region *r, void *block, size_t length) {
    /* keep block for an install; 0 if the pool has no room for it (the caller frees it) */
    int kept = 0;
    pthread_mutex_lock(&r->pool_lock);
    if (!r->closed && r->pool_n < POOL_MAX && (r->pool_n == 0 || r->pool_bytes == length)) {
        r->pool[r->pool_n++] = block;
        r->pool_bytes = length;
        kept = 1;
    }
    pthread_mutex_unlock(&r->pool_lock);
    return kept;
}

static void restore_handlers(void) {
    /* the last region is gone: give SIGSEGV and SIGBUS back to the handlers found
     * before ours, unless another one was installed over ours meanwhile (it may chain
     * to ours: then ours stays, harmless without regions) */
    struct sigaction current;
    for (int i = 0; i < SLOTS_MAX; i++)
        if (atomic_load(&slots[i].end)) return;
    if (sigaction(SIGSEGV, NULL, &current) || current.sa_sigaction != on_fault) return;
    if (sigaction(SIGBUS, NULL, &current) || current.sa_sigaction != on_fault) return;
    sigaction(SIGSEGV, &previous_segv, NULL);
    sigaction(SIGBUS, &previous_bus, NULL);
    handlers_installed = 0;
}

static void release_armed(Region *r) {
    /* the region is gone (no handler reads the table): blocks still armed go back to
     * their owners' hands as they are (READY: whole, at home; MAPPED: their pages went
     * with the region, the block stays lent) */
    if (!r->armed) return;
    for (int k = 0; k < ARMED_MAX; k++) {
        int state = atomic_load(&r->armed[k].state);
        if (state == ARM_READY)
            mprotect(r->armed[k].payload, r->armed[k].length, r->armed[k].home_prot);
        if (state != ARM_EMPTY) {
            atomic_store(&r->armed[k].state, ARM_EMPTY);
            Py_CLEAR(r->armed[k].block);
        }
    }
}

static void unmap_region(Region *r) {
    if (r->unmapped) return;
    munmap(r->base, (size_t)r->nbytes);
    pthread_mutex_lock(&r->pool_lock);
    while (r->pool_n) munmap(r->pool[--r->pool_n], r->pool_bytes);
    pthread_mutex_unlock(&r->pool_lock);
    pthread_mutex_lock(&slots_lock);
    atomic_store(&slots[r->slot].end, 0);
    atomic_store(&slots[r->slot].start, 0);
    atomic_store(&slots[r->slot].armed, NULL);
    restore_handlers();
    pthread_mutex_unlock(&slots_lock);
    Py_CLEAR(slots[r->slot].loader);
    r->unmapped = 1;
    release_armed(r);
}

static int check_range(Region *r, unsigned long long offset, unsigned long long length) {
    if (r->closed) {
        PyErr_SetString(PyExc_ValueError, "the region is closed");
        return -1;
    }
    if (offset % page_bytes || length % page_bytes || offset > (unsigned long long)r->nbytes ||
        length > (unsigned long long)r->nbytes - offset) {
        PyErr_Format(PyExc_ValueError, "range %llu+%llu is not whole pages inside the region",
                     offset, length);
        return -1;
    }
    return 0;
}

static PyObject *Region_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *names[] = {"nbytes", "loader", "mode", "writable", NULL};
    unsigned long long nbytes;
    PyObject *loader;
    int mode, writable;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KOip", names, &nbytes, &loader, &mode, &writable))
        return NULL;
    if (nbytes == 0 || nbytes % page_bytes || nbytes > (unsigned long long)PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_ValueError, "a region is a positive number of whole pages");
        return NULL;
    }
    if (mode == MODE_UFFD) {
        probe_uffd();
        if (uffd < 0) {
            PyErr_SetString(PyExc_OSError, uffd_reason);
            return NULL;
        }
    }
    if (install_handlers()) return NULL;
    int prot = mode == MODE_UFFD ? PROT_READ : PROT_NONE;
    /* 2 MiB aligned, so that units of whole huge pages move into place as such */
    char *raw = mmap(NULL, (size_t)nbytes + HUGE_BYTES, prot,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) {
        PyErr_Format(PyExc_MemoryError, "cannot reserve %llu bytes of address space (%s)", nbytes,
                     strerror(errno));
        return NULL;
    }
    char *base = (char *)(((uintptr_t)raw + HUGE_BYTES - 1) & ~(uintptr_t)(HUGE_BYTES - 1));
    if (base > raw) munmap(raw, (size_t)(base - raw));
    if (base + nbytes < raw + nbytes + HUGE_BYTES)
        munmap(base + nbytes, (size_t)(raw + nbytes + HUGE_BYTES - (base + nbytes)));
    if (mode == MODE_UFFD) {
        struct uffdio_register reg = {.range = {.start = (uintptr_t)base, .len = nbytes},
                                      .mode = UFFDIO_REGISTER_MODE_MISSING};
        if (ioctl(uffd, UFFDIO_REGISTER, &reg)) {
            int e = errno;
            munmap(base, (size_t)nbytes);
            PyErr_Format(PyExc_OSError, "userfaultfd refused the region (%s)", strerror(e));
            return NULL;
        }
    }
    Armed *armed = calloc(ARMED_MAX, sizeof(Armed));
    if (!armed) {
        munmap(base, (size_t)nbytes);
        return PyErr_NoMemory();
    }
    pthread_mutex_lock(&slots_lock);
    int slot = -1;
    for (int i = 0; i < SLOTS_MAX && slot < 0; i++)
        if (!atomic_load(&slots[i].end) && !slots[i].loader) slot = i;
    if (slot >= 0) {
        Py_INCREF(loader);
        slots[slot].loader = loader;
        atomic_store(&slots[slot].armed, armed);
        slots[slot].pid = getpid();
        atomic_store(&slots[slot].closed, 0);
        atomic_store(&slots[slot].start, (uintptr_t)base);
        atomic_store(&slots[slot].end, (uintptr_t)base + nbytes);
    }
    pthread_mutex_unlock(&slots_lock);
    if (slot < 0) {
        munmap(base, (size_t)nbytes);
        free(armed);
        PyErr_Format(PyExc_OSError, "more than %d mapped views are open at once", SLOTS_MAX);
        return NULL;
    }
    Region *r = (Region *)type->tp_alloc(type, 0);
    if (!r) {
        munmap(base, (size_t)nbytes);
        pthread_mutex_lock(&slots_lock);
        atomic_store(&slots[slot].end, 0);
        atomic_store(&slots[slot].start, 0);
        atomic_store(&slots[slot].armed, NULL);
        pthread_mutex_unlock(&slots_lock);
        free(armed);
        Py_CLEAR(slots[slot].loader);
        return NULL;
    }
    r->base = base;
    r->nbytes = (Py_ssize_t)nbytes;
    r->mode = mode;
    r->slot = slot;
    r->writable = writable;
    r->armed = armed;
    pthread_mutex_init(&r->pool_lock, NULL);
    return (PyObject *)r;
}

static int protect_bits(Region *r, int writable) {
    return writable ? PROT_READ | PROT_WRITE : PROT_READ;
}

static int place_block(Region *r, char *block, unsigned long long offset, size_t length,
                       int writable) {
    /* move a filled block into place whole (one mremap), GIL released: other threads
     * see the unit complete or fault on it, never a half-copied page; -1 with errno
     * (the block is freed) */
    int failed = 0, e = 0;
    Py_BEGIN_ALLOW_THREADS
    if (mprotect(block, length, protect_bits(r, writable)) ||
        mremap(block, length, length, MREMAP_MAYMOVE | MREMAP_FIXED, r->base + offset)
            == MAP_FAILED) {
        failed = 1; e = errno;
        munmap(block, length);
    }
    Py_END_ALLOW_THREADS
    errno = e;
    return failed ? -1 : 0;
}

static PyObject *Region_install(Region *r, PyObject *args) {
    unsigned long long offset;
    Py_buffer data;
    int writable = 0, populate = 0;
    if (!PyArg_ParseTuple(args, "Ky*|pp", &offset, &data, &writable, &populate)) return NULL;
    unsigned long long length = (unsigned long long)data.len;
    if (check_range(r, offset, length)) {
        PyBuffer_Release(&data);
        return NULL;
    }
    char *block = take_block(r, length);
    if (!block) {
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    if (populate) {
        /* a source in a file mapping (a chunk read in place from LMDB) would take one
         * page fault per page inside memcpy: map its pages in one call instead */
        uintptr_t lo = (uintptr_t)data.buf & ~(uintptr_t)(page_bytes - 1);
        madvise((void *)lo, (uintptr_t)data.buf + length - lo, MADV_POPULATE_READ);
    }
    memcpy(block, data.buf, length);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (place_block(r, block, offset, (size_t)length, writable))
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *Region_install_filled(Region *r, PyObject *args) {
    /* fill(memoryview) writes the unit's bytes straight into the staging block (a
     * decompressor's output, say: no temporary to copy from), which then moves into
     * place.  The memoryview is released after the call; should fill have kept it
     * (or an export of it) alive, the block cannot move from under it: it stays
     * where it is, for those views, and a copy of it is installed. */
    unsigned long long offset, length;
    PyObject *fill;
    int writable = 0;
    if (!PyArg_ParseTuple(args, "KKO|p", &offset, &length, &fill, &writable)) return NULL;
    if (check_range(r, offset, length)) return NULL;
    if (length == 0) Py_RETURN_NONE;
    char *block = take_block(r, (size_t)length);
    if (!block) return PyErr_NoMemory();
    PyObject *view = PyMemoryView_FromMemory(block, (Py_ssize_t)length, PyBUF_WRITE);
    if (!view) {
        if (!pool_put(r, block, (size_t)length)) munmap(block, (size_t)length);
        return NULL;
    }
    PyObject *result = PyObject_CallOneArg(fill, view);
    PyObject *type = NULL, *value = NULL, *trace = NULL;
    if (!result) PyErr_Fetch(&type, &value, &trace);
    /* the block may move only if nothing refers to its memory any more: not the
     * memoryview, nor an export of it, nor a memoryview made from it (numpy's
     * frombuffer keeps one of those: it shares the managed buffer, not an export) */
    PyMemoryViewObject *mv = (PyMemoryViewObject *)view;
    int alone = Py_REFCNT(view) == 1 && mv->exports == 0 && mv->mbuf->exports == 1;
    PyObject *released = alone ? PyObject_CallMethod(view, "release", NULL) : NULL;
    int moved_ok = released != NULL;
    if (released) Py_DECREF(released);
    else PyErr_Clear();
    Py_DECREF(view);
    if (!result) {
        PyErr_Restore(type, value, trace);
        if (moved_ok && !pool_put(r, block, (size_t)length)) munmap(block, (size_t)length);
        return NULL;
    }
    Py_DECREF(result);
    if (!moved_ok) {
        /* exported still: leave the block mapped for its holders, install a copy */
        char *copy = fresh_block((size_t)length);
        if (!copy) return PyErr_NoMemory();
        memcpy(copy, block, (size_t)length);
        block = copy;
    }
    if (place_block(r, block, offset, (size_t)length, writable))
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *Region_install_zero(Region *r, PyObject *args) {
    /* a fresh read-only anonymous mapping over the unit (outside userfaultfd's
     * range: reads are the kernel's business from here on, a write faults as a write
     * into a read-only page), its pages mapped at once to the shared zero page: the
     * huge zero page, one entry per 2 MiB, where the unit is made of whole 2 MiB
     * pages (UFFDIO_ZEROPAGE maps 512 entries per 2 MiB, and a mapping left to fault
     * page by page makes a later scan take one kernel fault per 4 KiB) */
    unsigned long long offset, length;
    if (!PyArg_ParseTuple(args, "KK", &offset, &length)) return NULL;
    if (check_range(r, offset, length)) return NULL;
    char *target = r->base + offset;
    if (mmap(target, length, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
             -1, 0) == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (offset % HUGE_BYTES == 0 && length % HUGE_BYTES == 0)
        madvise(target, length, MADV_HUGEPAGE);
    madvise(target, length, MADV_POPULATE_READ);    /* Linux < 5.14: pages fault in later */
    Py_RETURN_NONE;
}

static PyObject *Region_protect(Region *r, PyObject *args) {
    unsigned long long offset, length;
    int writable;
    if (!PyArg_ParseTuple(args, "KKp", &offset, &length, &writable)) return NULL;
    if (check_range(r, offset, length)) return NULL;
    if (mprotect(r->base + offset, length, protect_bits(r, writable)))
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *Region_evict(Region *r, PyObject *args) {
    unsigned long long offset, length;
    int recycle = 0;
    if (!PyArg_ParseTuple(args, "KK|p", &offset, &length, &recycle)) return NULL;
    if (check_range(r, offset, length)) return NULL;
    char *target = r->base + offset;
    if (recycle && r->pool_n < POOL_MAX && (r->pool_n == 0 || r->pool_bytes == length)) {
        /* keep the pages for the next install (warm memory: no page faults to fill
         * it): the target is first made to fault (PROT_NONE, or registered with
         * userfaultfd), then its pages move out and it stays, empty */
        int ok = r->mode == MODE_UFFD ? 0 : mprotect(target, length, PROT_NONE);
        if (!ok && r->mode == MODE_UFFD) {
            struct uffdio_register reg = {.range = {.start = (uintptr_t)target, .len = length},
                                          .mode = UFFDIO_REGISTER_MODE_MISSING};
            ok = ioctl(uffd, UFFDIO_REGISTER, &reg);
        }
        /* units of whole huge pages go to a 2 MiB aligned spot (kept whole), smaller
         * ones wherever the kernel puts them (one system call less) */
        char *spot = !ok && length % HUGE_BYTES == 0 ? aligned_address(length) : NULL;
        void *moved = ok ? MAP_FAILED
                    : spot ? mremap(target, length, length,
                                    MREMAP_MAYMOVE | MREMAP_DONTUNMAP | MREMAP_FIXED, spot)
                           : mremap(target, length, length, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
        if (moved == MAP_FAILED && spot) munmap(spot, length);
        if (moved != MAP_FAILED) {
            if (mprotect(moved, length, PROT_READ | PROT_WRITE) || !pool_put(r, moved, length))
                munmap(moved, length);
            /* the range left behind stays mapped, empty, with its protection (a
             * userfaultfd range: readable, so a touch is a missing-page fault) */
            if (r->mode == MODE_UFFD && mprotect(target, length, PROT_READ))
                return PyErr_SetFromErrno(PyExc_OSError);
            Py_RETURN_NONE;
        }
        /* no MREMAP_DONTUNMAP here (Linux < 5.7): give the pages back instead */
    }
    if (reserve_range(r, target, length)) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static PyObject *Region_prefill(Region *r, PyObject *args) {
    /* touch fresh blocks of length until the pool holds count of them: called off the
     * fault path (a background thread), without the GIL while it works */
    unsigned long long length;
    int count, made = 0;
    if (!PyArg_ParseTuple(args, "Ki", &length, &count)) return NULL;
    if (length == 0 || length % page_bytes || length > (unsigned long long)r->nbytes) {
        PyErr_Format(PyExc_ValueError, "prefill: %llu bytes is not whole pages of the region",
                     length);
        return NULL;
    }
    if (count > POOL_MAX) count = POOL_MAX;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        pthread_mutex_lock(&r->pool_lock);
        int need = !r->closed && r->pool_n + r->pool_pending < count &&
                   (r->pool_n == 0 || r->pool_bytes == length);
        if (need) r->pool_pending++;
        pthread_mutex_unlock(&r->pool_lock);
        if (!need) break;
        char *block = fresh_block((size_t)length);
        if (block && madvise(block, (size_t)length, MADV_POPULATE_WRITE))
            for (unsigned long long at = 0; at < length; at += (unsigned long long)page_bytes)
                block[at] = 0;      /* Linux < 5.14: touch each page */
        pthread_mutex_lock(&r->pool_lock);
        r->pool_pending--;
        pthread_mutex_unlock(&r->pool_lock);
        if (!block) break;
        if (!pool_put(r, block, (size_t)length)) {
            munmap(block, (size_t)length);
            break;
        }
        made++;
    }
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(made);
}


/* ------------------------------------------------------------ Block
 *
 * A chunk record kept in memory that a view can take without copying: the record's
 * payload starts on a page boundary (a 2 MiB boundary when it is 2 MiB or more, in
 * huge pages where the kernel gives them), the bytes before it (the class pickle and
 * the opcode) in the page before, those after it (the pickle's end) in the page
 * after.  Region.adopt moves the payload's pages into a view (one mremap: one
 * page-table entry per 2 MiB, ~20 us here, against ~100-250 us for a copy and
 * ~200 us to map 512 pages of a memfd); Region.give_back moves them home when the
 * view evicts the unit.  While lent, the block refuses buffer requests (its payload
 * is elsewhere); it is only lent when nothing holds a buffer of it. */

typedef struct {
    PyObject_HEAD
    char *map;                  /* the whole mapping */
    size_t map_bytes;
    char *record;               /* payload - payload_start */
    Py_ssize_t record_bytes;
    char *payload;
    size_t payload_bytes;       /* whole pages */
    Py_ssize_t payload_start;
    Py_ssize_t exports;
    int lent, frozen;
    int readonly;               /* the pages are read-only (frozen without a buffer open) */
} Block;

static int home_prot(Block *b) { return b->readonly ? PROT_READ : PROT_READ | PROT_WRITE; }

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* Warm page blocks: the mappings of freed Blocks (a record the cache evicted or
 * dropped), kept for the next Block of the same geometry instead of unmapped, so that
 * a first read (a record received from the network, or copied from the co-located
 * LMDB) lands in memory already touched: the first touch of fresh memory is the dearest
 * part of such a read in a VM (0.7-8 ms per 2 MiB here, against ~0.1 ms to copy 2 MiB
 * into warm pages).  Bounded in bytes (block_pool(bytes_max)); touched under the GIL
 * only (Block_new and Block_dealloc), so it needs no lock.  A fork child inherits it
 * as private copies, as any other memory. */
#define BLOCK_POOL_ENTRIES_MAX 1024
#define BLOCK_POOL_BYTES_DEFAULT (32UL << 20)
typedef struct {
    char *map;
    size_t map_bytes, head;         /* the mapping, and the payload's offset in it */
} Pooled;
static Pooled block_pool[BLOCK_POOL_ENTRIES_MAX];
static int block_pool_n = 0;
static size_t block_pool_bytes = 0, block_pool_bytes_max = BLOCK_POOL_BYTES_DEFAULT;
static unsigned long long block_pool_reused = 0, block_pool_fresh = 0;

static char *block_pool_take(size_t map_bytes, size_t head) {
    /* the newest pooled mapping of this geometry (the warmest), or NULL */
    for (int k = block_pool_n - 1; k >= 0; k--) {
        if (block_pool[k].map_bytes != map_bytes || block_pool[k].head != head) continue;
        char *map = block_pool[k].map;
        block_pool[k] = block_pool[--block_pool_n];
        block_pool_bytes -= map_bytes;
        block_pool_reused++;
        return map;
    }
    return NULL;
}

static void block_pool_trim(size_t bytes_max) {
    /* the oldest mappings go first */
    while (block_pool_n && block_pool_bytes > bytes_max) {
        munmap(block_pool[0].map, block_pool[0].map_bytes);
        block_pool_bytes -= block_pool[0].map_bytes;
        memmove(block_pool, block_pool + 1, (size_t)(--block_pool_n) * sizeof(Pooled));
    }
}

static void block_pool_put(char *map, size_t map_bytes, size_t head) {
    if (map_bytes > block_pool_bytes_max) {
        munmap(map, map_bytes);
        return;
    }
    if (block_pool_n == BLOCK_POOL_ENTRIES_MAX) block_pool_trim(block_pool_bytes - 1);
    block_pool_trim(block_pool_bytes_max - map_bytes);
    block_pool[block_pool_n++] = (Pooled){map, map_bytes, head};
    block_pool_bytes += map_bytes;
}

static PyObject *vm_block_pool(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"bytes_max", NULL};
    PyObject *bound = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", names, &bound)) return NULL;
    if (bound != Py_None) {
        long long value = PyLong_AsLongLong(bound);
        if (value == -1 && PyErr_Occurred()) return NULL;
        if (value < 0) {
            PyErr_Format(PyExc_ValueError,
                         "block_pool(bytes_max=%lld): a bound in bytes is 0 (no pool) or more",
                         value);
            return NULL;
        }
        block_pool_bytes_max = (size_t)value;
        block_pool_trim(block_pool_bytes_max);
    }
    return Py_BuildValue("{s:n,s:n,s:i,s:K,s:K}", "bytes_max", (Py_ssize_t)block_pool_bytes_max,
                         "bytes", (Py_ssize_t)block_pool_bytes, "blocks", block_pool_n,
                         "reused", block_pool_reused, "fresh", block_pool_fresh);
}

static PyObject *Block_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *names[] = {"record_bytes", "payload_start", "payload_stop", NULL};
    Py_ssize_t record_bytes, start, stop;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "nnn", names, &record_bytes, &start, &stop))
        return NULL;
    if (start < 0 || stop < start || stop > record_bytes || stop == start ||
        (stop - start) % page_bytes || start > 64 * page_bytes ||
        record_bytes - stop > 64 * page_bytes) {
        PyErr_Format(PyExc_ValueError,
                     "Block(%zd, %zd, %zd): the payload must be whole pages inside the record, "
                     "with at most %ld bytes before and after it",
                     record_bytes, start, stop, 64 * page_bytes);
        return NULL;
    }
    size_t payload_bytes = (size_t)(stop - start);
    size_t head = round_up((size_t)start, (size_t)page_bytes);
    size_t tail = round_up((size_t)(record_bytes - stop), (size_t)page_bytes);
    size_t align = payload_bytes >= HUGE_BYTES ? HUGE_BYTES : (size_t)page_bytes;
    size_t want = head + payload_bytes + tail;
    char *map = block_pool_take(want, head), *payload;
    if (map) {
        payload = map + head;       /* warm pages: the last block of this geometry's */
    } else {
        char *raw = mmap(NULL, want + align, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED) return PyErr_NoMemory();
        payload = (char *)(((uintptr_t)raw + head + align - 1) & ~(uintptr_t)(align - 1));
        map = payload - head;
        if (map > raw) munmap(raw, (size_t)(map - raw));
        if (map + want < raw + want + align)
            munmap(map + want, (size_t)(raw + want + align - (map + want)));
        if (align == HUGE_BYTES) madvise(payload, payload_bytes, MADV_HUGEPAGE);
        block_pool_fresh++;
    }
    Block *b = (Block *)type->tp_alloc(type, 0);
    if (!b) {
        block_pool_put(map, want, head);
        return NULL;
    }
    b->map = map;
    b->map_bytes = want;
    b->payload = payload;
    b->payload_bytes = payload_bytes;
    b->payload_start = start;
    b->record = payload - start;
    b->record_bytes = record_bytes;
    return (PyObject *)b;
}

static int Block_getbuffer(Block *b, Py_buffer *view, int flags) {
    if (b->lent) {
        PyErr_SetString(PyExc_BufferError, "the block's pages are lent to a mapped view");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)b, b->record, b->record_bytes, b->frozen, flags))
        return -1;
    b->exports++;
    return 0;
}

static void Block_releasebuffer(Block *b, Py_buffer *view) { b->exports--; }

static void Block_dealloc(Block *b) {
    /* a lent block's payload is the view's now: only the block's own range goes
     * (while lent, an empty reservation where the payload was) */
    if (b->map && !b->lent && !b->exports &&
        !mprotect(b->map, b->map_bytes, PROT_READ | PROT_WRITE))
        block_pool_put(b->map, b->map_bytes, (size_t)(b->payload - b->map));    /* warm */
    else if (b->map)
        munmap(b->map, b->map_bytes);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static Py_ssize_t Block_length(Block *b) { return b->record_bytes; }

static PyObject *Block_freeze(Block *b, PyObject *unused) {
    /* read-only pages from now on, when no buffer is writing into them: moving the
     * payload into a view (read-only there) then needs no mprotect of its pages, the
     * dear part of a move in and out for blocks of 4 KiB pages (65 us per 1 MiB here,
     * against ~20 us for the mremap) */
    if (!b->frozen && !b->lent && !b->exports && !mprotect(b->map, b->map_bytes, PROT_READ))
        b->readonly = 1;
    b->frozen = 1;
    Py_RETURN_NONE;
}

static PyObject *Block_get_payload_bytes(Block *b, void *c) { return PyLong_FromSize_t(b->payload_bytes); }
static PyObject *Block_get_payload_start(Block *b, void *c) { return PyLong_FromSsize_t(b->payload_start); }
static PyObject *Block_get_lent(Block *b, void *c) { return PyBool_FromLong(b->lent); }
static PyObject *Block_get_exports(Block *b, void *c) { return PyLong_FromSsize_t(b->exports); }
static PyObject *Block_get_address(Block *b, void *c) { return PyLong_FromVoidPtr(b->payload); }

static PyMethodDef Block_methods[] = {
    {"freeze", (PyCFunction)Block_freeze, METH_NOARGS,
     "freeze(): buffers of the block are read-only from now on."},
    {NULL}};

static PyGetSetDef Block_getset[] = {
    {"payload_bytes", (getter)Block_get_payload_bytes, NULL, "bytes of the payload (whole pages)", NULL},
    {"payload_start", (getter)Block_get_payload_start, NULL, "offset of the payload in the record", NULL},
    {"lent", (getter)Block_get_lent, NULL, "whether a view holds the payload's pages", NULL},
    {"exports", (getter)Block_get_exports, NULL, "live buffer exports", NULL},
    {"address", (getter)Block_get_address, NULL, "the payload's address (page aligned)", NULL},
    {NULL}};

static PyBufferProcs Block_buffer = {(getbufferproc)Block_getbuffer,
                                     (releasebufferproc)Block_releasebuffer};
static PySequenceMethods Block_sequence = {.sq_length = (lenfunc)Block_length};

static PyTypeObject BlockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "neoarray._vmem.Block",
    .tp_basicsize = sizeof(Block),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Block(record_bytes, payload_start, payload_stop): a record whose payload "
              "lies on its own pages, which a view can take without copying.",
    .tp_new = Block_new,
    .tp_dealloc = (destructor)Block_dealloc,
    .tp_methods = Block_methods,
    .tp_getset = Block_getset,
    .tp_as_buffer = &Block_buffer,
    .tp_as_sequence = &Block_sequence,
};

static int make_faulting(Region *r, char *target, size_t length) {
    /* an installed range is first made to fault again (PROT_NONE, or registered with
     * userfaultfd), so that its pages can move out and leave it empty */
    if (r->mode == MODE_UFFD) {
        struct uffdio_register reg = {.range = {.start = (uintptr_t)target, .len = length},
                                      .mode = UFFDIO_REGISTER_MODE_MISSING};
        return ioctl(uffd, UFFDIO_REGISTER, &reg);
    }
    return mprotect(target, length, PROT_NONE);
}

static PyObject *Region_adopt(Region *r, PyObject *args) {
    /* move block's payload pages to offset: True, or False when the block cannot be
     * lent (a buffer of it is alive, it is lent already, or this kernel has no
     * MREMAP_DONTUNMAP): the caller copies instead */
    unsigned long long offset;
    PyObject *object;
    int writable = 0;
    if (!PyArg_ParseTuple(args, "KO!|p", &offset, &BlockType, &object, &writable)) return NULL;
    Block *b = (Block *)object;
    if (check_range(r, offset, b->payload_bytes)) return NULL;
    if (b->lent || b->exports) Py_RETURN_FALSE;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    /* (a read-only block's payload moves in as it is: no mprotect) */
    failed = (protect_bits(r, writable) != home_prot(b) &&
              mprotect(b->payload, b->payload_bytes, protect_bits(r, writable))) ||
             mremap(b->payload, b->payload_bytes, b->payload_bytes,
                    MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, r->base + offset)
                 == MAP_FAILED;
    Py_END_ALLOW_THREADS
    if (failed) {
        mprotect(b->payload, b->payload_bytes, home_prot(b));
        Py_RETURN_FALSE;
    }
    b->lent = 1;
    Py_RETURN_TRUE;
}

static PyObject *Region_give_back(Region *r, PyObject *args) {
    /* move the pages at offset (adopted from block, unwritten) back into block; the
     * range faults again.  False (the range evicted, the block left lent) if they
     * cannot move */
    unsigned long long offset;
    PyObject *object;
    if (!PyArg_ParseTuple(args, "KO!", &offset, &BlockType, &object)) return NULL;
    Block *b = (Block *)object;
    if (check_range(r, offset, b->payload_bytes)) return NULL;
    if (!b->lent) {
        PyErr_SetString(PyExc_ValueError, "give_back: the block is not lent");
        return NULL;
    }
    char *target = r->base + offset;
    int failed = make_faulting(r, target, b->payload_bytes) ||
                 mremap(target, b->payload_bytes, b->payload_bytes,
                        MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, b->payload) == MAP_FAILED;
    if (failed) {
        if (reserve_range(r, target, b->payload_bytes)) return PyErr_SetFromErrno(PyExc_OSError);
        Py_RETURN_FALSE;
    }
    /* (a no-op for a read-only block's payload coming back from a clean unit) */
    mprotect(b->payload, b->payload_bytes, home_prot(b));
    /* the range left behind stays mapped, empty (a userfaultfd range: readable, so a
     * touch is a missing-page fault) */
    if (r->mode == MODE_UFFD && mprotect(target, b->payload_bytes, PROT_READ))
        return PyErr_SetFromErrno(PyExc_OSError);
    b->lent = 0;
    Py_RETURN_TRUE;
}

static PyObject *Region_arm(Region *r, PyObject *args) {
    /* have the fault handler move block's payload pages to offset at the first read
     * there, without Python: True, or False (the table is full, or the block cannot
     * be lent: a buffer of it alive).  The range must be empty (faulting). */
    unsigned long long offset;
    PyObject *object;
    if (!PyArg_ParseTuple(args, "KO!", &offset, &BlockType, &object)) return NULL;
    Block *b = (Block *)object;
    if (check_range(r, offset, b->payload_bytes)) return NULL;
    if (b->lent || b->exports) Py_RETURN_FALSE;
    for (int k = 0; k < ARMED_MAX; k++) {
        Armed *a = &r->armed[k];
        if (atomic_load(&a->state) != ARM_EMPTY) {
            if (a->offset == offset) {
                PyErr_Format(PyExc_ValueError, "arm: offset %llu is armed already", offset);
                return NULL;
            }
            continue;
        }
        /* read-only from now on, as its pages will be in the view: the handler then
         * moves them with one system call (mremap keeps the protection) */
        if (!b->readonly && mprotect(b->payload, b->payload_bytes, PROT_READ)) Py_RETURN_FALSE;
        Py_INCREF(object);
        a->block = object;
        a->offset = offset;
        a->length = b->payload_bytes;
        a->payload = b->payload;
        a->lent = &b->lent;
        a->home_prot = home_prot(b);
        atomic_store(&a->state, ARM_READY);       /* published: the handler may map it */
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static PyObject *take_entry(Armed *a, int mapped) {
    /* (offset, block, mapped) of an entry the handler no longer looks at (EMPTY, or
     * MAPPED), which is emptied; a block not mapped is writable again */
    if (!mapped && a->home_prot != PROT_READ) mprotect(a->payload, a->length, a->home_prot);
    PyObject *out = Py_BuildValue("KOO", (unsigned long long)a->offset, a->block,
                                  mapped ? Py_True : Py_False);
    atomic_store(&a->state, ARM_EMPTY);
    Py_CLEAR(a->block);
    return out;
}

static PyObject *Region_disarm(Region *r, PyObject *args) {
    /* take the unit armed at offset out of the table: (offset, block, mapped), mapped
     * true when the handler moved its pages in meanwhile; None if none is armed there */
    unsigned long long offset;
    if (!PyArg_ParseTuple(args, "K", &offset)) return NULL;
    for (int k = 0; k < ARMED_MAX; k++) {
        Armed *a = &r->armed[k];
        int state = atomic_load(&a->state);
        if (state == ARM_EMPTY || a->offset != offset) continue;
        for (;;) {      /* a handler may be mapping it (MAPPING), or have failed to (READY) */
            state = atomic_load(&a->state);
            if (state == ARM_MAPPED) return take_entry(a, 1);
            if (state == ARM_READY) {
                int expected = ARM_READY;
                if (atomic_compare_exchange_strong(&a->state, &expected, ARM_EMPTY))
                    return take_entry(a, 0);
                continue;
            }
            sched_yield();
        }
    }
    Py_RETURN_NONE;
}

static PyObject *Region_take_mapped(Region *r, PyObject *unused) {
    /* [(offset, block, True)] of the armed units the handler mapped since the last
     * call, taken out of the table */
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (int k = 0; k < ARMED_MAX; k++) {
        if (atomic_load(&r->armed[k].state) != ARM_MAPPED) continue;
        PyObject *item = take_entry(&r->armed[k], 1);
        if (!item || PyList_Append(out, item)) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

static PyObject *Region_trim_pool(Region *r, PyObject *args) {
    /* free pooled blocks beyond keep (units moved in need none); how many were freed */
    int keep, freed = 0;
    if (!PyArg_ParseTuple(args, "i", &keep)) return NULL;
    pthread_mutex_lock(&r->pool_lock);
    while (r->pool_n > (keep < 0 ? 0 : keep)) {
        munmap(r->pool[--r->pool_n], r->pool_bytes);
        freed++;
    }
    pthread_mutex_unlock(&r->pool_lock);
    return PyLong_FromLong(freed);
}

static PyObject *Region_close(Region *r, PyObject *unused) {
    if (r->closed) Py_RETURN_NONE;
    pthread_mutex_lock(&r->pool_lock);      /* prefill reads it without the GIL */
    r->closed = 1;
    pthread_mutex_unlock(&r->pool_lock);
    if (!r->unmapped) atomic_store(&slots[r->slot].closed, 1);
    if (r->exports == 0) unmap_region(r);
    else mmap(r->base, (size_t)r->nbytes, PROT_NONE,
              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    Py_RETURN_NONE;
}

static int Region_getbuffer(Region *r, Py_buffer *view, int flags) {
    if (r->closed) {
        PyErr_SetString(PyExc_ValueError, "the region is closed");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)r, r->base, r->nbytes, !r->writable, flags)) return -1;
    r->exports++;
    return 0;
}

static void Region_releasebuffer(Region *r, Py_buffer *view) {
    r->exports--;
    if (r->closed && r->exports == 0) unmap_region(r);
}

static void Region_dealloc(Region *r) {
    r->closed = 1;
    if (!r->unmapped) atomic_store(&slots[r->slot].closed, 1);
    unmap_region(r);
    free(r->armed);
    pthread_mutex_destroy(&r->pool_lock);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyObject *Region_get_address(Region *r, void *c) { return PyLong_FromVoidPtr(r->base); }
static PyObject *Region_get_nbytes(Region *r, void *c) { return PyLong_FromSsize_t(r->nbytes); }
static PyObject *Region_get_exports(Region *r, void *c) { return PyLong_FromSsize_t(r->exports); }
static PyObject *Region_get_closed(Region *r, void *c) { return PyBool_FromLong(r->closed); }
static PyObject *Region_get_pooled(Region *r, void *c) { return PyLong_FromLong(r->pool_n); }

static PyMethodDef Region_methods[] = {
    {"install", (PyCFunction)Region_install, METH_VARARGS,
     "install(offset, data, writable=False, populate=False): put data (whole pages) at offset, "
     "read-only or writable; populate maps a file-backed source's pages first."},
    {"install_filled", (PyCFunction)Region_install_filled, METH_VARARGS,
     "install_filled(offset, length, fill, writable=False): fill(memoryview) writes the "
     "bytes straight into the staging block, which then moves into place."},
    {"install_zero", (PyCFunction)Region_install_zero, METH_VARARGS,
     "install_zero(offset, length): zero pages, sharing the zero page (no memory)."},
    {"protect", (PyCFunction)Region_protect, METH_VARARGS,
     "protect(offset, length, writable): make installed pages read-only or writable."},
    {"evict", (PyCFunction)Region_evict, METH_VARARGS,
     "evict(offset, length, recycle=False): the next touch faults again; recycle keeps the pages for an install."},
    {"prefill", (PyCFunction)Region_prefill, METH_VARARGS,
     "prefill(length, count): touch fresh blocks of length bytes (without the GIL) until "
     "count are pooled for installs; returns how many it added."},
    {"adopt", (PyCFunction)Region_adopt, METH_VARARGS,
     "adopt(offset, block, writable=False): move the block's payload pages to offset (no "
     "copy); False if the block cannot be lent (a buffer of it alive): copy instead."},
    {"give_back", (PyCFunction)Region_give_back, METH_VARARGS,
     "give_back(offset, block): move an adopted, unwritten unit's pages back into its block; "
     "the range faults again."},
    {"arm", (PyCFunction)Region_arm, METH_VARARGS,
     "arm(offset, block): the fault handler moves the block's payload pages to offset at the "
     "first read there, without calling the loader; False if the table is full or the "
     "block cannot be lent."},
    {"disarm", (PyCFunction)Region_disarm, METH_VARARGS,
     "disarm(offset) -> (offset, block, mapped) or None: take an armed unit back (mapped: "
     "the handler moved it in meanwhile)."},
    {"take_mapped", (PyCFunction)Region_take_mapped, METH_NOARGS,
     "take_mapped() -> [(offset, block, True)]: the armed units mapped since the last call."},
    {"trim_pool", (PyCFunction)Region_trim_pool, METH_VARARGS,
     "trim_pool(keep): free pooled blocks beyond keep; returns how many."},
    {"close", (PyCFunction)Region_close, METH_NOARGS,
     "close(): unmap now, or once the last buffer export is released."},
    {NULL}};

static PyGetSetDef Region_getset[] = {
    {"address", (getter)Region_get_address, NULL, "first byte's address", NULL},
    {"nbytes", (getter)Region_get_nbytes, NULL, "bytes of address space", NULL},
    {"exports", (getter)Region_get_exports, NULL, "live buffer exports", NULL},
    {"closed", (getter)Region_get_closed, NULL, "whether close() was called", NULL},
    {"pooled", (getter)Region_get_pooled, NULL, "evicted blocks kept for installs", NULL},
    {NULL}};

static PyBufferProcs Region_buffer = {(getbufferproc)Region_getbuffer,
                                      (releasebufferproc)Region_releasebuffer};

static PyTypeObject RegionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "neoarray._vmem.Region",
    .tp_basicsize = sizeof(Region),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Region(nbytes, loader, mode, writable): address space filled by loader(offset, is_write).",
    .tp_new = Region_new,
    .tp_dealloc = (destructor)Region_dealloc,
    .tp_methods = Region_methods,
    .tp_getset = Region_getset,
    .tp_as_buffer = &Region_buffer,
};

static PyMethodDef module_methods[] = {
    {"probe", vm_probe, METH_NOARGS, "probe() -> dict: which fault mechanisms work here."},
    {"block_pool", (PyCFunction)(void (*)(void))vm_block_pool, METH_VARARGS | METH_KEYWORDS,
     "block_pool(bytes_max=None) -> dict: the pool of warm page blocks (mappings of freed "
     "Blocks, reused by new ones of the same geometry): its bound, bytes and blocks held, "
     "and how many Blocks were made from it (reused) or from fresh memory (fresh); "
     "bytes_max sets the bound (0: no pool)."},
    {NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_vmem", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__vmem(void) {
    page_bytes = sysconf(_SC_PAGESIZE);
    if (PyType_Ready(&RegionType) < 0 || PyType_Ready(&BlockType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&RegionType);
    PyModule_AddObject(m, "Region", (PyObject *)&RegionType);
    Py_INCREF(&BlockType);
    PyModule_AddObject(m, "Block", (PyObject *)&BlockType);
    PyModule_AddIntConstant(m, "MODE_MPROTECT", MODE_MPROTECT);
    PyModule_AddIntConstant(m, "MODE_UFFD", MODE_UFFD);
    PyModule_AddIntConstant(m, "PAGE_BYTES", page_bytes);
    return m;
}

/*
 * Workload: one process with N idle threads besides the main one.
 *
 *   threads N [STACK_KIB]    N worker threads (default stack size: glibc's,
 *                            the RLIMIT_STACK of 8 MiB, as real programs
 *                            have; STACK_KIB sets another)
 *
 * Every worker blocks all signals and sleeps in FUTEX_WAIT on one shared
 * word (what a condition variable or a thread pool's idle queue does); the
 * main thread sleeps in pause(). The program says it is ready only once
 * every worker is asleep (state S in /proc/self/task/TID/stat), so the
 * dump finds them all inside the futex call.
 *
 * Ready line: "ready pid=N threads=T" (T = N + 1, the main thread
 * included). On SIGUSR1 (delivered to the main thread, the only one that
 * does not block it), inside the handler, the main thread bumps the
 * generation word and wakes every worker; each worker checks a pattern on
 * its own stack, records its TID (gettid) and the generation and
 * acknowledges on a second futex word; the main thread waits for N
 * acknowledgements (60 s at most), then checks that every worker answered
 * this generation, with the TID it had at start and an intact stack, and
 * that /proc/self/task lists T threads:
 *   "ok threads=T acked=N spurious=S"   (S: wake-ups without a new
 *                                       generation, e.g. a futex wait that
 *                                       came back with EINTR; counted only)
 *   "bad REASON ..."
 */
#include "bench_lib.c"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>

#define STACK_WORDS 64

struct slot {
	int tid_start;            /* gettid() when the thread started */
	_Atomic int tid_now;      /* gettid() at its last acknowledgement */
	_Atomic uint32_t seen;    /* last generation it acknowledged */
	_Atomic uint32_t wakes;   /* acknowledgements */
	_Atomic uint32_t spurious;
	_Atomic uint32_t bad_stack;
} __attribute__((aligned(64)));

static _Atomic uint32_t gen;     /* the workers wait on it */
static _Atomic uint32_t acks;    /* the main thread waits on it */
static _Atomic uint32_t started; /* workers that have set up their slot */
static struct slot *slots;
static int nworkers;

static long futex(_Atomic uint32_t *uaddr, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, uaddr, op, val, ts, NULL, 0);
}

static uint64_t pattern(size_t i, size_t k)
{
	uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ULL ^ (k + 1) * 0xbf58476d1ce4e5b9ULL;
	return x ^ (x >> 31);
}

static void *worker(void *arg)
{
	size_t i = (size_t)arg;
	struct slot *s = &slots[i];
	volatile uint64_t stack_data[STACK_WORDS];
	for (size_t k = 0; k < STACK_WORDS; k++)
		stack_data[k] = pattern(i, k);
	s->tid_start = (int)syscall(SYS_gettid);
	atomic_store(&s->tid_now, s->tid_start);
	uint32_t g = atomic_load(&gen);
	atomic_store(&s->seen, g);
	atomic_fetch_add(&started, 1);
	futex(&started, FUTEX_WAKE_PRIVATE, 1, NULL);
	for (;;) {
		futex(&gen, FUTEX_WAIT_PRIVATE, g, NULL);
		uint32_t now = atomic_load(&gen);
		if (now == g) {
			atomic_fetch_add(&s->spurious, 1);
			continue;
		}
		g = now;
		for (size_t k = 0; k < STACK_WORDS; k++)
			if (stack_data[k] != pattern(i, k)) {
				atomic_fetch_add(&s->bad_stack, 1);
				break;
			}
		atomic_store(&s->tid_now, (int)syscall(SYS_gettid));
		atomic_fetch_add(&s->wakes, 1);
		atomic_store(&s->seen, g);
		atomic_fetch_add(&acks, 1);
		futex(&acks, FUTEX_WAKE_PRIVATE, 1, NULL);
	}
	return NULL;
}

/* Entries of /proc/self/task, with raw getdents64 (async-signal-safe). */
static long count_tasks(void)
{
	int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	char buf[8192] __attribute__((aligned(8)));
	long n = 0;
	for (;;) {
		long got = syscall(SYS_getdents64, fd, buf, sizeof(buf));
		if (got <= 0)
			break;
		for (long off = 0; off < got;) {
			unsigned short reclen = *(unsigned short *)(buf + off + 16);
			const char *name = buf + off + 19;
			if (name[0] != '.')
				n++;
			off += reclen;
		}
	}
	close(fd);
	return n;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void verify(struct bench_buf *b)
{
	uint32_t n = (uint32_t)nworkers;
	atomic_store(&acks, 0);
	uint32_t g = atomic_fetch_add(&gen, 1) + 1;
	futex(&gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
	double deadline = now_s() + 60;
	uint32_t a;
	while ((a = atomic_load(&acks)) < n && now_s() < deadline) {
		struct timespec ts = {0, 100 * 1000 * 1000};
		futex(&acks, FUTEX_WAIT_PRIVATE, a, &ts);
	}
	a = atomic_load(&acks);
	long missing = 0, moved = 0, bad_stack = 0, first_missing = -1, first_moved = -1;
	uint64_t spurious = 0;
	for (int i = 0; i < nworkers; i++) {
		struct slot *s = &slots[i];
		if (atomic_load(&s->seen) != g && missing++ == 0)
			first_missing = i;
		if (atomic_load(&s->tid_now) != s->tid_start && moved++ == 0)
			first_moved = i;
		bad_stack += atomic_load(&s->bad_stack) != 0;
		spurious += atomic_load(&s->spurious);
	}
	long tasks = count_tasks();
	int ok = a == n && !missing && !moved && !bad_stack && tasks == nworkers + 1;
	bench_put(b, ok ? "ok" : "bad");
	bench_put(b, " threads=");
	bench_put_dec(b, tasks < 0 ? 0 : (uint64_t)tasks);
	bench_put(b, " acked=");
	bench_put_dec(b, a);
	if (!ok) {
		bench_put(b, "/");
		bench_put_dec(b, n);
		bench_put(b, " expected_threads=");
		bench_put_dec(b, (uint64_t)nworkers + 1);
		if (missing) {
			bench_put(b, " silent_workers=");
			bench_put_dec(b, (uint64_t)missing);
			bench_put(b, " first_silent_tid=");
			bench_put_dec(b, (uint64_t)slots[first_missing].tid_start);
		}
		if (moved) {
			bench_put(b, " tid_changed=");
			bench_put_dec(b, (uint64_t)moved);
			bench_put(b, " first_tid=");
			bench_put_dec(b, (uint64_t)slots[first_moved].tid_start);
			bench_put(b, "->");
			bench_put_dec(b, (uint64_t)atomic_load(&slots[first_moved].tid_now));
		}
		if (bad_stack) {
			bench_put(b, " bad_stacks=");
			bench_put_dec(b, (uint64_t)bad_stack);
		}
	}
	bench_put(b, " spurious=");
	bench_put_dec(b, spurious);
}

/* State letter of one of our threads, '?' if unreadable. */
static char task_state(int tid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return '?';
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p && p[1] && p[2] ? p[2] : '?';
}

int main(int argc, char **argv)
{
	bench_init();
	if (argc < 2)
		bench_die("usage: %s NTHREADS [STACK_KIB]", argv[0]);
	nworkers = atoi(argv[1]);
	if (nworkers < 1 || nworkers > 100000)
		bench_die("bad thread count %s", argv[1]);
	slots = aligned_alloc(64, sizeof(*slots) * (size_t)nworkers);
	if (!slots)
		bench_die("aligned_alloc: %s", strerror(errno));
	memset(slots, 0, sizeof(*slots) * (size_t)nworkers);

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	if (argc > 2) {
		size_t kib = strtoull(argv[2], NULL, 0);
		int e = pthread_attr_setstacksize(&attr, kib * 1024);
		if (e)
			bench_die("stack size %zu KiB: %s", kib, strerror(e));
	}
	/* The workers inherit a mask with every signal blocked. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (int i = 0; i < nworkers; i++) {
		pthread_t t;
		int e = pthread_create(&t, &attr, worker, (void *)(size_t)i);
		if (e)
			bench_die("pthread_create (thread %d of %d): %s", i + 1, nworkers, strerror(e));
		pthread_detach(t);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	uint32_t v;
	while ((v = atomic_load(&started)) < (uint32_t)nworkers)
		futex(&started, FUTEX_WAIT_PRIVATE, v, NULL);
	/* Wait until every worker sleeps in its futex wait. */
	double deadline = now_s() + 30;
	for (int i = 0; i < nworkers; i++) {
		while (task_state(slots[i].tid_start) != 'S') {
			if (now_s() > deadline)
				bench_die("thread %d (tid %d) not asleep after 30 s (state %c)", i,
					  slots[i].tid_start, task_state(slots[i].tid_start));
			usleep(1000);
		}
	}

	bench_set_verify(verify);
	bench_ready("pid=%d threads=%d", (int)getpid(), nworkers + 1);
	bench_pause_forever();
}

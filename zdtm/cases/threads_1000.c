/*
 * threads_1000: a process with 1000 sleeping threads survives
 * checkpoint/restore, and every thread can be joined afterwards.
 *
 * --threads=N (default 1000) threads with 64 KiB stacks: the even ones wait
 * on a futex (no timeout), the odd ones sleep in 1 s nanosleep()s until told
 * to stop. Each has its own __thread value. The workers block SIGTERM.
 *
 * After restore:
 *  - /proc/self/task lists exactly the same N+1 TIDs;
 *  - every thread's __thread value (read through its address) is intact;
 * then the main thread wakes them all and joins them (within 60 s in all);
 * each thread checks that gettid() and its __thread value did not change,
 * that no nanosleep() failed (EINTR included) or returned early.
 *
 * --sabotage=WHAT (debug): tls, eintr.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <linux/futex.h>

#include "zdtmtst.h"

const char *test_doc = "Check that 1000 sleeping threads are restored and can be joined";

static unsigned int threads = 1000;
TEST_OPTION(threads, uint, "number of threads (default 1000)", 0);
static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (tls, eintr)", 0);

struct th {
	pthread_t pt;
	pid_t tid;
	volatile uint64_t *tls_ptr;
	volatile int ready;
	int bad; /* 1: tid, 2: tls, 4: sleep */
	int sleeps;
};

static struct th *th;
static __thread volatile uint64_t tls_val;
static int32_t go;
static uint64_t seed;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t tls_expect(int i)
{
	return seed ^ ((uint64_t)i * 0x9e3779b97f4a7c15ULL);
}

static void urg(int sig)
{
	(void)sig;
}

static void *worker(void *arg)
{
	int i = (int)(intptr_t)arg;
	struct th *t = &th[i];

	t->tid = syscall(SYS_gettid);
	tls_val = tls_expect(i);
	t->tls_ptr = &tls_val;
	__atomic_store_n(&t->ready, 1, __ATOMIC_SEQ_CST);

	while (!__atomic_load_n(&go, __ATOMIC_SEQ_CST)) {
		if (i % 2 == 0) {
			syscall(SYS_futex, &go, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
		} else {
			struct timespec req = { 1, 0 };
			int64_t start = now_ns();

			if (nanosleep(&req, NULL) || now_ns() - start < 1000000000)
				t->bad |= 4;
			t->sleeps++;
		}
	}
	if (syscall(SYS_gettid) != t->tid)
		t->bad |= 1;
	if (tls_val != tls_expect(i))
		t->bad |= 2;
	return NULL;
}

static int list_tasks(pid_t *tids, int max)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && n < max)
			tids[n++] = atoi(e->d_name);
	closedir(d);
	return n;
}

static int cmp_pid(const void *a, const void *b)
{
	return *(const pid_t *)a - *(const pid_t *)b;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = urg };
	pthread_attr_t attr;
	sigset_t term, old;
	pid_t *tids, *want;
	unsigned int i;
	int n, failed = 0, bad[8] = { 0 };
	struct timespec dl;

	test_init(argc, argv);
	if (threads == 0 || threads > 100000) {
		pr_err("--threads=%u is out of range\n", threads);
		return 1;
	}
	seed = ((uint64_t)lrand48() << 32) ^ lrand48();
	th = calloc(threads, sizeof(*th));
	tids = calloc(threads + 16, sizeof(*tids));
	want = calloc(threads + 1, sizeof(*want));
	if (!th || !tids || !want) {
		pr_perror("calloc");
		return 1;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGURG, &sa, NULL);

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &term, &old);
	for (i = 0; i < threads; i++) {
		int r = pthread_create(&th[i].pt, &attr, worker, (void *)(intptr_t)i);

		if (r) {
			errno = r;
			pr_perror("pthread_create #%u", i);
			return 1;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	for (i = 0; i < threads; i++)
		while (!__atomic_load_n(&th[i].ready, __ATOMIC_SEQ_CST))
			usleep(1000);
	for (i = 0; i < threads; i++)
		want[i] = th[i].tid;
	want[threads] = getpid();
	qsort(want, threads + 1, sizeof(*want), cmp_pid);
	n = list_tasks(tids, threads + 16);
	if (n != (int)threads + 1) {
		pr_err("%d threads in /proc/self/task, expected %u\n", n, threads + 1);
		return 1;
	}
	test_msg("%u threads running\n", threads);

	test_daemon();
	test_waitsig();

	if (sabotage) {
		test_msg("sabotage: %s\n", sabotage);
		if (!strcmp(sabotage, "tls"))
			*th[threads / 2].tls_ptr ^= 1;
		else if (!strcmp(sabotage, "eintr"))
			pthread_kill(th[1].pt, SIGURG);
		usleep(100000);
	}

	n = list_tasks(tids, threads + 16);
	if (n != (int)threads + 1) {
		test_msg("FAILED: %d threads in /proc/self/task, expected %u\n", n, threads + 1);
		failed = 1;
	} else {
		qsort(tids, n, sizeof(*tids), cmp_pid);
		for (i = 0; i <= threads; i++)
			if (tids[i] != want[i]) {
				test_msg("FAILED: the TIDs changed (%d is not %d)\n", tids[i], want[i]);
				failed = 1;
				break;
			}
	}
	for (i = 0; i < threads; i++)
		if (*th[i].tls_ptr != tls_expect(i)) {
			test_msg("FAILED: thread #%u (tid %d): __thread value %#llx, expected %#llx\n", i, th[i].tid,
				 (unsigned long long)*th[i].tls_ptr, (unsigned long long)tls_expect(i));
			failed = 1;
		}

	__atomic_store_n(&go, 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, &go, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 60;
	for (i = 0; i < threads; i++) {
		int r = pthread_timedjoin_np(th[i].pt, NULL, &dl);

		if (r) {
			test_msg("FAILED: thread #%u (tid %d) could not be joined: %s\n", i, th[i].tid, strerror(r));
			failed = 1;
			break;
		}
		if (th[i].bad) {
			if (bad[th[i].bad & 7]++ < 3)
				test_msg("FAILED: thread #%u (tid %d):%s%s%s\n", i, th[i].tid,
					 th[i].bad & 1 ? " gettid() changed" : "",
					 th[i].bad & 2 ? " __thread value changed" : "",
					 th[i].bad & 4 ? " a nanosleep failed or returned early" : "");
			failed = 1;
		}
	}

	if (failed) {
		errno = 0;
		fail("threads changed (see above)");
		exit(1);
	}
	pass();
	return 0;
}

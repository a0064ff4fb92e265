/*
 * thread_leader_exit: the main thread has called pthread_exit() while the
 * other threads go on (a zombie thread-group leader). The process must
 * survive checkpoint/restore as it is: the leader still a zombie with the
 * PID, the other threads alive with their TIDs. (An engine that cannot do
 * this must refuse the dump clearly instead.)
 *
 * The main thread starts three threads and exits with pthread_exit():
 *   tl-checker  does the protocol: once the leader is a zombie it calls
 *               test_daemon() and test_waitsig() (it is the only thread
 *               that does not block SIGTERM), then checks
 *   tl-futex    waits on a futex
 *   tl-sleep    1 s nanosleep()s, each must complete, not early
 * each with its own __thread value.
 *
 * After restore (tl-checker):
 *  - the leader (TID = PID) is still in /proc/self/task, in state Z;
 *  - /proc/self/task lists exactly the same TIDs;
 *  - getpid() is unchanged, gettid() of every thread unchanged;
 *  - the __thread values of all three;
 *  - pthread_join() of the exited main thread succeeds at once; the other
 *    two are woken and joined within 10 s, and report no failed sleep.
 *
 * --sabotage=WHAT (debug): tls.
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

const char *test_doc = "Check that a process whose main thread exited (zombie leader) is restored";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (tls)", 0);

enum { CHECKER, FUTEX, SLEEP, NW };

struct th {
	const char *name;
	pthread_t pt;
	pid_t tid;
	volatile uint64_t *tls_ptr;
	uint64_t tls_expect;
	volatile int ready;
	int bad;
};

static struct th th[NW] = { { "tl-checker" }, { "tl-futex" }, { "tl-sleep" } };
static __thread volatile uint64_t tls_val;
static pthread_t main_thread;
static pid_t pid;
static int32_t go;

static pid_t gettid_(void)
{
	return syscall(SYS_gettid);
}

static char task_state(pid_t tid)
{
	char path[64], buf[512], *p;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	p = fgets(buf, sizeof(buf), f);
	fclose(f);
	if (!p)
		return 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
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

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void enter(int i)
{
	struct th *t = &th[i];
	sigset_t s;

	sigemptyset(&s);
	if (i != CHECKER)
		sigaddset(&s, SIGTERM);
	pthread_sigmask(SIG_SETMASK, &s, NULL);
	pthread_setname_np(pthread_self(), t->name);
	t->tid = gettid_();
	tls_val = t->tls_expect;
	t->tls_ptr = &tls_val;
	__atomic_store_n(&t->ready, 1, __ATOMIC_SEQ_CST);
}

static void *waiter(void *arg)
{
	int i = (int)(intptr_t)arg;
	struct th *t = &th[i];

	enter(i);
	while (!__atomic_load_n(&go, __ATOMIC_SEQ_CST)) {
		if (i == FUTEX) {
			syscall(SYS_futex, &go, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
		} else {
			struct timespec req = { 1, 0 };
			int64_t start = now_ns();

			if (nanosleep(&req, NULL) || now_ns() - start < 1000000000)
				t->bad = 1;
		}
	}
	if (gettid_() != t->tid || tls_val != t->tls_expect)
		t->bad |= 2;
	return NULL;
}

static int failed;

static void *checker(void *arg)
{
	pid_t tids[16];
	struct timespec dl;
	int i, n;

	(void)arg;
	enter(CHECKER);
	for (i = 0; i < NW; i++)
		while (!__atomic_load_n(&th[i].ready, __ATOMIC_SEQ_CST))
			usleep(1000);
	/* the leader is gone: a zombie */
	for (i = 0; i < 1000 && task_state(pid) != 'Z'; i++)
		usleep(5000);
	if (task_state(pid) != 'Z') {
		pr_err("the main thread did not exit (state %c)\n", task_state(pid));
		exit(1);
	}
	test_msg("leader %d is a zombie; threads %d %d %d\n", pid, th[0].tid, th[1].tid, th[2].tid);

	test_daemon();
	test_waitsig();

	if (sabotage) {
		test_msg("sabotage: %s\n", sabotage);
		if (!strcmp(sabotage, "tls"))
			*th[SLEEP].tls_ptr ^= 1;
	}

	test_check(getpid() == pid, "getpid() %d, was %d", getpid(), pid);
	test_check(task_state(pid) == 'Z', "the leader %d is in state %c, not a zombie", pid,
	      task_state(pid) ? task_state(pid) : '?');
	n = list_tasks(tids, ARRAY_SIZE(tids));
	test_check(n == NW + 1, "%d threads, expected %d", n, NW + 1);
	for (i = 0; i < n; i++) {
		int k;

		for (k = 0; k < NW && th[k].tid != tids[i]; k++)
			;
		test_check(k < NW || tids[i] == pid, "unknown thread %d", tids[i]);
	}
	test_check(gettid_() == th[CHECKER].tid, "tl-checker: gettid() %d, was %d", gettid_(), th[CHECKER].tid);
	for (i = 0; i < NW; i++)
		test_check(*th[i].tls_ptr == th[i].tls_expect, "%s: __thread value %#llx, expected %#llx", th[i].name,
		      (unsigned long long)*th[i].tls_ptr, (unsigned long long)th[i].tls_expect);

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 5;
	n = pthread_timedjoin_np(main_thread, NULL, &dl);
	test_check(n == 0, "pthread_join of the exited main thread: %s", strerror(n));

	__atomic_store_n(&go, 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, &go, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 10;
	for (i = FUTEX; i < NW; i++) {
		n = pthread_timedjoin_np(th[i].pt, NULL, &dl);
		test_check(n == 0, "%s could not be joined: %s", th[i].name, strerror(n));
		if (n == 0)
			test_check(!th[i].bad, "%s:%s%s", th[i].name, th[i].bad & 1 ? " a sleep failed or was early" : "",
			      th[i].bad & 2 ? " its TID or __thread value changed" : "");
	}

	if (failed) {
		errno = 0;
		fail("the process changed (see above)");
		exit(1);
	}
	pass();
	exit(0);
}

int main(int argc, char **argv)
{
	int i;

	test_init(argc, argv);
	pid = getpid();
	main_thread = pthread_self();
	for (i = 0; i < NW; i++) {
		th[i].tls_expect = ((uint64_t)lrand48() << 32) ^ lrand48() ^ i;
		if (pthread_create(&th[i].pt, NULL, i == CHECKER ? checker : waiter, (void *)(intptr_t)i)) {
			pr_perror("pthread_create");
			return 1;
		}
	}
	for (i = 0; i < NW; i++)
		while (!__atomic_load_n(&th[i].ready, __ATOMIC_SEQ_CST))
			usleep(1000);
	/* the main thread must not take SIGTERM on its way out */
	{
		sigset_t s;

		sigemptyset(&s);
		sigaddset(&s, SIGTERM);
		pthread_sigmask(SIG_BLOCK, &s, NULL);
	}
	pthread_exit(NULL);
}

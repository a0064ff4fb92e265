/*
 * threads_signals: per-thread signal state survives checkpoint/restore:
 * private pending signals (each thread's own queue), the shared queue, and
 * every thread's alternate signal stack.
 *
 *   thread  blocks (besides the shared ones)   private pending           sigaltstack
 *   main    SIGRTMIN+6                          SIGRTMIN+6 (tgkill)       36 KiB
 *   w0      SIGUSR1, SIGRTMIN+1, SIGRTMIN+2     SIGUSR1 (tgkill), SIGRTMIN+1 x3 (values),
 *                                               SIGRTMIN+2 (tgkill)       32 KiB
 *   w1      SIGUSR2, SIGRTMIN+1, SIGRTMIN+3     SIGUSR2 (value), SIGRTMIN+1 x2 (values),
 *                                               SIGRTMIN+3 (hand-made siginfo)
 *                                                                         48 KiB, SS_AUTODISARM
 *   w2      SIGHUP                              SIGHUP (tgkill)           none (SS_DISABLE)
 *   w3      SIGRTMIN+4                          SIGRTMIN+4 (value)        40 KiB, and w3 waits
 *                                                                         inside an SA_ONSTACK
 *                                                                         SIGPROF handler, on it
 * Shared (process-wide) pending, blocked in every thread: SIGWINCH (kill),
 * SIGRTMIN+5 twice (sigqueue, values). The workers block SIGTERM.
 * (Private signals are sent with tgkill and rt_tgsigqueueinfo.)
 *
 * After restore, the main thread checks /proc/self/task/TID/status of every
 * thread: SigPnd is exactly its private set, ShdPnd the shared set, SigBlk
 * its mask (w3: plus SIGPROF, being in the handler). Then it wakes the
 * workers; each one checks
 *  - gettid() unchanged;
 *  - sigaltstack(): ss_sp, ss_size and flags as set (w3, still in the
 *    handler: SS_ONSTACK and its local on the alternate stack; then it
 *    returns from the handler and must see flags 0);
 *  - its private queue with sigtimedwait, in order: signo, si_code, si_pid,
 *    si_uid, si_value (the hand-made one byte for byte), then nothing;
 *  - an SA_ONSTACK SIGURG sent to itself runs on its own alternate stack
 *    (w2: on its normal stack).
 * The main thread does the same for itself, then takes the shared queue:
 * SIGWINCH, SIGRTMIN+5 (first value), SIGRTMIN+5 (second value), nothing
 * more. All workers must be joined within 10 s.
 *
 * --sabotage=WHAT (debug): private, shared, altstack.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <linux/futex.h>

#include "zdtmtst.h"

const char *test_doc = "Check that per-thread pending signals and sigaltstacks are restored";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (private, shared, altstack)", 0);

#ifndef SS_AUTODISARM
#define SS_AUTODISARM ((int)(1U << 31))
#endif

#define BIT(s) (1ULL << ((s)-1))
#define KSI_SIZE 48
#define MAXQ 8
#define NW 4
#define NT (NW + 1) /* index NW is the main thread */

enum how { H_TKILL, H_QUEUE, H_RAW };

struct q {
	int sig;
	enum how how;
	uint64_t value;
	siginfo_t raw;
};

struct th {
	const char *name;
	size_t alt_size;	/* 0: SS_DISABLE */
	int alt_flags;
	pthread_t pt;
	pid_t tid;
	uint64_t mask, wait_mask;
	char *alt;
	struct q q[MAXQ];
	int nq;
	volatile int ready;
	/* what its handlers saw */
	uintptr_t urg_local, prof_local;
	int urg_ran;
	stack_t prof_query;
	int failed;
	char why[1024];
};

static struct th th[NT] = {
	{ "w0", 32 * 1024, 0 },
	{ "w1", 48 * 1024, SS_AUTODISARM },
	{ "w2", 0, 0 },
	{ "w3", 40 * 1024, 0 },
	{ "main", 36 * 1024, 0 },
};

static uint64_t shared_set;
static int32_t go;
static __thread int self = -1;

/* glibc's sigtimedwait() turns SI_TKILL into SI_USER: ask the kernel */
static int sigtimedwait_raw(const sigset_t *set, siginfo_t *si, const struct timespec *ts)
{
	return syscall(SYS_rt_sigtimedwait, set, si, ts, 8);
}

static int failed;

static void thfail(struct th *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void thfail(struct th *t, const char *fmt, ...)
{
	size_t l = strlen(t->why);
	va_list ap;

	t->failed = 1;
	if (l + 4 >= sizeof(t->why))
		return;
	if (l)
		t->why[l++] = ';', t->why[l++] = ' ';
	va_start(ap, fmt);
	vsnprintf(t->why + l, sizeof(t->why) - l, fmt, ap);
	va_end(ap);
}

static pid_t gettid_(void)
{
	return syscall(SYS_gettid);
}

static void sigset_from(sigset_t *s, uint64_t m)
{
	int i;

	sigemptyset(s);
	for (i = 1; i <= 64; i++)
		if ((m & BIT(i)) && i != 32 && i != 33)
			sigaddset(s, i);
}

static uint64_t private_set(struct th *t)
{
	uint64_t m = 0;
	int i;

	for (i = 0; i < t->nq; i++)
		m |= BIT(t->q[i].sig);
	return m;
}

static int on_alt(struct th *t, uintptr_t a)
{
	return t->alt && a >= (uintptr_t)t->alt && a < (uintptr_t)t->alt + t->alt_size;
}

/* queue a private signal to thread t (from the main thread) */
static int send_private(struct th *t, int sig, enum how how, uint64_t value, int code)
{
	struct q *q = &t->q[t->nq++];
	siginfo_t si;

	q->sig = sig;
	q->how = how;
	q->value = value;
	if (how == H_TKILL)
		return syscall(SYS_tgkill, getpid(), t->tid, sig);
	memset(&si, 0, sizeof(si));
	if (how == H_RAW) {
		unsigned char *p = (unsigned char *)&si;
		int i;

		for (i = 16; i < KSI_SIZE; i++)
			p[i] = (unsigned char)(sig * 13 + i * 3);
		si.si_errno = 55;
		si.si_code = code;
	} else {
		si.si_code = SI_QUEUE;
		si.si_pid = getpid();
		si.si_uid = getuid();
		si.si_value.sival_ptr = (void *)(uintptr_t)value;
	}
	si.si_signo = sig;
	q->raw = si;
	return syscall(SYS_rt_tgsigqueueinfo, getpid(), t->tid, sig, &si);
}

static int setup_altstack(struct th *t)
{
	stack_t ss = { .ss_flags = SS_DISABLE };

	if (t->alt_size) {
		t->alt = mmap(NULL, t->alt_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (t->alt == MAP_FAILED)
			return -1;
		ss.ss_sp = t->alt;
		ss.ss_size = t->alt_size;
		ss.ss_flags = t->alt_flags;
	}
	return sigaltstack(&ss, NULL);
}

static __attribute__((noinline)) uintptr_t here(void)
{
	volatile char c = 0;

	asm volatile("" : : "r"(&c) : "memory");
	return (uintptr_t)&c;
}

static void urg(int sig)
{
	(void)sig;
	th[self].urg_local = here();
	th[self].urg_ran++;
}

static void wait_go(void)
{
	while (!__atomic_load_n(&go, __ATOMIC_SEQ_CST))
		syscall(SYS_futex, &go, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
}

/* w3 waits in here, on its alternate stack */
static void prof(int sig)
{
	struct th *t = &th[self];

	(void)sig;
	__atomic_store_n(&t->ready, 1, __ATOMIC_SEQ_CST);
	wait_go();
	t->prof_local = here();
	sigaltstack(NULL, &t->prof_query);
}

static void check_altstack(struct th *t, int flags, const char *when)
{
	stack_t q;

	if (sigaltstack(NULL, &q)) {
		thfail(t, "sigaltstack query: %m");
		return;
	}
	if (!t->alt_size) {
		if (q.ss_flags != SS_DISABLE)
			thfail(t, "%s: sigaltstack flags %#x, expected SS_DISABLE", when, q.ss_flags);
		return;
	}
	if (q.ss_sp != t->alt || q.ss_size != t->alt_size || q.ss_flags != flags)
		thfail(t, "%s: sigaltstack sp %p size %zu flags %#x, expected %p %zu %#x", when, q.ss_sp, q.ss_size,
		       q.ss_flags, t->alt, t->alt_size, flags);
}

/* the thread's own part of the checks */
static void check_self(struct th *t)
{
	struct timespec zero = { 0, 0 };
	uint64_t set = private_set(t);
	sigset_t s;
	int i;

	if (gettid_() != t->tid)
		thfail(t, "gettid() %d, was %d", gettid_(), t->tid);

	if (sabotage && !strcmp(sabotage, "altstack") && t == &th[0]) {
		stack_t ss = { .ss_sp = t->alt, .ss_size = t->alt_size / 2 };

		sigaltstack(&ss, NULL);
	}
	check_altstack(t, t->alt_flags, "after restore");

	sigset_from(&s, set);
	for (i = 0;; i++) {
		siginfo_t si;
		struct q *q;
		int sig;

		memset(&si, 0, sizeof(si));
		sig = sigtimedwait_raw(&s, &si, &zero);
		if (sig < 0) {
			if (errno != EAGAIN)
				thfail(t, "sigtimedwait: %m");
			else if (i != t->nq)
				thfail(t, "%d private signals, expected %d", i, t->nq);
			break;
		}
		if (i >= t->nq) {
			thfail(t, "an extra signal %d (si_code %d)", sig, si.si_code);
			continue;
		}
		q = &t->q[i];
		if (sig != q->sig) {
			thfail(t, "private signal #%d is %d, expected %d", i, sig, q->sig);
			continue;
		}
		if (q->how == H_TKILL) {
			if (si.si_code != SI_TKILL || si.si_pid != getpid() || si.si_uid != getuid())
				thfail(t, "signal %d: si_code %d si_pid %d si_uid %d, expected SI_TKILL %d %d", sig,
				       si.si_code, si.si_pid, si.si_uid, getpid(), getuid());
		} else if (memcmp(&si, &q->raw, KSI_SIZE)) {
			thfail(t, "signal %d (#%d): siginfo differs (si_code %d si_pid %d si_value %p, expected %d %d %p)",
			       sig, i, si.si_code, si.si_pid, si.si_value.sival_ptr, q->raw.si_code, q->raw.si_pid,
			       q->raw.si_value.sival_ptr);
		}
	}

	syscall(SYS_tgkill, getpid(), gettid_(), SIGURG);
	if (t->urg_ran != 1)
		thfail(t, "the SIGURG handler ran %d times", t->urg_ran);
	else if (t->alt_size && !on_alt(t, t->urg_local))
		thfail(t, "the SA_ONSTACK handler ran at %#lx, not on the alternate stack %p",
		       (unsigned long)t->urg_local, t->alt);
	else if (!t->alt_size && (t->urg_local == 0))
		thfail(t, "the SIGURG handler did not run");
}

static void *worker(void *arg)
{
	int i = (int)(intptr_t)arg;
	struct th *t = &th[i];
	sigset_t s;

	self = i;
	t->tid = gettid_();
	sigset_from(&s, t->mask);
	pthread_sigmask(SIG_SETMASK, &s, NULL);
	if (setup_altstack(t)) {
		thfail(t, "sigaltstack: %m");
		__atomic_store_n(&t->ready, 1, __ATOMIC_SEQ_CST);
		return NULL;
	}
	if (i == 3) {
		syscall(SYS_tgkill, getpid(), t->tid, SIGPROF);
		if (!on_alt(t, t->prof_local))
			thfail(t, "in the SIGPROF handler after restore: local %#lx not on the alternate stack %p",
			       (unsigned long)t->prof_local, t->alt);
		if (t->prof_query.ss_sp != t->alt || t->prof_query.ss_size != t->alt_size ||
		    t->prof_query.ss_flags != SS_ONSTACK)
			thfail(t, "in the SIGPROF handler: sigaltstack sp %p size %zu flags %#x, expected %p %zu "
				  "SS_ONSTACK", t->prof_query.ss_sp, t->prof_query.ss_size, t->prof_query.ss_flags,
			       t->alt, t->alt_size);
	} else {
		__atomic_store_n(&t->ready, 1, __ATOMIC_SEQ_CST);
		wait_go();
	}
	check_self(t);
	return NULL;
}

static uint64_t status_hex(pid_t tid, const char *key)
{
	char path[64], line[256];
	size_t kl = strlen(key);
	uint64_t v = ~0ULL;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	f = fopen(path, "r");
	if (!f)
		return v;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':')
			v = strtoull(line + kl + 1, NULL, 16);
	fclose(f);
	return v;
}

static void handler(int sig, void (*h)(int), int flags)
{
	struct sigaction sa = { .sa_handler = h, .sa_flags = flags };

	sigemptyset(&sa.sa_mask);
	sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
	struct th *m = &th[NW];
	struct timespec zero = { 0, 0 };
	union sigval sv;
	sigset_t s;
	int i;

	test_init(argc, argv);
	self = NW;
	m->tid = gettid_();

	handler(SIGURG, urg, SA_ONSTACK | SA_RESTART);
	handler(SIGPROF, prof, SA_ONSTACK | SA_RESTART);

	shared_set = BIT(SIGWINCH) | BIT(SIGRTMIN + 5);
	th[0].mask = BIT(SIGUSR1) | BIT(SIGRTMIN + 1) | BIT(SIGRTMIN + 2);
	th[1].mask = BIT(SIGUSR2) | BIT(SIGRTMIN + 1) | BIT(SIGRTMIN + 3);
	th[2].mask = BIT(SIGHUP);
	th[3].mask = BIT(SIGRTMIN + 4);
	m->mask = BIT(SIGRTMIN + 6) | shared_set;
	for (i = 0; i < NW; i++) {
		th[i].mask |= shared_set | BIT(SIGTERM) | BIT(SIGRTMIN + 6);
		th[i].wait_mask = th[i].mask;
	}
	th[3].wait_mask |= BIT(SIGPROF);
	m->wait_mask = m->mask;

	sigset_from(&s, m->mask);
	sigprocmask(SIG_SETMASK, &s, NULL);
	if (setup_altstack(m)) {
		pr_perror("sigaltstack");
		return 1;
	}
	for (i = 0; i < NW; i++)
		if (pthread_create(&th[i].pt, NULL, worker, (void *)(intptr_t)i)) {
			pr_perror("pthread_create");
			return 1;
		}
	for (i = 0; i < NW; i++)
		while (!__atomic_load_n(&th[i].ready, __ATOMIC_SEQ_CST))
			usleep(1000);
	for (i = 0; i < NW; i++)
		if (th[i].failed) {
			pr_err("%s: %s\n", th[i].name, th[i].why);
			return 1;
		}

	if (send_private(&th[0], SIGRTMIN + 1, H_QUEUE, 0x0101010101010101ULL, 0) ||
	    send_private(&th[1], SIGRTMIN + 1, H_QUEUE, 0x1111111111111111ULL, 0) ||
	    send_private(&th[0], SIGUSR1, H_TKILL, 0, 0) ||
	    send_private(&th[0], SIGRTMIN + 1, H_QUEUE, 0x0202020202020202ULL, 0) ||
	    send_private(&th[1], SIGRTMIN + 3, H_RAW, 0, -30) ||
	    send_private(&th[2], SIGHUP, H_TKILL, 0, 0) ||
	    send_private(&th[0], SIGRTMIN + 2, H_TKILL, 0, 0) ||
	    send_private(&th[1], SIGUSR2, H_QUEUE, 0x2222, 0) ||
	    send_private(&th[3], SIGRTMIN + 4, H_QUEUE, 0x4444, 0) ||
	    send_private(&th[0], SIGRTMIN + 1, H_QUEUE, 0x0303030303030303ULL, 0) ||
	    send_private(&th[1], SIGRTMIN + 1, H_QUEUE, 0x1212121212121212ULL, 0) ||
	    send_private(m, SIGRTMIN + 6, H_TKILL, 0, 0)) {
		pr_perror("sending private signals");
		return 1;
	}
	/* the queues are in the order of signal numbers */
	for (i = 0; i < NT; i++) {
		struct th *t = &th[i];
		int a, b;

		for (a = 1; a < t->nq; a++)
			for (b = a; b > 0 && t->q[b - 1].sig > t->q[b].sig; b--) {
				struct q tmp = t->q[b];

				t->q[b] = t->q[b - 1];
				t->q[b - 1] = tmp;
			}
	}
	sv.sival_ptr = (void *)0x5555;
	if (kill(getpid(), SIGWINCH) || sigqueue(getpid(), SIGRTMIN + 5, sv)) {
		pr_perror("sending shared signals");
		return 1;
	}
	sv.sival_ptr = (void *)0x5556;
	if (sigqueue(getpid(), SIGRTMIN + 5, sv)) {
		pr_perror("sending shared signals");
		return 1;
	}
	for (i = 0; i < NT; i++)
		test_msg("%-4s tid %d SigPnd %016llx SigBlk %016llx alt %p %zu %#x\n", th[i].name, th[i].tid,
			 (unsigned long long)status_hex(th[i].tid, "SigPnd"),
			 (unsigned long long)status_hex(th[i].tid, "SigBlk"), th[i].alt, th[i].alt_size,
			 th[i].alt_flags);

	test_daemon();
	test_waitsig();

	if (sabotage) {
		test_msg("sabotage: %s\n", sabotage);
		if (!strcmp(sabotage, "private")) {
			syscall(SYS_tgkill, getpid(), th[2].tid, SIGRTMIN + 6);
		} else if (!strcmp(sabotage, "shared")) {
			siginfo_t si;

			sigset_from(&s, BIT(SIGRTMIN + 5));
			sigtimedwait_raw(&s, &si, &zero);
		}
	}

	/* from outside */
	for (i = 0; i < NT; i++) {
		struct th *t = &th[i];
		uint64_t pnd = status_hex(t->tid, "SigPnd"), shd = status_hex(t->tid, "ShdPnd"),
			 blk = status_hex(t->tid, "SigBlk");

		test_check(pnd == private_set(t), "%s (tid %d): SigPnd %016llx, expected %016llx", t->name, t->tid,
		      (unsigned long long)pnd, (unsigned long long)private_set(t));
		test_check(shd == shared_set, "%s (tid %d): ShdPnd %016llx, expected %016llx", t->name, t->tid,
		      (unsigned long long)shd, (unsigned long long)shared_set);
		test_check(blk == t->wait_mask, "%s (tid %d): SigBlk %016llx, expected %016llx", t->name, t->tid,
		      (unsigned long long)blk, (unsigned long long)t->wait_mask);
	}

	/* every worker checks itself */
	__atomic_store_n(&go, 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, &go, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
	for (i = 0; i < NW; i++) {
		struct timespec dl;
		int r;

		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += 10;
		r = pthread_timedjoin_np(th[i].pt, NULL, &dl);
		test_check(r == 0, "%s (tid %d) could not be joined: %s", th[i].name, th[i].tid, strerror(r));
		if (r == 0)
			test_check(!th[i].failed, "%s (tid %d): %s", th[i].name, th[i].tid, th[i].why);
	}

	/* the main thread's own, then the shared queue */
	check_self(m);
	test_check(!m->failed, "main: %s", m->why);
	{
		static const int want_sig[3] = { SIGWINCH, 0, 0 };
		static const uintptr_t want_val[3] = { 0, 0x5555, 0x5556 };
		siginfo_t si;
		int sig;

		sigset_from(&s, shared_set);
		for (i = 0;; i++) {
			int ws = i == 0 ? want_sig[0] : SIGRTMIN + 5;

			memset(&si, 0, sizeof(si));
			sig = sigtimedwait_raw(&s, &si, &zero);
			if (sig < 0) {
				test_check(errno == EAGAIN && i == 3, "%d shared signals, expected 3 (%m)", i);
				break;
			}
			if (i >= 3) {
				test_check(0, "an extra shared signal %d", sig);
				continue;
			}
			test_check(sig == ws && si.si_pid == getpid() &&
				      (i == 0 ? si.si_code == SI_USER
					      : si.si_code == SI_QUEUE && (uintptr_t)si.si_value.sival_ptr == want_val[i]),
			      "shared signal #%d: %d si_code %d si_pid %d si_value %p, expected %d", i, sig,
			      si.si_code, si.si_pid, si.si_value.sival_ptr, ws);
		}
	}

	if (failed) {
		errno = 0;
		fail("per-thread signal state changed (see above)");
		exit(1);
	}
	pass();
	return 0;
}

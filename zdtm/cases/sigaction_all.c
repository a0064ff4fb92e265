/*
 * sigaction_all: the disposition of every signal survives checkpoint/restore.
 *
 * Every signal 1..64 except SIGKILL, SIGSTOP and SIGTERM (the library's) is
 * given an action with the raw rt_sigaction syscall (so that glibc's internal
 * signals 32 and 33 are covered too): a plain handler, an SA_SIGINFO handler,
 * SIG_IGN (SIGQUIT, SIGTRAP, SIGPIPE, SIGTSTP, SIGXFSZ, SIGWINCH, 33 and some
 * RT signals incl. SIGRTMAX) or SIG_DFL (some with flags and a mask: SIGFPE,
 * SIGSEGV, SIGURG), with mixed SA_RESTART, SA_NODEFER, SA_RESETHAND,
 * SA_ONSTACK, SA_NOCLDSTOP|SA_NOCLDWAIT (SIGCHLD) and per-signal sa_mask.
 *
 * After restore:
 *  1. every action is queried (rt_sigaction) and compared with the one
 *     queried before the checkpoint: handler, flags, restorer, mask;
 *  2. every signal with a handler is sent to the thread (tgkill): its
 *     handler must run exactly once, the SA_SIGINFO ones with
 *     si_code == SI_TKILL and our pid/uid, with the blocked mask inside the
 *     handler == mask before | sa_mask | the signal unless SA_NODEFER; the
 *     SA_RESETHAND ones must be SIG_DFL afterwards, the others unchanged;
 *     SIG_IGN signals are sent too (RLIMIT_CORE is 0 first) and must leave
 *     nothing pending;
 *  3. SA_RESTART: a futex wait interrupted by SIGVTALRM (SA_RESTART) is
 *     restarted (it ends with EAGAIN when the second signal changes the
 *     word), one interrupted by SIGALRM (no SA_RESTART) fails with EINTR;
 *  4. SIGCHLD (SA_NOCLDSTOP|SA_NOCLDWAIT): a child that stops and is
 *     continued produces no SIGCHLD, its exit produces one (CLD_EXITED,
 *     status 7), and it is reaped automatically (waitpid: ECHILD).
 *
 * --sabotage=WHAT (debug) damages the state right after SIGTERM to show
 * that the checks can fail: handler, flags, mask, ign, restart, resethand,
 * nocldstop.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <linux/futex.h>

#include "zdtmtst.h"

const char *test_doc = "Check that the actions of all 64 signals are restored";

static char *sabotage;
TEST_OPTION(sabotage, string,
	    "debug: damage the state after SIGTERM (handler, flags, mask, ign, restart, resethand, nocldstop)", 0);

#define SA_RESTORER_ 0x04000000UL
#define NSIGS 64
#define BIT(s) (1ULL << ((s)-1))

struct ksa {
	unsigned long handler, flags, restorer;
	uint64_t mask;
};

enum kind { K_DFL, K_IGN, K_PLAIN, K_INFO };

struct spec {
	enum kind kind;
	unsigned long flags;
	uint64_t mask;
	int set; /* 0: not touched by the test */
};

static struct spec specs[NSIGS + 1];
static struct ksa before[NSIGS + 1];

/* what the handlers saw */
static volatile int hits[NSIGS + 1];
static uint64_t hmask[NSIGS + 1];
static int hcode[NSIGS + 1], hpid[NSIGS + 1], huid[NSIGS + 1], hstatus[NSIGS + 1], hinfo[NSIGS + 1];
/* the futex test hook */
static volatile int hook_sig, hook_target;
static int32_t fword;

static int failed;

static long sys_sigaction(int sig, const struct ksa *act, struct ksa *old)
{
	return syscall(SYS_rt_sigaction, sig, act, old, 8);
}

static uint64_t cur_mask(void)
{
	uint64_t m = 0;

	syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &m, 8);
	return m;
}

static void record(int sig, siginfo_t *si)
{
	int saved = errno;

	hmask[sig] = cur_mask();
	if (si) {
		/* a real fault: do not return into the faulting instruction */
		if (si->si_code > 0 && (sig == SIGILL || sig == SIGBUS || sig == SIGFPE || sig == SIGSEGV ||
					sig == SIGTRAP)) {
			static const char msg[] = "FAIL: sigaction_all.c: a real fault signal was caught\n";

			write(2, msg, sizeof(msg) - 1);
			_exit(2);
		}
		hcode[sig] = si->si_code;
		hpid[sig] = si->si_pid;
		huid[sig] = si->si_uid;
		hstatus[sig] = si->si_status;
		hinfo[sig] = 1;
	}
	hits[sig]++;
	if (sig == hook_sig && hits[sig] == hook_target)
		__atomic_store_n(&fword, 1, __ATOMIC_SEQ_CST);
	errno = saved;
}

static void h_plain(int sig)
{
	record(sig, NULL);
}

static void h_info(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	record(sig, si);
}

static void def(int sig, enum kind k, unsigned long flags, uint64_t mask)
{
	specs[sig] = (struct spec){ k, flags, mask, 1 };
}

static void build_specs(void)
{
	const uint64_t rt_all = ~0ULL << 33; /* 34..64 */
	int s;

	def(SIGHUP, K_INFO, SA_RESTART, BIT(SIGUSR2) | BIT(37));
	def(SIGINT, K_PLAIN, 0, 0);
	def(SIGQUIT, K_IGN, 0, 0);
	def(SIGILL, K_INFO, SA_NODEFER, BIT(SIGHUP));
	def(SIGTRAP, K_IGN, SA_RESTART, 0);
	def(SIGABRT, K_INFO, SA_RESETHAND, BIT(SIGINT) | BIT(SIGQUIT));
	def(SIGBUS, K_INFO, SA_ONSTACK | SA_RESTART, 0);
	def(SIGFPE, K_DFL, SA_SIGINFO | SA_NODEFER, BIT(SIGUSR1));
	def(SIGUSR1, K_INFO, SA_RESTART | SA_NODEFER, BIT(SIGHUP) | BIT(SIGINT) | BIT(40));
	def(SIGSEGV, K_DFL, SA_ONSTACK | SA_NODEFER, BIT(SIGBUS));
	def(SIGUSR2, K_PLAIN, SA_RESETHAND, BIT(SIGUSR1));
	def(SIGPIPE, K_IGN, 0, 0);
	def(SIGALRM, K_PLAIN, 0, 0);
	def(SIGSTKFLT, K_INFO, SA_ONSTACK, rt_all);
	def(SIGCHLD, K_INFO, SA_NOCLDSTOP | SA_NOCLDWAIT | SA_RESTART, 0);
	def(SIGCONT, K_PLAIN, SA_RESTART, BIT(SIGTSTP));
	def(SIGTSTP, K_IGN, 0, 0);
	def(SIGTTIN, K_PLAIN, SA_RESETHAND | SA_RESTART, 0);
	def(SIGTTOU, K_DFL, 0, 0);
	def(SIGURG, K_DFL, SA_RESTART, BIT(SIGHUP) | BIT(64));
	def(SIGXCPU, K_INFO, 0, BIT(SIGXFSZ));
	def(SIGXFSZ, K_IGN, 0, 0);
	def(SIGVTALRM, K_PLAIN, SA_RESTART, 0);
	def(SIGPROF, K_INFO, SA_ONSTACK | SA_NODEFER, 0);
	def(SIGWINCH, K_IGN, 0, BIT(SIGHUP));
	def(SIGIO, K_PLAIN, 0, rt_all);
	def(SIGPWR, K_INFO, SA_RESETHAND, 0);
	def(SIGSYS, K_DFL, 0, 0);
	def(32, K_INFO, SA_RESTART, BIT(33));
	def(33, K_IGN, 0, 0);
	for (s = 34; s <= 64; s++) {
		switch ((s - 34) % 7) {
		case 0:
			def(s, K_INFO, SA_RESTART, s < 64 ? BIT(s + 1) : 0);
			break;
		case 1:
			def(s, K_PLAIN, SA_NODEFER, BIT(SIGUSR1));
			break;
		case 2:
			def(s, K_IGN, 0, 0);
			break;
		case 3:
			def(s, K_INFO, SA_RESETHAND, BIT(s - 1));
			break;
		case 4:
			def(s, K_PLAIN, SA_ONSTACK | SA_RESTART, 0);
			break;
		case 5:
			def(s, K_DFL, 0, 0);
			break;
		case 6:
			def(s, K_INFO, 0, BIT(SIGHUP) | BIT(SIGINT) | BIT(s));
			break;
		}
	}
}

static unsigned long handler_of(enum kind k)
{
	switch (k) {
	case K_DFL:
		return (unsigned long)SIG_DFL;
	case K_IGN:
		return (unsigned long)SIG_IGN;
	case K_PLAIN:
		return (unsigned long)h_plain;
	default:
		return (unsigned long)h_info;
	}
}

static int skip_sig(int s)
{
	return s == SIGKILL || s == SIGSTOP || s == SIGTERM;
}

static const char *kind_name(unsigned long h)
{
	if (h == (unsigned long)SIG_DFL)
		return "SIG_DFL";
	if (h == (unsigned long)SIG_IGN)
		return "SIG_IGN";
	if (h == (unsigned long)h_plain)
		return "h_plain";
	if (h == (unsigned long)h_info)
		return "h_info";
	return "?";
}

static void do_sabotage(void)
{
	struct ksa a;

	if (!sabotage)
		return;
	test_msg("sabotage: %s\n", sabotage);
	if (!strcmp(sabotage, "handler")) {
		a = before[SIGINT];
		a.handler = (unsigned long)h_info;
		sys_sigaction(SIGINT, &a, NULL);
	} else if (!strcmp(sabotage, "flags")) {
		a = before[SIGHUP];
		a.flags &= ~SA_RESTART;
		sys_sigaction(SIGHUP, &a, NULL);
	} else if (!strcmp(sabotage, "mask")) {
		a = before[SIGUSR1];
		a.mask |= BIT(SIGPIPE);
		sys_sigaction(SIGUSR1, &a, NULL);
	} else if (!strcmp(sabotage, "ign")) {
		a = before[SIGPIPE];
		a.handler = (unsigned long)SIG_DFL;
		sys_sigaction(SIGPIPE, &a, NULL);
	} else if (!strcmp(sabotage, "restart")) {
		a = before[SIGVTALRM];
		a.flags &= ~SA_RESTART;
		sys_sigaction(SIGVTALRM, &a, NULL);
	} else if (!strcmp(sabotage, "resethand")) {
		a = before[SIGABRT];
		a.flags &= ~SA_RESETHAND;
		sys_sigaction(SIGABRT, &a, NULL);
	} else if (!strcmp(sabotage, "nocldstop")) {
		a = before[SIGCHLD];
		a.flags &= ~SA_NOCLDSTOP;
		sys_sigaction(SIGCHLD, &a, NULL);
	} else {
		test_msg("unknown --sabotage=%s\n", sabotage);
		failed = 1;
	}
}

/* 1: the actions as the kernel reports them */
static void compare_actions(int ok_handler[NSIGS + 1])
{
	int s;

	for (s = 1; s <= NSIGS; s++) {
		struct ksa now;

		ok_handler[s] = 0;
		if (s == SIGKILL || s == SIGSTOP)
			continue;
		if (sys_sigaction(s, NULL, &now)) {
			test_check(0, "rt_sigaction(%d) query: %m", s);
			continue;
		}
		ok_handler[s] = now.handler == before[s].handler;
		test_check(now.handler == before[s].handler, "signal %d: handler %#lx (%s), was %#lx (%s)", s, now.handler,
		      kind_name(now.handler), before[s].handler, kind_name(before[s].handler));
		test_check(now.flags == before[s].flags, "signal %d: flags %#lx, was %#lx", s, now.flags, before[s].flags);
		test_check(now.restorer == before[s].restorer, "signal %d: restorer %#lx, was %#lx", s, now.restorer,
		      before[s].restorer);
		test_check(now.mask == before[s].mask, "signal %d: sa_mask %#llx, was %#llx", s,
		      (unsigned long long)now.mask, (unsigned long long)before[s].mask);
	}
}

/* 2: send each signal that has a handler, and the ignored ones */
static void raise_all(const int ok_handler[NSIGS + 1])
{
	pid_t pid = getpid(), tid = syscall(SYS_gettid);
	struct rlimit nocore = { 0, 0 };
	uint64_t base = cur_mask(), pend = 0;
	int s, raised = 0, ignored = 0;

	setrlimit(RLIMIT_CORE, &nocore);
	for (s = 1; s <= NSIGS; s++) {
		struct spec *sp = &specs[s];
		struct ksa now;

		if (skip_sig(s) || !sp->set || !ok_handler[s])
			continue;
		if (sp->kind == K_IGN) {
			syscall(SYS_tgkill, pid, tid, s);
			test_check(hits[s] == 0, "ignored signal %d ran a handler", s);
			ignored++;
			continue;
		}
		if (sp->kind == K_DFL)
			continue;
		memset((void *)&hits[s], 0, sizeof(hits[s]));
		hinfo[s] = 0;
		syscall(SYS_tgkill, pid, tid, s);
		raised++;
		test_check(hits[s] == 1, "signal %d: the handler ran %d times, expected once", s, hits[s]);
		if (hits[s] != 1)
			continue;
		{
			uint64_t want = base | before[s].mask;

			if (!(before[s].flags & SA_NODEFER))
				want |= BIT(s);
			want &= ~(BIT(SIGKILL) | BIT(SIGSTOP));
			test_check(hmask[s] == want, "signal %d: blocked mask in the handler %#llx, expected %#llx", s,
			      (unsigned long long)hmask[s], (unsigned long long)want);
		}
		if (sp->kind == K_INFO) {
			test_check(hinfo[s], "signal %d: the SA_SIGINFO handler got no siginfo", s);
			test_check(hcode[s] == SI_TKILL && hpid[s] == pid && huid[s] == (int)getuid(),
			      "signal %d: si_code %d si_pid %d si_uid %d, expected %d %d %d", s, hcode[s], hpid[s],
			      huid[s], SI_TKILL, pid, getuid());
		}
		if (sys_sigaction(s, NULL, &now) == 0) {
			if (before[s].flags & SA_RESETHAND)
				test_check(now.handler == (unsigned long)SIG_DFL,
				      "signal %d (SA_RESETHAND): handler %s after it ran, expected SIG_DFL", s,
				      kind_name(now.handler));
			else
				test_check(now.handler == before[s].handler,
				      "signal %d: handler %s after it ran, expected %s", s, kind_name(now.handler),
				      kind_name(before[s].handler));
		}
	}
	syscall(SYS_rt_sigpending, &pend, 8);
	test_check(pend == 0, "signals pending after sending the ignored ones: %#llx", (unsigned long long)pend);
	test_msg("%d handlers run, %d ignored signals sent\n", raised, ignored);
}

/*
 * 3: a futex wait interrupted by `sig` from a periodic timer; the handler
 * sets the word at its `target`-th run. Returns the errno of FUTEX_WAIT.
 */
static int futex_interrupted(int sig, int target, int *nhits)
{
	struct sigevent sev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = sig };
	struct itimerspec its = { { 0, 30000000 }, { 0, 30000000 } };
	timer_t t;
	long ret;
	int err;

	fword = 0;
	hits[sig] = 0;
	hook_sig = sig;
	hook_target = target;
	if (timer_create(CLOCK_MONOTONIC, &sev, &t)) {
		pr_perror("timer_create");
		return -1;
	}
	timer_settime(t, 0, &its, NULL);
	ret = syscall(SYS_futex, &fword, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
	err = ret ? errno : 0;
	timer_delete(t);
	hook_sig = 0;
	*nhits = hits[sig];
	return err;
}

static void restart_checks(const int ok_handler[NSIGS + 1])
{
	int err, n;

	if (ok_handler[SIGVTALRM]) {
		err = futex_interrupted(SIGVTALRM, 2, &n);
		test_check(err == EAGAIN && n >= 2,
		      "SIGVTALRM (SA_RESTART): the futex wait ended with %s after %d signals, expected a restart "
		      "(EAGAIN after 2)", strerror(err), n);
	}
	if (ok_handler[SIGALRM]) {
		err = futex_interrupted(SIGALRM, 3, &n);
		test_check(err == EINTR && n == 1,
		      "SIGALRM (no SA_RESTART): the futex wait ended with %s after %d signals, expected EINTR "
		      "after 1", strerror(err), n);
	}
}

static char proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (!fgets(buf, sizeof(buf), f)) {
		fclose(f);
		return 0;
	}
	fclose(f);
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* 4: SA_NOCLDSTOP and SA_NOCLDWAIT */
static void sigchld_checks(void)
{
	pid_t child;
	int i, st;

	hits[SIGCHLD] = 0;
	child = fork();
	if (child < 0) {
		test_check(0, "fork: %m");
		return;
	}
	if (child == 0) {
		raise(SIGSTOP);
		_exit(7);
	}
	for (i = 0; i < 500 && proc_state(child) != 'T'; i++)
		msleep(10);
	test_check(proc_state(child) == 'T', "the child %d did not stop (state %c)", child, proc_state(child));
	msleep(50);
	test_check(hits[SIGCHLD] == 0, "SA_NOCLDSTOP: the child's stop sent SIGCHLD (si_code %d)", hcode[SIGCHLD]);
	kill(child, SIGCONT);
	for (i = 0; i < 500 && hits[SIGCHLD] == 0; i++)
		msleep(10);
	msleep(20);
	test_check(hits[SIGCHLD] == 1 && hcode[SIGCHLD] == CLD_EXITED && hstatus[SIGCHLD] == 7,
	      "SIGCHLD: %d signals, the last with si_code %d si_status %d; expected one CLD_EXITED(%d) with status 7",
	      hits[SIGCHLD], hcode[SIGCHLD], hstatus[SIGCHLD], CLD_EXITED);
	errno = 0;
	test_check(waitpid(child, &st, WNOHANG) < 0 && errno == ECHILD,
	      "SA_NOCLDWAIT: the child %d was not reaped automatically (waitpid: %m)", child);
	waitpid(child, &st, 0);
}

int main(int argc, char **argv)
{
	int ok_handler[NSIGS + 1];
	struct sigaction sa = { .sa_handler = h_plain };
	struct ksa probe;
	int s, n = 0;

	test_init(argc, argv);
	build_specs();

	/* glibc's restorer, for the raw rt_sigaction calls */
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) || sys_sigaction(SIGUSR1, NULL, &probe)) {
		pr_perror("sigaction probe");
		return 1;
	}
	if (!(probe.flags & SA_RESTORER_)) {
		pr_err("glibc sets no SA_RESTORER (flags %#lx)\n", probe.flags);
		return 1;
	}

	for (s = 1; s <= NSIGS; s++) {
		struct spec *sp = &specs[s];
		struct ksa a;

		if (skip_sig(s) || !sp->set)
			continue;
		a.handler = handler_of(sp->kind);
		a.flags = sp->flags | SA_RESTORER_ | (sp->kind == K_INFO ? SA_SIGINFO : 0);
		a.restorer = probe.restorer;
		a.mask = sp->mask;
		if (sys_sigaction(s, &a, NULL)) {
			pr_perror("rt_sigaction(%d)", s);
			return 1;
		}
		n++;
	}
	for (s = 1; s <= NSIGS; s++)
		if (s != SIGKILL && s != SIGSTOP && sys_sigaction(s, NULL, &before[s])) {
			pr_perror("rt_sigaction(%d) query", s);
			return 1;
		}
	test_msg("%d actions set\n", n);

	test_daemon();
	test_waitsig();

	do_sabotage();
	compare_actions(ok_handler);
	raise_all(ok_handler);
	restart_checks(ok_handler);
	if (ok_handler[SIGCHLD])
		sigchld_checks();

	if (failed) {
		errno = 0;
		fail("signal actions changed (see above)");
		return 1;
	}
	pass();
	return 0;
}

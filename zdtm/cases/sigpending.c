/*
 * sigpending: process-wide pending signals survive checkpoint/restore, in
 * order and with their siginfo.
 *
 * Everything but SIGTERM is blocked, then signals are sent to the process
 * (not to a thread, so they sit in the shared queue):
 *   kill()          SIGHUP, SIGUSR1, SIGURG (ignored by default, but blocked
 *                   signals are queued anyway), SIGTRAP, SIGRTMIN+3 twice
 *   sigqueue()      SIGUSR2 twice (a standard signal is queued once: only
 *                   the first value may come out), SIGSYS, SIGRTMIN,
 *                   SIGRTMIN+1 five times with distinct values (interleaved
 *                   with the others), SIGRTMAX
 *   rt_sigqueueinfo SIGWINCH and SIGRTMIN+5 with hand-made siginfo
 *                   (negative si_code, si_errno, made-up pid/uid/value and
 *                   a pattern in the rest of the union)
 *
 * After restore:
 *  - sigpending() and ShdPnd in /proc/self/status are exactly the expected
 *    set, SigPnd (this thread's private queue) is empty, SigBlk unchanged;
 *  - sigtimedwait() returns the signals in the kernel's order (synchronous
 *    signals SIGTRAP, SIGSYS first, then by number, each RT signal's
 *    instances in the order they were sent) with si_code, si_pid, si_uid and
 *    si_value; the hand-made ones must come back byte for byte (the 48 bytes
 *    the kernel keeps); then nothing is left.
 *
 * --sabotage=WHAT (debug): extra, drop, order, private.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>

#include "zdtmtst.h"

const char *test_doc = "Check that process-wide pending signals are restored in order with their siginfo";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (extra, drop, order, private)", 0);

/* the part of siginfo the kernel keeps (kernel_siginfo_t on 64-bit) */
#define KSI_SIZE 48
#define MAXSIG 32

enum how { H_KILL, H_QUEUE, H_RAW };

struct sent {
	int sig;
	enum how how;
	uint64_t value;
	siginfo_t raw;	/* H_RAW */
	int dropped;	/* a standard signal already pending: not queued */
};

static struct sent sent[MAXSIG];
static int nsent;
/* glibc's sigtimedwait() turns SI_TKILL into SI_USER: ask the kernel */
static int sigtimedwait_raw(const sigset_t *set, siginfo_t *si, const struct timespec *ts)
{
	return syscall(SYS_rt_sigtimedwait, set, si, ts, 8);
}

static int failed;


static void fill_raw(siginfo_t *si, int sig, int code, uint32_t seed)
{
	unsigned char *p = (unsigned char *)si;
	int i;

	memset(si, 0, sizeof(*si));
	/* the union: pid, uid, value, then a pattern to the end of the kept part */
	for (i = 16; i < KSI_SIZE; i++)
		p[i] = (unsigned char)(seed * 31 + i * 7);
	si->si_signo = sig;
	si->si_errno = 77;
	si->si_code = code;
}

static int send_sig(int sig, enum how how, uint64_t value, int code)
{
	struct sent *s = &sent[nsent++];
	sigset_t pend;
	int ret;

	s->sig = sig;
	s->how = how;
	s->value = value;
	sigpending(&pend);
	s->dropped = sig < SIGRTMIN && sigismember(&pend, sig);
	switch (how) {
	case H_KILL:
		ret = kill(getpid(), sig);
		break;
	case H_QUEUE: {
		union sigval v = { .sival_ptr = (void *)(uintptr_t)value };

		ret = sigqueue(getpid(), sig, v);
		break;
	}
	default:
		fill_raw(&s->raw, sig, code, sig * 1000 + nsent);
		ret = syscall(SYS_rt_sigqueueinfo, getpid(), sig, &s->raw);
		break;
	}
	if (ret)
		pr_perror("sending signal %d", sig);
	return ret;
}

/* the order in which the kernel hands them out */
static int expected(struct sent **out)
{
	static const int sync_first[] = { SIGTRAP, SIGSYS };
	int n = 0, i, sig, k;

	for (k = 0; k < 2; k++)
		for (i = 0; i < nsent; i++)
			if (sent[i].sig == sync_first[k] && !sent[i].dropped)
				out[n++] = &sent[i];
	for (sig = 1; sig <= SIGRTMAX; sig++) {
		if (sig == SIGTRAP || sig == SIGSYS)
			continue;
		for (i = 0; i < nsent; i++)
			if (sent[i].sig == sig && !sent[i].dropped)
				out[n++] = &sent[i];
	}
	return n;
}

static uint64_t mask_of(struct sent **e, int n)
{
	uint64_t m = 0;
	int i;

	for (i = 0; i < n; i++)
		m |= 1ULL << (e[i]->sig - 1);
	return m;
}

static int status_mask(const char *key, uint64_t *v)
{
	char line[256];
	size_t kl = strlen(key);
	FILE *f = fopen("/proc/self/status", "r");
	int ret = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			*v = strtoull(line + kl + 1, NULL, 16);
			ret = 0;
			break;
		}
	fclose(f);
	return ret;
}

static void do_sabotage(void)
{
	struct timespec zero = { 0, 0 };
	siginfo_t si;

	if (!sabotage)
		return;
	test_msg("sabotage: %s\n", sabotage);
	if (!strcmp(sabotage, "extra")) {
		kill(getpid(), SIGRTMIN + 2);
	} else if (!strcmp(sabotage, "drop")) {
		sigset_t one;

		sigemptyset(&one);
		sigaddset(&one, SIGRTMIN + 1);
		sigtimedwait_raw(&one, &si, &zero);
	} else if (!strcmp(sabotage, "order")) {
		/* take the first two SIGRTMIN+1 and queue them again: now last */
		sigset_t one;
		int i;

		sigemptyset(&one);
		sigaddset(&one, SIGRTMIN + 1);
		for (i = 0; i < 2; i++)
			if (sigtimedwait_raw(&one, &si, &zero) > 0)
				sigqueue(getpid(), SIGRTMIN + 1, si.si_value);
	} else if (!strcmp(sabotage, "private")) {
		syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGRTMIN + 1);
	} else {
		test_msg("unknown --sabotage=%s\n", sabotage);
		failed = 1;
	}
}

int main(int argc, char **argv)
{
	struct sent *exp[MAXSIG];
	uint64_t want_set, v, blk_before = 0, blk_after = 0;
	struct timespec zero = { 0, 0 };
	sigset_t all, pend;
	int nexp, i, sig;

	test_init(argc, argv);

	sigfillset(&all);
	sigdelset(&all, SIGTERM);
	if (sigprocmask(SIG_SETMASK, &all, NULL)) {
		pr_perror("sigprocmask");
		return 1;
	}

	if (send_sig(SIGRTMIN + 1, H_QUEUE, 0x1000000000000001ULL, 0) ||
	    send_sig(SIGUSR1, H_KILL, 0, 0) ||
	    send_sig(SIGRTMIN + 1, H_QUEUE, 0x2000000000000002ULL, 0) ||
	    send_sig(SIGUSR2, H_QUEUE, 0xfeedface12345678ULL, 0) ||
	    send_sig(SIGRTMIN + 3, H_KILL, 0, 0) ||
	    send_sig(SIGRTMIN + 1, H_QUEUE, 0x3000000000000003ULL, 0) ||
	    send_sig(SIGUSR2, H_QUEUE, 0x0badbadbadbadbadULL, 0) ||	/* dropped */
	    send_sig(SIGHUP, H_KILL, 0, 0) ||
	    send_sig(SIGRTMAX, H_QUEUE, 0x7fffffffffffffffULL, 0) ||
	    send_sig(SIGRTMIN + 5, H_RAW, 0, -50) ||
	    send_sig(SIGRTMIN + 1, H_QUEUE, 0, 0) ||
	    send_sig(SIGURG, H_KILL, 0, 0) ||
	    send_sig(SIGRTMIN, H_QUEUE, 0x5555aaaa5555aaaaULL, 0) ||
	    send_sig(SIGTRAP, H_KILL, 0, 0) ||
	    send_sig(SIGRTMIN + 3, H_KILL, 0, 0) ||
	    send_sig(SIGWINCH, H_RAW, 0, -60) ||
	    send_sig(SIGSYS, H_QUEUE, 0x31, 0) ||
	    send_sig(SIGRTMIN + 1, H_QUEUE, 0xffffffffffffffffULL, 0))
		return 1;

	nexp = expected(exp);
	want_set = mask_of(exp, nexp);
	status_mask("SigBlk", &blk_before);
	test_msg("%d signals sent, %d pending, set %#llx\n", nsent, nexp, (unsigned long long)want_set);

	test_daemon();
	test_waitsig();

	do_sabotage();

	/* the pending sets */
	sigpending(&pend);
	for (sig = 1; sig <= SIGRTMAX; sig++) {
		int want = !!(want_set & (1ULL << (sig - 1)));

		test_check(sigismember(&pend, sig) == want, "signal %d is %spending", sig, want ? "not " : "");
	}
	if (status_mask("ShdPnd", &v) == 0)
		test_check(v == want_set, "ShdPnd %#llx, expected %#llx", (unsigned long long)v,
		      (unsigned long long)want_set);
	else
		test_check(0, "no ShdPnd in /proc/self/status");
	if (status_mask("SigPnd", &v) == 0)
		test_check(v == 0, "SigPnd (the thread's private queue) %#llx, expected empty", (unsigned long long)v);
	status_mask("SigBlk", &blk_after);
	test_check(blk_after == blk_before, "SigBlk %#llx, was %#llx", (unsigned long long)blk_after,
	      (unsigned long long)blk_before);

	/* the queue, in order */
	for (i = 0;; i++) {
		siginfo_t si;
		struct sent *e;

		memset(&si, 0, sizeof(si));
		sig = sigtimedwait_raw(&all, &si, &zero);
		if (sig < 0) {
			test_check(errno == EAGAIN, "sigtimedwait: %m");
			test_check(i == nexp, "%d signals were pending, expected %d", i, nexp);
			break;
		}
		if (i >= nexp) {
			test_check(0, "an extra signal %d is pending (si_code %d, si_pid %d)", sig, si.si_code, si.si_pid);
			continue;
		}
		e = exp[i];
		if (sig != e->sig) {
			test_check(0, "signal #%d is %d (si_code %d), expected %d", i, sig, si.si_code, e->sig);
			continue;
		}
		switch (e->how) {
		case H_KILL:
			test_check(si.si_code == SI_USER && si.si_pid == getpid() && si.si_uid == getuid(),
			      "signal #%d (%d): si_code %d si_pid %d si_uid %d, expected SI_USER %d %d", i, sig,
			      si.si_code, si.si_pid, si.si_uid, getpid(), getuid());
			break;
		case H_QUEUE:
			test_check(si.si_code == SI_QUEUE && si.si_pid == getpid() && si.si_uid == getuid() &&
				      (uint64_t)(uintptr_t)si.si_value.sival_ptr == e->value,
			      "signal #%d (%d): si_code %d si_pid %d si_uid %d si_value %#llx, expected SI_QUEUE %d %d "
			      "%#llx", i, sig, si.si_code, si.si_pid, si.si_uid,
			      (unsigned long long)(uintptr_t)si.si_value.sival_ptr, getpid(), getuid(),
			      (unsigned long long)e->value);
			break;
		case H_RAW:
			if (memcmp(&si, &e->raw, KSI_SIZE)) {
				const unsigned char *a = (void *)&si, *b = (void *)&e->raw;
				int j;

				for (j = 0; j < KSI_SIZE && a[j] == b[j]; j++)
					;
				test_check(0, "signal #%d (%d): the hand-made siginfo differs from byte %d (%#x, expected %#x)",
				      i, sig, j, a[j], b[j]);
			}
			break;
		}
	}

	if (failed) {
		errno = 0;
		fail("pending signals changed (see above)");
		return 1;
	}
	pass();
	return 0;
}

/*
 * sigaction_default: signals whose action is the default keep it.
 *
 * The test sets no action but SIGUSR1's (a handler) and SIGHUP's
 * (SIG_IGN), and records the action of every signal 1..64 (raw
 * rt_sigaction, so glibc's internal 32 and 33 too) and the SigIgn/SigCgt
 * masks of /proc/self/status. After restore every action must be the one
 * recorded: in particular the engine restoring the task must not leave its
 * own actions behind (a Rust program ignores SIGPIPE and catches SIGSEGV
 * and SIGBUS). Then SIGPIPE, still SIG_DFL, must kill a child forked after
 * the restore (which inherits the actions), as it would have before.
 */
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that default signal actions stay default";

#define NSIGS 64

struct ksa {
	unsigned long handler, flags, restorer;
	uint64_t mask;
};

static struct ksa before[NSIGS + 1];

static void on_usr1(int sig)
{
	(void)sig;
}

static int get(int sig, struct ksa *out)
{
	memset(out, 0, sizeof(*out));
	return syscall(SYS_rt_sigaction, sig, NULL, out, 8);
}

/* SigIgn and SigCgt of /proc/self/status, as text. */
static void masks(char *ign, char *cgt, size_t n)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];

	ign[0] = cgt[0] = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "SigIgn:", 7))
			snprintf(ign, n, "%.40s", line + 7);
		else if (!strncmp(line, "SigCgt:", 7))
			snprintf(cgt, n, "%.40s", line + 7);
	}
	fclose(f);
}

int main(int argc, char **argv)
{
	char ign0[64], cgt0[64], ign1[64], cgt1[64];
	int sig, bad = 0, status;
	pid_t child;

	test_init(argc, argv);
	signal(SIGUSR1, on_usr1);
	signal(SIGHUP, SIG_IGN);
	for (sig = 1; sig <= NSIGS; sig++)
		if (sig != SIGKILL && sig != SIGSTOP && get(sig, &before[sig]))
			pr_perror("rt_sigaction(%d)", sig);
	masks(ign0, cgt0, sizeof(ign0));

	test_daemon();
	test_waitsig();

	for (sig = 1; sig <= NSIGS; sig++) {
		struct ksa now;

		if (sig == SIGKILL || sig == SIGSTOP || sig == SIGTERM)
			continue; /* SIGTERM: the library's own, changed on purpose */
		if (get(sig, &now)) {
			pr_perror("rt_sigaction(%d)", sig);
			bad++;
			continue;
		}
		if (now.handler != before[sig].handler || now.flags != before[sig].flags ||
		    now.mask != before[sig].mask) {
			pr_err("signal %d: handler %#lx flags %#lx mask %#llx, was %#lx %#lx %#llx\n", sig,
			       now.handler, now.flags, (unsigned long long)now.mask, before[sig].handler,
			       before[sig].flags, (unsigned long long)before[sig].mask);
			bad++;
		}
	}
	masks(ign1, cgt1, sizeof(ign1));
	if (strcmp(ign0, ign1)) {
		pr_err("SigIgn was %.20s, now %.20s\n", ign0, ign1);
		bad++;
	}

	/* A child that writes to a pipe nobody reads dies of SIGPIPE. */
	child = fork();
	if (child == 0) {
		int p[2];

		if (pipe(p))
			_exit(2);
		close(p[0]);
		(void)write(p[1], "x", 1);
		_exit(3);
	}
	if (child < 0 || waitpid(child, &status, 0) != child) {
		pr_perror("fork/waitpid");
		bad++;
	} else if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGPIPE) {
		pr_err("the child was not killed by SIGPIPE (status %#x)\n", status);
		bad++;
	}

	if (bad)
		fail("%d signal actions differ", bad);
	else
		pass();
	return 0;
}

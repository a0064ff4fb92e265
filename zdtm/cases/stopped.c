/*
 * stopped: a stopped process stays stopped across checkpoint/restore, with
 * its pending signal, and resumes on SIGCONT (after CRIU's zdtm
 * static/stopped.c; a pipe is not used: the child just pauses).
 *
 * The test forks a child (which inherits an SA_SIGINFO SIGUSR1 handler that
 * exits with 42 when the siginfo is the expected one), stops it with
 * SIGSTOP, confirms the stop with waitid(WSTOPPED|WNOWAIT) (so the stop is
 * still to be reported to a later waitpid), and queues SIGUSR1 with a value
 * to the stopped child: it stays pending while the child is stopped.
 *
 * After restore:
 *  - the child is stopped (state T in /proc/PID/stat), SIGUSR1 pending in
 *    its ShdPnd;
 *  - waitpid(WUNTRACED|WNOHANG) reports it stopped by SIGSTOP, once;
 *  - after SIGCONT the child runs the SIGUSR1 handler (si_code SI_QUEUE,
 *    si_pid = the test, the value) and exits with 42 (43: wrong value, 44:
 *    wrong code, 45: wrong pid); it must exit within 10 s.
 *
 * Needs process trees (a parent and its child).
 *
 * --sabotage=WHAT (debug): cont (SIGCONT the child), reap (consume the stop
 * report).
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "zdtmtst.h"

const char *test_doc = "Check that a stopped child stays stopped, with a pending signal";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (cont, reap)", 0);

#define VALUE 0x5717bbed
static pid_t parent;

static void child_usr1(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	if (si->si_value.sival_int != VALUE)
		_exit(43);
	if (si->si_code != SI_QUEUE)
		_exit(44);
	if (si->si_pid != parent)
		_exit(45);
	_exit(42);
}

static char proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
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

static int shdpnd(pid_t pid, uint64_t *v)
{
	char path[64], line[256];
	FILE *f;
	int ret = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "ShdPnd:", 7)) {
			*v = strtoull(line + 7, NULL, 16);
			ret = 0;
		}
	fclose(f);
	return ret;
}

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_sigaction = child_usr1, .sa_flags = SA_SIGINFO };
	union sigval sv = { .sival_int = VALUE };
	int failed = 0, status, i;
	siginfo_t info;
	uint64_t pnd = 0;
	pid_t pid, r;
	char st;

	test_init(argc, argv);
	parent = getpid();

	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL)) {
		pr_perror("sigaction");
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		pr_perror("fork");
		return 1;
	}
	if (pid == 0) {
		for (;;)
			pause();
	}

	if (kill(pid, SIGSTOP)) {
		pr_perror("kill(SIGSTOP)");
		goto err;
	}
	memset(&info, 0, sizeof(info));
	if (waitid(P_PID, pid, &info, WSTOPPED | WNOWAIT) < 0 || info.si_code != CLD_STOPPED) {
		pr_perror("waitid: the child did not stop (si_code %d)", info.si_code);
		goto err;
	}
	if (sigqueue(pid, SIGUSR1, sv)) {
		pr_perror("sigqueue");
		goto err;
	}
	if (shdpnd(pid, &pnd) || !(pnd & (1ULL << (SIGUSR1 - 1)))) {
		pr_err("SIGUSR1 is not pending in the stopped child (ShdPnd %#llx)\n", (unsigned long long)pnd);
		goto err;
	}
	test_msg("child %d stopped with SIGUSR1 pending\n", pid);

	test_daemon();
	test_waitsig();

	if (sabotage) {
		test_msg("sabotage: %s\n", sabotage);
		if (!strcmp(sabotage, "cont")) {
			kill(pid, SIGCONT);
			msleep(100);
		} else if (!strcmp(sabotage, "reap")) {
			waitpid(pid, &status, WUNTRACED);
		}
	}

	st = proc_state(pid);
	if (st != 'T') {
		test_msg("FAILED: the child %d is in state '%c', not stopped (T)\n", pid, st ? st : '?');
		failed = 1;
	}
	pnd = 0;
	if (st && (shdpnd(pid, &pnd) || !(pnd & (1ULL << (SIGUSR1 - 1))))) {
		test_msg("FAILED: SIGUSR1 is no longer pending in the child (ShdPnd %#llx)\n",
			 (unsigned long long)pnd);
		failed = 1;
	}

	r = waitpid(pid, &status, WUNTRACED | WNOHANG);
	if (r != pid || !WIFSTOPPED(status) || WSTOPSIG(status) != SIGSTOP) {
		test_msg("FAILED: waitpid(WUNTRACED) returned %d, status %#x: the stop is not reported (%m)\n", r,
			 r == pid ? status : 0);
		failed = 1;
	} else {
		r = waitpid(pid, &status, WUNTRACED | WNOHANG);
		if (r != 0) {
			test_msg("FAILED: the stop was reported twice (waitpid returned %d, status %#x)\n", r, status);
			failed = 1;
		}
	}

	kill(pid, SIGCONT);
	for (i = 0; i < 1000; i++) {
		r = waitpid(pid, &status, WNOHANG);
		if (r != 0)
			break;
		msleep(10);
	}
	if (r == 0) {
		test_msg("FAILED: the child did not exit within 10 s of SIGCONT (state %c): SIGUSR1 lost?\n",
			 proc_state(pid));
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		failed = 1;
	} else if (r != pid) {
		test_msg("FAILED: waitpid: %m\n");
		failed = 1;
	} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 42) {
		test_msg("FAILED: the child ended with status %#x (exit code %d; 42 is right, 43 wrong value, 44 "
			 "wrong si_code, 45 wrong si_pid)\n", status, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		failed = 1;
	}

	if (failed) {
		errno = 0;
		fail("the stopped child changed (see above)");
		return 1;
	}
	pass();
	return 0;
err:
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return 1;
}

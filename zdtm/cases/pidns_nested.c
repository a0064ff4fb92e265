/*
 * pidns_nested: a pid namespace made inside the tree, with a session, a
 * group, an orphan and a zombie in it, comes back with its pids at both
 * levels: as it sees them, and as the tree's root sees them.
 *
 * The test task R forks C, which unshares a pid namespace for its
 * children and forks N, born as that namespace's pid 1. N forks
 *	A	setsid(): a session of its own in the namespace, and forks
 *	  A1	setpgid(0, 0): its own group in A's session
 *	Z	_exit(7): a zombie N does not reap
 *	M	forks
 *	  O	waits until M is gone and N adopted it
 * and reaps M. N, A, A1 and O record their pid, parent, group and session
 * as their namespace sees them, and their pid as R's namespace sees it
 * (NSpid's first field: /proc is R's), and send that to R, which records
 * the group and session it sees for each of them.
 *
 * After SIGTERM R checks those groups and sessions from outside again,
 * then sends SIGTERM to C, which passes it to N. N checks that it is
 * still pid 1 and Z still a zombie exited with 7, and sends SIGTERM to A,
 * A1 and O, which check what they recorded. A exits without reaping A1,
 * which then waits to be adopted by N (an orphan made after the restore).
 * N reaps A, A1, O and Z by pid and must have no child left; C reaps N
 * and exits with its status, which R checks.
 *
 * --sabotage (debug): N expects Z to have exited with 8.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check a pid namespace nested in the tree: pids at both levels, a session, an orphan, a zombie";

static int sabotage;
TEST_OPTION(sabotage, bool, "debug: expect a wrong zombie status", 0);

#define ZOMBIE_CODE 7
#define WAIT_SECS 15

enum { N, A, A1, O, NPROC };
static const char *names[NPROC] = { "N", "A", "A1", "O" };

struct rec {
	int who;
	pid_t pid, ppid, pgid, sid, outer;
};

static struct rec all[NPROC], me;
static volatile sig_atomic_t got_term;

static void on_term(int sig)
{
	(void)sig;
	got_term = 1;
}

static void setup_term(void)
{
	struct sigaction sa = { .sa_handler = on_term };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
}

static void wait_term(void)
{
	struct timespec ts = { 0, 10 * 1000 * 1000 };

	while (!got_term)
		nanosleep(&ts, NULL);
}

/* Its pid in the namespace of /proc (R's): NSpid's first field. */
static pid_t outer_pid(void)
{
	char line[256];
	pid_t pid = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "NSpid: %d", &pid) == 1)
			break;
	fclose(f);
	return pid;
}

static void record(int who)
{
	me.who = who;
	me.pid = getpid();
	me.ppid = getppid();
	me.pgid = getpgid(0);
	me.sid = getsid(0);
	me.outer = outer_pid();
}

static void send_rec(int fd)
{
	if (write(fd, &me, sizeof(me)) != sizeof(me)) {
		pr_perror("%s: write of its record", names[me.who]);
		_exit(3);
	}
	close(fd);
}

static int same_as_recorded(void)
{
	if (getpid() != me.pid || getpgid(0) != me.pgid || getsid(0) != me.sid || outer_pid() != me.outer) {
		pr_err("%s after restore: pid %d pgid %d sid %d outer %d, recorded %d %d %d %d\n", names[me.who],
		       getpid(), getpgid(0), getsid(0), outer_pid(), me.pid, me.pgid, me.sid, me.outer);
		return 0;
	}
	return 1;
}

/* A, A1, O after they recorded themselves: wait for SIGTERM, check. */
static void child_wait_and_check(int adopted_later)
{
	struct timespec ts = { 0, 10 * 1000 * 1000 };
	int i, ok;

	wait_term();
	ok = same_as_recorded();
	if (!adopted_later && getppid() != me.ppid) {
		pr_err("%s: parent %d, recorded %d\n", names[me.who], getppid(), me.ppid);
		ok = 0;
	}
	if (adopted_later) {
		for (i = 0; i < WAIT_SECS * 100 && getppid() != 1; i++)
			nanosleep(&ts, NULL);
		if (getppid() != 1) {
			pr_err("%s: parent is %d, not the nested init, after its parent died\n", names[me.who],
			       getppid());
			ok = 0;
		}
	}
	_exit(ok ? 0 : 1);
}

static void run_a(int fd)
{
	pid_t a1;

	if (setsid() < 0) {
		pr_perror("A: setsid");
		_exit(3);
	}
	a1 = fork();
	if (a1 < 0) {
		pr_perror("A: fork A1");
		_exit(3);
	}
	if (a1 == 0) {
		if (setpgid(0, 0)) {
			pr_perror("A1: setpgid");
			_exit(3);
		}
		record(A1);
		send_rec(fd);
		child_wait_and_check(1);
	}
	setpgid(a1, a1); /* either of the two calls makes it certain */
	record(A);
	send_rec(fd);
	/* A exits without reaping A1: A1 is orphaned after the restore */
	child_wait_and_check(0);
}

static void run_m(int fd)
{
	pid_t o = fork();

	if (o < 0) {
		pr_perror("M: fork O");
		_exit(3);
	}
	if (o == 0) {
		while (getppid() != 1)
			usleep(1000);
		record(O);
		send_rec(fd);
		child_wait_and_check(0);
	}
	_exit(0);
}

static int reap(pid_t pid, const char *name, int code)
{
	return test_wait_exit_code(pid, name, code, WAIT_SECS, "the nested init");
}

/* The nested namespace's init. */
static void run_n(int fd)
{
	pid_t a, z, m;
	siginfo_t si;
	int left, ok = 1, want = sabotage ? ZOMBIE_CODE + 1 : ZOMBIE_CODE;

	if (getpid() != 1) {
		pr_err("N is pid %d in its namespace, not 1\n", getpid());
		_exit(3);
	}
	a = fork();
	if (a == 0) {
		setup_term();
		run_a(fd);
	}
	z = fork();
	if (z == 0)
		_exit(ZOMBIE_CODE);
	m = fork();
	if (m == 0) {
		setup_term();
		run_m(fd);
	}
	if (a < 0 || z < 0 || m < 0) {
		pr_perror("N: fork");
		_exit(3);
	}
	if (!reap(m, "M", 0))
		_exit(3);
	if (waitid(P_PID, z, &si, WEXITED | WNOWAIT)) {
		pr_perror("N: waitid Z");
		_exit(3);
	}
	record(N);
	send_rec(fd);

	wait_term();
	ok &= same_as_recorded();
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, z, &si, WEXITED | WNOHANG | WNOWAIT) || si.si_pid != z || si.si_code != CLD_EXITED ||
	    si.si_status != want) {
		pr_err("Z (pid %d in the nested namespace): not a zombie exited with %d (pid %d code %d status %d)\n",
		       z, want, si.si_pid, si.si_code, si.si_status);
		ok = 0;
	}
	/* the init's kill(-1) reaches every other process of its namespace */
	if (kill(-1, SIGTERM)) {
		pr_perror("N: kill(-1, SIGTERM)");
		ok = 0;
	}
	ok &= reap(a, "A", 0);
	ok &= reap(z, "Z", want);
	/* A1 (adopted after the restore) and O (adopted before the dump) */
	for (left = 2; left > 0; left--) {
		pid_t got;
		int status;
		time_t end = time(NULL) + WAIT_SECS;

		while ((got = waitpid(-1, &status, WNOHANG)) == 0 && time(NULL) < end)
			usleep(10000);
		if (got <= 0) {
			pr_perror("N: %d adopted children not reaped", left);
			ok = 0;
			break;
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			pr_err("N: adopted child %d: status 0x%x\n", got, status);
			ok = 0;
		}
	}
	if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD) {
		pr_err("N: a child is left\n");
		ok = 0;
	}
	_exit(ok ? 0 : 1);
}

int main(int argc, char **argv)
{
	int pfd[2], i, ok = 1, status;
	pid_t c;
	pid_t pgid[NPROC], sid[NPROC];

	test_init(argc, argv);
	if (pipe(pfd)) {
		pr_perror("pipe");
		return 1;
	}
	c = fork();
	if (c < 0) {
		pr_perror("fork C");
		return 1;
	}
	if (c == 0) {
		pid_t n;

		close(pfd[0]);
		if (unshare(CLONE_NEWPID)) {
			pr_perror("C: unshare(CLONE_NEWPID)");
			_exit(3);
		}
		n = fork();
		if (n < 0) {
			pr_perror("C: fork N");
			_exit(3);
		}
		if (n == 0) {
			setup_term();
			run_n(pfd[1]);
		}
		close(pfd[1]);
		setup_term();
		wait_term();
		kill(n, SIGTERM);
		if (test_wait_exit(n, &status, WAIT_SECS) || !WIFEXITED(status)) {
			pr_err("C: N did not exit (status 0x%x)\n", status);
			_exit(3);
		}
		_exit(WEXITSTATUS(status));
	}
	close(pfd[1]);
	if (test_collect_records(pfd[0], all, sizeof(all[0]), NPROC, N, NPROC))
		return 1;
	close(pfd[0]);
	for (i = 0; i < NPROC; i++) {
		pgid[i] = getpgid(all[i].outer);
		sid[i] = getsid(all[i].outer);
		test_msg("%s: pid %d ppid %d pgid %d sid %d; from outside pid %d pgid %d sid %d\n", names[i],
			 all[i].pid, all[i].ppid, all[i].pgid, all[i].sid, all[i].outer, pgid[i], sid[i]);
	}
	if (all[N].pid != 1 || all[N].ppid != 0 || all[A].ppid != 1 || all[A].sid != all[A].pid ||
	    all[A1].ppid != all[A].pid || all[A1].pgid != all[A1].pid || all[A1].sid != all[A].pid ||
	    all[O].ppid != 1 || sid[A] != all[A].outer || pgid[A1] != all[A1].outer || sid[A1] != all[A].outer) {
		pr_err("not the expected layout before the dump\n");
		return 1;
	}

	test_daemon();
	test_waitsig();

	for (i = 0; i < NPROC; i++) {
		if (getpgid(all[i].outer) != pgid[i] || getsid(all[i].outer) != sid[i]) {
			pr_err("%s (pid %d from outside): pgid %d sid %d from outside, want %d %d\n", names[i],
			       all[i].outer, getpgid(all[i].outer), getsid(all[i].outer), pgid[i], sid[i]);
			ok = 0;
		}
	}
	kill(c, SIGTERM);
	if (test_wait_exit(c, &status, 2 * WAIT_SECS)) {
		pr_perror("C (pid %d): not reaped", c);
		ok = 0;
	} else if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		pr_err("C: status 0x%x: the nested namespace's checks failed (see above)\n", status);
		ok = 0;
	}
	if (ok)
		pass();
	else
		fail("the nested pid namespace is not as before");
	return 0;
}

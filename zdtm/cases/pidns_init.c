/*
 * pidns_init: a tree that is a whole pid namespace, its root the
 * namespace's init, comes back with its pids, sessions, groups and
 * zombies as the namespace sees them, and its init still reaps orphans.
 *
 * The launcher unshares a pid namespace, so the test task R is born as
 * its pid 1 (and, as every zdtm root, leads session 1). R forks
 *	S	setsid(): a session of its own, and forks
 *	  S1	setpgid(0, 0): its own group in S's session
 *	Z	_exit(42): a zombie R does not reap
 *	M	forks
 *	  O	stays in R's group, then M exits and R reaps it:
 *		O is an orphan the namespace's init adopted
 * Each live process records getpid(), getppid(), getpgid(0), getsid(0)
 * and sends them to R, which checks the layout before the dump.
 *
 * After SIGTERM R checks that it is still pid 1 and leads session 1,
 * the groups and sessions of the others from outside, and Z with
 * waitid(WNOWAIT): still a zombie, exited with 42. Then it sends SIGTERM
 * to S1, O and S. Each checks its own pid, parent, group and session.
 * S exits without reaping S1; S1, whose parent is now gone, waits until
 * it is adopted by the init (getppid() == 1), so an orphan made after the
 * restore is adopted by the restored init, and exits. R reaps S, S1, O
 * and Z by pid (S1 and O are its children only because it adopted them),
 * with their statuses, and then must have no child left.
 *
 * --sabotage (debug): R expects S1 in S's group.
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

const char *test_doc = "Check sessions, groups, zombies and orphans in a pid namespace of the tree's own";

static int sabotage;
TEST_OPTION(sabotage, bool, "debug: expect a wrong group", 0);

#define ZOMBIE_CODE 42
#define WAIT_SECS 15

enum { R, S, S1, O, NPROC };
static const char *names[NPROC] = { "R", "S", "S1", "O" };

struct rec {
	int who;
	pid_t pid, ppid, pgid, sid;
};

static struct rec all[NPROC], me;
static volatile sig_atomic_t got_term;

static void on_term(int sig)
{
	(void)sig;
	got_term = 1;
}

static void record(int who)
{
	me.who = who;
	me.pid = getpid();
	me.ppid = getppid();
	me.pgid = getpgid(0);
	me.sid = getsid(0);
}

static void send_rec(int fd)
{
	if (write(fd, &me, sizeof(me)) != sizeof(me)) {
		pr_perror("%s: write of its record", names[me.who]);
		_exit(3);
	}
}

static int same_as_recorded(const char *what)
{
	if (getpid() != me.pid || getpgid(0) != me.pgid || getsid(0) != me.sid) {
		pr_err("%s (%s): pid %d pgid %d sid %d, recorded %d %d %d\n", names[me.who], what, getpid(),
		       getpgid(0), getsid(0), me.pid, me.pgid, me.sid);
		return 0;
	}
	return 1;
}

/* The life of a child after it recorded itself: wait for SIGTERM, check. */
static void child_wait_and_check(int adopted_later)
{
	struct timespec ts = { 0, 10 * 1000 * 1000 };
	int i, ok;

	while (!got_term)
		nanosleep(&ts, NULL);
	ok = same_as_recorded("after restore");
	if (!adopted_later && getppid() != me.ppid) {
		pr_err("%s: parent %d, recorded %d\n", names[me.who], getppid(), me.ppid);
		ok = 0;
	}
	if (adopted_later) {
		for (i = 0; i < WAIT_SECS * 100 && getppid() != 1; i++)
			nanosleep(&ts, NULL);
		if (getppid() != 1) {
			pr_err("%s: parent is %d, not the init, after its parent died\n", names[me.who], getppid());
			ok = 0;
		}
	}
	_exit(ok ? 0 : 1);
}

static void setup_term(void)
{
	struct sigaction sa = { .sa_handler = on_term };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
}

static void run_s(int fd)
{
	pid_t s1;

	setup_term();
	if (setsid() < 0) {
		pr_perror("S: setsid");
		_exit(3);
	}
	s1 = fork();
	if (s1 < 0) {
		pr_perror("S: fork S1");
		_exit(3);
	}
	if (s1 == 0) {
		if (setpgid(0, 0)) {
			pr_perror("S1: setpgid");
			_exit(3);
		}
		record(S1);
		send_rec(fd);
		close(fd);
		child_wait_and_check(1);
	}
	setpgid(s1, s1); /* either of the two calls makes it certain */
	record(S);
	send_rec(fd);
	close(fd);
	/* S exits without reaping S1: S1 is orphaned after the restore */
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
		setup_term();
		/* wait until M is gone and the init adopted us */
		while (getppid() != 1)
			usleep(1000);
		record(O);
		send_rec(fd);
		close(fd);
		child_wait_and_check(0);
	}
	_exit(0);
}

static int reap(pid_t pid, const char *name, int code)
{
	return test_wait_exit_code(pid, name, code, WAIT_SECS, "the init");
}

int main(int argc, char **argv)
{
	int pfd[2], i, ok = 1;
	pid_t s, z, m;
	siginfo_t si;

	/* the launcher: the test task is born as the new namespace's init */
	if (unshare(CLONE_NEWPID)) {
		fprintf(stderr, "unshare(CLONE_NEWPID): %s\n", strerror(errno));
		return 1;
	}
	test_init(argc, argv);
	if (getpid() != 1) {
		pr_err("the test task is pid %d in its namespace, not 1\n", getpid());
		return 1;
	}
	if (pipe(pfd)) {
		pr_perror("pipe");
		return 1;
	}
	record(R);
	all[R] = me;

	s = fork();
	if (s == 0) {
		close(pfd[0]);
		run_s(pfd[1]);
	}
	z = fork();
	if (z == 0)
		_exit(ZOMBIE_CODE);
	m = fork();
	if (m == 0) {
		close(pfd[0]);
		run_m(pfd[1]);
	}
	if (s < 0 || z < 0 || m < 0) {
		pr_perror("fork");
		return 1;
	}
	close(pfd[1]);
	if (!reap(m, "M", 0))
		return 1;
	if (test_collect_records(pfd[0], all, sizeof(all[0]), NPROC - 1, R + 1, NPROC))
		return 1;
	close(pfd[0]);
	if (waitid(P_PID, z, &si, WEXITED | WNOWAIT)) {
		pr_perror("waitid Z");
		return 1;
	}
	for (i = 0; i < NPROC; i++)
		test_msg("%s: pid %d ppid %d pgid %d sid %d\n", names[i], all[i].pid, all[i].ppid, all[i].pgid,
			 all[i].sid);
	if (all[S].pid != s || all[S].sid != s || all[S].pgid != s || all[S].ppid != 1 || all[S1].ppid != s ||
	    all[S1].pgid != all[S1].pid || all[S1].sid != s || all[O].ppid != 1 || all[O].pgid != 1 ||
	    all[O].sid != 1) {
		pr_err("not the expected layout before the dump\n");
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (getpid() != 1 || getsid(0) != 1 || getpgid(0) != 1) {
		pr_err("R: pid %d sid %d pgid %d, want 1 1 1\n", getpid(), getsid(0), getpgid(0));
		ok = 0;
	}
	for (i = S; i < NPROC; i++) {
		pid_t want_pgid = all[i].pgid;

		if (sabotage && i == S1)
			want_pgid = all[S].pid;
		if (getpgid(all[i].pid) != want_pgid || getsid(all[i].pid) != all[i].sid) {
			pr_err("%s (pid %d): pgid %d sid %d from outside, want %d %d\n", names[i], all[i].pid,
			       getpgid(all[i].pid), getsid(all[i].pid), want_pgid, all[i].sid);
			ok = 0;
		}
	}
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, z, &si, WEXITED | WNOHANG | WNOWAIT) || si.si_pid != z || si.si_code != CLD_EXITED ||
	    si.si_status != ZOMBIE_CODE) {
		pr_err("Z (pid %d): not a zombie exited with %d (pid %d code %d status %d): %m\n", z, ZOMBIE_CODE,
		       si.si_pid, si.si_code, si.si_status);
		ok = 0;
	}
	kill(all[S1].pid, SIGTERM);
	kill(all[O].pid, SIGTERM);
	kill(s, SIGTERM);
	ok &= reap(s, "S", 0);
	ok &= reap(all[S1].pid, "S1 (adopted after the restore)", 0);
	ok &= reap(all[O].pid, "O (adopted before the dump)", 0);
	ok &= reap(z, "Z", ZOMBIE_CODE);
	if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD) {
		pr_err("the init has a child left\n");
		ok = 0;
	}
	if (ok)
		pass();
	else
		fail("the pid namespace's tree is not as before");
	return 0;
}

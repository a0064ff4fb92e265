/*
 * pgid_sid: process groups and sessions of a tree survive checkpoint/restore.
 *
 * The root R (a session leader, as every zdtm root) forks:
 *	D	stays in R's group (the parent's group)
 *	A	setpgid(0, 0): a group of its own
 *	B	setpgid(0, A): joins the group of its older sibling A
 *	S	setsid(): a session (and group) of its own, and forks
 *	  S1	stays in S's group and session
 *	  S2	setpgid(0, 0): its own group in S's session
 * (setpgid() is called by the parent as well, so the order is certain.)
 *
 * Every process records getpid(), getppid(), getpgid(0) and getsid(0)
 * and sends them to the root through a pipe (closed by all before the
 * dump). The root checks them against the expected layout before the dump.
 *
 * After SIGTERM:
 *  - the root checks its own group and session, and getpgid()/getsid()
 *    of each other process against the layout;
 *  - it sends SIGUSR1 to process groups A and S2 with killpg(): the
 *    kernel's group membership must make it reach A, B and S2 and no one
 *    else;
 *  - then SIGTERM to each; each process checks its own pid, parent, group
 *    and session against what it recorded, and how many SIGUSR1 it got,
 *    and exits 0 if all is well; S reaps S1 and S2 (exit 2 if they
 *    failed); the root reaps D, A, B and S.
 *
 * --sabotage=WHAT (debug): join (B moves to a group of its own after
 * SIGTERM), killpg (the root signals S's group too), layout (the root
 * expects B in R's group).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that process groups and sessions are restored";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (join, killpg, layout)", 0);

static int sabotaged(const char *what)
{
	return sabotage && !strcmp(sabotage, what);
}

#define WAIT_SECS 15

enum { R, D, A, B, S, S1, S2, NPROC };
static const char *names[NPROC] = { "R", "D", "A", "B", "S", "S1", "S2" };
/* who gets the SIGUSR1 sent to groups A and S2 */
static const int want_usr1[NPROC] = { [A] = 1, [B] = 1, [S2] = 1 };

struct ident {
	int idx;
	pid_t pid, ppid, pgid, sid;
};

static struct ident me, all[NPROC];
static volatile sig_atomic_t usr1;

static void on_usr1(int sig)
{
	(void)sig;
	usr1++;
}

static int failed;

static void reap(int idx)
{
	int status;

	if (test_wait_exit(all[idx].pid, &status, WAIT_SECS))
		test_msg("FAILED: waitpid(%s, pid %d): %s\n", names[idx], all[idx].pid, strerror(errno)), failed = 1;
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s (pid %d) ended with status %#x", names[idx],
		      all[idx].pid, status);
}

static void record(int idx)
{
	me.idx = idx;
	me.pid = getpid();
	me.ppid = getppid();
	me.pgid = getpgid(0);
	me.sid = getsid(0);
}

static void check_self(void)
{
	test_check(getpid() == me.pid && getppid() == me.ppid && getpgid(0) == me.pgid && getsid(0) == me.sid,
	      "%s: pid/ppid/pgid/sid %d/%d/%d/%d, expected %d/%d/%d/%d", names[me.idx], getpid(), getppid(),
	      getpgid(0), getsid(0), me.pid, me.ppid, me.pgid, me.sid);
	test_check(usr1 == want_usr1[me.idx], "%s: got SIGUSR1 %d times, expected %d", names[me.idx], (int)usr1,
	      want_usr1[me.idx]);
}

static void send_ident(int wfd)
{
	if (write(wfd, &me, sizeof(me)) != sizeof(me)) {
		pr_perror("%s: write to the root", names[me.idx]);
		_exit(1);
	}
	close(wfd);
}

static void __attribute__((noreturn)) simple(int idx, int wfd)
{
	record(idx);
	send_ident(wfd);
	test_waitsig();
	if (idx == B && sabotaged("join"))
		setpgid(0, 0);
	check_self();
	_exit(failed ? 1 : 0);
}

static void __attribute__((noreturn)) session_leader(int wfd)
{
	if (setsid() < 0) {
		pr_perror("S: setsid");
		_exit(1);
	}
	record(S);
	all[S1].pid = fork();
	if (all[S1].pid < 0) {
		pr_perror("fork S1");
		_exit(1);
	}
	if (all[S1].pid == 0)
		simple(S1, wfd);
	all[S2].pid = fork();
	if (all[S2].pid < 0) {
		pr_perror("fork S2");
		_exit(1);
	}
	if (all[S2].pid == 0) {
		if (setpgid(0, 0)) {
			pr_perror("S2: setpgid(0, 0)");
			_exit(1);
		}
		simple(S2, wfd);
	}
	if (setpgid(all[S2].pid, all[S2].pid) && errno != EACCES) {
		pr_perror("S: setpgid(S2)");
		_exit(1);
	}
	send_ident(wfd);
	test_waitsig();
	check_self();
	reap(S1);
	reap(S2);
	_exit(failed ? 2 : 0);
}

/* the layout, from the pids: parent, group and session of each */
static void expected(int idx, pid_t *ppid, pid_t *pgid, pid_t *sid)
{
	pid_t r = all[R].pid, a = all[A].pid, s = all[S].pid;

	switch (idx) {
	case D:
		*ppid = r, *pgid = r, *sid = r;
		break;
	case A:
		*ppid = r, *pgid = a, *sid = r;
		break;
	case B:
		*ppid = r, *pgid = sabotaged("layout") && !test_go() ? r : a, *sid = r;
		break;
	case S:
		*ppid = r, *pgid = s, *sid = s;
		break;
	case S1:
		*ppid = s, *pgid = s, *sid = s;
		break;
	case S2:
		*ppid = s, *pgid = all[S2].pid, *sid = s;
		break;
	default:
		*ppid = all[R].ppid, *pgid = r, *sid = r;
	}
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_usr1 };
	int pfd[2], i;
	pid_t pid;

	test_init(argc, argv);
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL)) {
		pr_perror("sigaction");
		return 1;
	}
	if (pipe(pfd)) {
		pr_perror("pipe");
		return 1;
	}
	record(R);
	all[R] = me;

	for (i = D; i <= S; i++) {
		pid = fork();
		if (pid < 0) {
			pr_perror("fork %s", names[i]);
			return 1;
		}
		if (pid == 0) {
			close(pfd[0]);
			if (i == A && setpgid(0, 0)) {
				pr_perror("A: setpgid(0, 0)");
				_exit(1);
			}
			if (i == B && setpgid(0, all[A].pid)) {
				pr_perror("B: setpgid(0, A)");
				_exit(1);
			}
			if (i == S)
				session_leader(pfd[1]);
			simple(i, pfd[1]);
		}
		all[i].pid = pid;
		if (i == A && setpgid(pid, pid) && errno != EACCES) {
			pr_perror("setpgid(A, A)");
			return 1;
		}
		if (i == B && setpgid(pid, all[A].pid) && errno != EACCES) {
			pr_perror("setpgid(B, A)");
			return 1;
		}
	}
	close(pfd[1]);

	if (test_collect_records(pfd[0], all, sizeof(all[0]), NPROC - 1, R + 1, NPROC))
		return 1;
	close(pfd[0]);
	for (i = 0; i < NPROC; i++) {
		pid_t ppid, pgid, sid;

		expected(i, &ppid, &pgid, &sid);
		test_msg("%s: pid %d ppid %d pgid %d sid %d\n", names[i], all[i].pid, all[i].ppid, all[i].pgid,
			 all[i].sid);
		if (all[i].ppid != ppid || all[i].pgid != pgid || all[i].sid != sid) {
			pr_err("%s: not the expected layout before the dump (ppid %d pgid %d sid %d)\n", names[i], ppid,
			       pgid, sid);
			return 1;
		}
	}

	test_daemon();
	test_waitsig();

	me.ppid = getppid(); /* the launcher has exited */
	all[R].ppid = me.ppid;
	for (i = 0; i < NPROC; i++) {
		pid_t ppid, pgid, sid;

		expected(i, &ppid, &pgid, &sid);
		test_check(getpgid(all[i].pid) == pgid && getsid(all[i].pid) == sid,
		      "%s (pid %d): getpgid %d getsid %d from the root, expected %d %d", names[i], all[i].pid,
		      getpgid(all[i].pid), getsid(all[i].pid), pgid, sid);
	}
	if (killpg(all[A].pid, SIGUSR1))
		test_msg("FAILED: killpg(A's group %d): %s\n", all[A].pid, strerror(errno)), failed = 1;
	if (killpg(all[S2].pid, SIGUSR1))
		test_msg("FAILED: killpg(S2's group %d): %s\n", all[S2].pid, strerror(errno)), failed = 1;
	if (sabotaged("killpg"))
		killpg(all[S].pid, SIGUSR1);
	check_self();
	for (i = D; i < NPROC; i++)
		if (kill(all[i].pid, SIGTERM))
			test_msg("FAILED: kill(%s, pid %d): %s\n", names[i], all[i].pid, strerror(errno)), failed = 1;
	for (i = D; i <= S; i++)
		reap(i);

	if (failed) {
		errno = 0;
		fail("process groups or sessions were not restored correctly");
		return 1;
	}
	pass();
	return 0;
}

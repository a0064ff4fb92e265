/*
 * sid_orphans: sessions and groups whose leader is gone, orphans under a
 * subreaper, and a child left in its parent's first session, all survive
 * checkpoint/restore.
 *
 * The root R (a session leader) forks SR, a child subreaper, which forks
 *	L	setsid(), forks
 *	  M1	setpgid(0, 0): its own group in session L
 *	  M2	stays in group L
 *		then L exits: M1 and M2 are orphans under SR, in a session
 *		(and M2 in a group) whose leader is gone
 *	G	setpgid(0, 0), forks
 *	  G1	stays in group G
 *		then G exits: G1 is an orphan under SR in a group whose leader
 *		is gone
 *	P	forks
 *	  E	stays in R's session and group
 *		then P calls setsid(): E is left in its parent's first session
 * SR reaps L and G. Every process sends getpid(), getppid(), getpgid(0)
 * and getsid(0) to R, which checks the layout before the dump.
 *
 * After SIGTERM R checks getpgid()/getsid() of everyone from outside,
 * sends SIGUSR1 to groups L and G with killpg() (which must reach M2 and
 * G1 and no one else), then SIGTERM to each. Each checks its own pid,
 * parent, group, session and SIGUSR1 count; SR also that it is still a
 * subreaper. Parents reap their children: SR reaps M1, M2, G1 and P (its
 * children only if the parent links were restored), P reaps E, R reaps SR.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check sessions and groups with a dead leader, orphans under a subreaper";

#define WAIT_SECS 15

enum { R, SR, L, M1, M2, G, G1, P, E, NPROC };
static const char *names[NPROC] = { "R", "SR", "L", "M1", "M2", "G", "G1", "P", "E" };
/* processes that exit before the dump */
static const int gone[NPROC] = { [L] = 1, [G] = 1 };
/* who gets the SIGUSR1 sent to groups L and G */
static const int want_usr1[NPROC] = { [M2] = 1, [G1] = 1 };

struct ident {
	int idx;
	pid_t pid, ppid, pgid, sid;
};

static struct ident me, all[NPROC];
static volatile sig_atomic_t usr1;
static int failed, wfd;

static void on_usr1(int sig)
{
	(void)sig;
	usr1++;
}

static void record(int idx)
{
	me.idx = idx;
	me.pid = getpid();
	me.ppid = getppid();
	me.pgid = getpgid(0);
	me.sid = getsid(0);
}

static void send_ident(void)
{
	if (write(wfd, &me, sizeof(me)) != sizeof(me)) {
		pr_perror("%s: write to the root", names[me.idx]);
		_exit(1);
	}
}

static void check_self(void)
{
	test_check(getpid() == me.pid && getppid() == me.ppid && getpgid(0) == me.pgid && getsid(0) == me.sid,
		   "%s: pid/ppid/pgid/sid %d/%d/%d/%d, expected %d/%d/%d/%d", names[me.idx], getpid(), getppid(),
		   getpgid(0), getsid(0), me.pid, me.ppid, me.pgid, me.sid);
	test_check(usr1 == want_usr1[me.idx], "%s: got SIGUSR1 %d times, expected %d", names[me.idx], (int)usr1,
		   want_usr1[me.idx]);
}

static void reap(const char *who, pid_t pid)
{
	int status;

	if (test_wait_exit(pid, &status, WAIT_SECS))
		test_check(0, "%s: waitpid(%d): %s", names[me.idx], pid, strerror(errno));
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s (pid %d) ended with status %#x", who, pid,
			   status);
}

static pid_t xfork(const char *who)
{
	pid_t pid = fork();

	if (pid < 0) {
		pr_perror("fork %s", who);
		_exit(1);
	}
	return pid;
}

/* An orphan-to-be: waits until its parent has exited and it is SR's. */
static void wait_orphaned(void)
{
	pid_t parent = getppid();
	int i;

	for (i = 0; i < 10000 && getppid() == parent; i++)
		usleep(1000);
}

/* A process that reports, waits for SIGTERM, checks itself and exits. */
static void __attribute__((noreturn)) simple(int idx)
{
	if (idx == M2)
		wait_orphaned();
	record(idx);
	send_ident();
	close(wfd);
	test_waitsig();
	check_self();
	_exit(failed ? 1 : 0);
}

/* L and G: fork their members, wait until those reported, exit. */
static void __attribute__((noreturn)) vanishing_leader(int idx)
{
	int ready[2];
	pid_t a;
	char c;

	if (pipe(ready))
		_exit(1);
	if (idx == L ? setsid() < 0 : setpgid(0, 0) < 0) {
		pr_perror("%s: setsid/setpgid", names[idx]);
		_exit(1);
	}
	if ((a = xfork(idx == L ? "M1" : "G1")) == 0) {
		close(ready[0]);
		if (idx == L && setpgid(0, 0)) {
			pr_perror("M1: setpgid(0, 0)");
			_exit(1);
		}
		close(ready[1]);
		wait_orphaned();
		record(idx + 1);
		send_ident();
		close(wfd);
		test_waitsig();
		check_self();
		_exit(failed ? 1 : 0);
	}
	if (idx == L && xfork("M2") == 0) {
		close(ready[0]);
		close(ready[1]);
		simple(M2);
	}
	close(ready[1]);
	/* M1/G1 is in its group (its write end closed); M2 needs nothing */
	if (read(ready[0], &c, 1) != 0)
		_exit(1);
	record(idx);
	send_ident();
	_exit(0);
}

static void __attribute__((noreturn)) subreaper(void)
{
	pid_t l, g, p;
	int i, status, sub = 0;

	if (prctl(PR_SET_CHILD_SUBREAPER, 1)) {
		pr_perror("SR: PR_SET_CHILD_SUBREAPER");
		_exit(1);
	}
	record(SR);
	if ((l = xfork("L")) == 0)
		vanishing_leader(L);
	if ((g = xfork("G")) == 0)
		vanishing_leader(G);
	if ((p = xfork("P")) == 0) {
		pid_t e = xfork("E");

		if (e == 0)
			simple(E);
		if (setsid() < 0) {
			pr_perror("P: setsid");
			_exit(1);
		}
		record(P);
		send_ident();
		close(wfd);
		test_waitsig();
		check_self();
		reap("E", e);
		_exit(failed ? 1 : 0);
	}
	if (waitpid(l, &status, 0) != l || status || waitpid(g, &status, 0) != g || status) {
		pr_err("SR: L or G failed\n");
		_exit(1);
	}
	send_ident();
	close(wfd);
	test_waitsig();
	check_self();
	test_check(prctl(PR_GET_CHILD_SUBREAPER, &sub) == 0 && sub == 1, "SR: no longer a child subreaper");
	/*
	 * The orphans M1, M2, G1 and P are SR's children: waitpid(-1) must
	 * return exactly these four (alarm: a missing child fails the case).
	 */
	alarm(WAIT_SECS);
	for (i = 0; i < 4; i++) {
		pid_t w = waitpid(-1, &status, 0);

		if (w < 0) {
			test_check(0, "SR: only %d children to reap, expected 4: %s", i, strerror(errno));
			break;
		}
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "SR: child %d ended with status %#x", w,
			   status);
	}
	alarm(0);
	test_check(waitpid(-1, &status, WNOHANG) < 0 && errno == ECHILD, "SR: more than 4 children");
	_exit(failed ? 2 : 0);
}

/* the layout, from the pids: parent, group and session of each */
static void expected(int idx, pid_t *ppid, pid_t *pgid, pid_t *sid)
{
	pid_t r = all[R].pid, sr = all[SR].pid, l = all[L].pid, g = all[G].pid, p = all[P].pid;

	switch (idx) {
	case SR:
		*ppid = r, *pgid = r, *sid = r;
		break;
	case M1:
		*ppid = sr, *pgid = all[M1].pid, *sid = l;
		break;
	case M2:
		*ppid = sr, *pgid = l, *sid = l;
		break;
	case G1:
		*ppid = sr, *pgid = g, *sid = r;
		break;
	case P:
		*ppid = sr, *pgid = p, *sid = p;
		break;
	case E:
		*ppid = p, *pgid = r, *sid = r;
		break;
	default:
		*ppid = all[idx].ppid, *pgid = all[idx].pgid, *sid = all[idx].sid;
	}
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_usr1 };
	int pfd[2], i;
	pid_t sr;

	test_init(argc, argv);
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) || pipe(pfd)) {
		pr_perror("sigaction or pipe");
		return 1;
	}
	record(R);
	all[R] = me;
	wfd = pfd[1];
	sr = xfork("SR");
	if (sr == 0) {
		close(pfd[0]);
		subreaper();
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
		if (!gone[i] && (all[i].ppid != ppid || all[i].pgid != pgid || all[i].sid != sid)) {
			pr_err("%s: not the expected layout before the dump (ppid %d pgid %d sid %d)\n", names[i], ppid,
			       pgid, sid);
			return 1;
		}
	}

	test_daemon();
	test_waitsig();

	for (i = SR; i < NPROC; i++) {
		pid_t ppid, pgid, sid;

		if (gone[i])
			continue;
		expected(i, &ppid, &pgid, &sid);
		test_check(getpgid(all[i].pid) == pgid && getsid(all[i].pid) == sid,
			   "%s (pid %d): getpgid %d getsid %d from the root, expected %d %d", names[i], all[i].pid,
			   getpgid(all[i].pid), getsid(all[i].pid), pgid, sid);
	}
	if (killpg(all[L].pid, SIGUSR1))
		test_check(0, "killpg(L's group %d): %s", all[L].pid, strerror(errno));
	if (killpg(all[G].pid, SIGUSR1))
		test_check(0, "killpg(G's group %d): %s", all[G].pid, strerror(errno));
	me.ppid = getppid(); /* the launcher has exited */
	check_self();
	for (i = SR; i < NPROC; i++)
		if (!gone[i] && kill(all[i].pid, SIGTERM))
			test_check(0, "kill(%s, pid %d): %s", names[i], all[i].pid, strerror(errno));
	reap("SR", sr);

	if (failed) {
		errno = 0;
		fail("sessions, groups or orphans were not restored correctly");
		return 1;
	}
	pass();
	return 0;
}

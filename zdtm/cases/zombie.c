/*
 * zombie: children that died and were not reaped come back as zombies, with
 * their exit status.
 *
 * The root forks four children:
 *	zombie 1	_exit(7)
 *	zombie 2	killed by SIGUSR1 (default action: terminate)
 *	zombie 3	_exit(0)
 *	keeper		alive; forks zombie 4, which does _exit(42), and does not
 *			reap it either (a zombie whose parent is not the root)
 * and waits with waitid(WEXITED|WNOWAIT) until each has died, without
 * reaping it. The parent, process group and session of every zombie are
 * recorded from /proc/PID/stat.
 *
 * After SIGTERM, for each zombie, before anything reaps it:
 *  - /proc/PID/stat shows state Z with the recorded parent, group, session;
 *  - waitid(P_PID, WEXITED|WNOWAIT) reports it with the right si_code
 *    (CLD_EXITED or CLD_KILLED), si_status (the code or the signal) and
 *    si_uid (the zombie's real uid: the test uid, as before the dump);
 *  - waitpid(PID, WNOHANG) reaps it at once with exactly the status seen
 *    before the dump, which must also be the expected one;
 * then waitpid(-1, WNOHANG) must find no other child that has exited.
 * The keeper does the same for zombie 4 and exits 0 when all is well; the
 * root reaps the keeper last.
 *
 * --sabotage=WHAT (debug): reap (the root reaps zombie 1 early), status
 * (the expected status of zombie 3 is wrong), keeper (the keeper reaps
 * zombie 4 early).
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

const char *test_doc = "Check that zombies are restored as zombies with their exit status";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (reap, status, keeper)", 0);

static int sabotaged(const char *what)
{
	return sabotage && !strcmp(sabotage, what);
}

#define WAIT_SECS 15

struct zombie {
	const char *what;
	int status;		/* the expected wait status */
	pid_t pid;
	int seen;		/* the status waitid() showed before the dump */
	uid_t uid;		/* and the real uid (si_uid) */
	pid_t ppid, pgid, sid;	/* from /proc/PID/stat before the dump */
};

static int failed;

static int read_stat(pid_t pid, char *state, pid_t *ppid, pid_t *pgid, pid_t *sid)
{
	char path[64], buf[1024], *p;
	int fd, n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %c %d %d %d", state, ppid, pgid, sid) != 4)
		return -1;
	return 0;
}

/* forks a child that dies as z->status says */
static int make_zombie(struct zombie *z)
{
	z->pid = fork();
	if (z->pid < 0) {
		pr_perror("fork %s", z->what);
		return -1;
	}
	if (z->pid == 0) {
		if (WIFSIGNALED(z->status)) {
			signal(WTERMSIG(z->status), SIG_DFL);
			kill(getpid(), WTERMSIG(z->status));
			pause();
			_exit(99);
		}
		_exit(WEXITSTATUS(z->status));
	}
	return 0;
}

/* waitid(WNOWAIT) result as a wait status, and the zombie's real uid */
static int peek_status(pid_t pid, int *status, uid_t *uid, int flags)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, pid, &si, WEXITED | WNOWAIT | flags))
		return -1;
	if (si.si_pid != pid) {
		errno = ECHILD;
		return -1;
	}
	*uid = si.si_uid;
	if (si.si_code == CLD_EXITED)
		*status = (si.si_status & 0xff) << 8;
	else if (si.si_code == CLD_KILLED)
		*status = si.si_status & 0x7f;
	else
		*status = -si.si_code;
	return 0;
}

/* wait until it is a zombie (not reaped), record what it looks like */
static int settle(struct zombie *z)
{
	char state;

	if (peek_status(z->pid, &z->seen, &z->uid, 0)) {
		pr_perror("waitid(%s, pid %d)", z->what, z->pid);
		return -1;
	}
	if (z->seen != z->status || z->uid != getuid()) {
		pr_err("%s died with status %#x uid %d, not %#x uid %d\n", z->what, z->seen, (int)z->uid, z->status,
		       (int)getuid());
		return -1;
	}
	if (read_stat(z->pid, &state, &z->ppid, &z->pgid, &z->sid) || state != 'Z') {
		pr_err("%s (pid %d) is not a zombie before the dump\n", z->what, z->pid);
		return -1;
	}
	test_msg("%s: pid %d status %#x uid %d ppid %d pgid %d sid %d\n", z->what, z->pid, z->seen, (int)z->uid,
		 z->ppid, z->pgid, z->sid);
	return 0;
}

/* all checks of one zombie, reaping it at the end */
static void check_zombie(struct zombie *z)
{
	char state = '-';
	pid_t ppid = 0, pgid = 0, sid = 0, r;
	int status = -1;
	uid_t uid = -1;

	if (read_stat(z->pid, &state, &ppid, &pgid, &sid))
		test_msg("FAILED: %s (pid %d): no /proc/PID/stat\n", z->what, z->pid), failed = 1;
	else
		test_check(state == 'Z' && ppid == z->ppid && pgid == z->pgid && sid == z->sid,
		      "%s (pid %d): state %c ppid %d pgid %d sid %d, expected Z %d %d %d", z->what, z->pid, state,
		      ppid, pgid, sid, z->ppid, z->pgid, z->sid);

	if (peek_status(z->pid, &status, &uid, WNOHANG))
		test_msg("FAILED: %s (pid %d): waitid(WNOWAIT): %s\n", z->what, z->pid, strerror(errno)), failed = 1;
	else
		test_check(status == z->status && uid == z->uid,
		      "%s (pid %d): waitid() shows status %#x uid %d, expected %#x uid %d", z->what, z->pid, status,
		      (int)uid, z->status, (int)z->uid);

	status = -1;
	r = waitpid(z->pid, &status, WNOHANG);
	test_check(r == z->pid, "%s (pid %d): waitpid(WNOHANG) returned %d (%s)", z->what, z->pid, r,
	      r < 0 ? strerror(errno) : "not reapable at once");
	if (r == z->pid)
		test_check(status == z->status && status == z->seen,
		      "%s (pid %d): status %#x, expected %#x (seen before the dump: %#x)", z->what, z->pid, status,
		      z->status, z->seen);
}

static void no_other_exited(const char *who)
{
	int status;
	pid_t r = waitpid(-1, &status, WNOHANG);

	test_check(r <= 0, "%s: waitpid(-1) found another exited child: pid %d status %#x", who, r, status);
}

static struct zombie zombies[] = {
	{ "zombie 1 (exit 7)", 7 << 8 },
	{ "zombie 2 (SIGUSR1)", SIGUSR1 },
	{ "zombie 3 (exit 0)", 0 },
};
static struct zombie z4 = { "zombie 4 (exit 42, child of the keeper)", 42 << 8 };

static void __attribute__((noreturn)) keeper(int wfd)
{
	if (make_zombie(&z4) || settle(&z4))
		_exit(1);
	if (write(wfd, &z4, sizeof(z4)) != sizeof(z4)) {
		pr_perror("write to the root");
		_exit(1);
	}
	close(wfd);
	test_waitsig();
	if (sabotaged("keeper"))
		waitpid(z4.pid, NULL, 0);
	check_zombie(&z4);
	no_other_exited("the keeper");
	_exit(failed ? 1 : 0);
}

int main(int argc, char **argv)
{
	struct zombie kz;
	pid_t keeper_pid;
	int pfd[2], status;
	size_t i;

	test_init(argc, argv);

	for (i = 0; i < ARRAY_SIZE(zombies); i++)
		if (make_zombie(&zombies[i]))
			return 1;
	if (pipe(pfd)) {
		pr_perror("pipe");
		return 1;
	}
	keeper_pid = fork();
	if (keeper_pid < 0) {
		pr_perror("fork the keeper");
		return 1;
	}
	if (keeper_pid == 0) {
		close(pfd[0]);
		keeper(pfd[1]);
	}
	close(pfd[1]);
	for (i = 0; i < ARRAY_SIZE(zombies); i++)
		if (settle(&zombies[i]))
			return 1;
	/* the keeper's zombie is there, then EOF: the keeper closed the pipe */
	if (read_data(pfd[0], (unsigned char *)&kz, sizeof(kz)) || read(pfd[0], &status, 1) != 0) {
		pr_err("the keeper did not report its zombie\n");
		return 1;
	}
	close(pfd[0]);

	test_daemon();
	test_waitsig();

	if (sabotaged("reap"))
		waitpid(zombies[0].pid, NULL, 0);
	if (sabotaged("status"))
		zombies[2].status = 1 << 8;

	/* the keeper's zombie, from outside */
	{
		char state = '-';
		pid_t ppid = 0, pgid = 0, sid = 0;

		test_check(!read_stat(kz.pid, &state, &ppid, &pgid, &sid) && state == 'Z' && ppid == keeper_pid,
		      "%s (pid %d): state %c ppid %d, expected Z %d", kz.what, kz.pid, state, ppid, keeper_pid);
	}
	for (i = 0; i < ARRAY_SIZE(zombies); i++)
		check_zombie(&zombies[i]);

	if (kill(keeper_pid, SIGTERM))
		test_msg("FAILED: kill(keeper %d): %s\n", keeper_pid, strerror(errno)), failed = 1;
	if (test_wait_exit(keeper_pid, &status, WAIT_SECS))
		test_msg("FAILED: waitpid(keeper %d): %s\n", keeper_pid, strerror(errno)), failed = 1;
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the keeper (pid %d) ended with status %#x",
		      keeper_pid, status);
	no_other_exited("the root");

	if (failed) {
		errno = 0;
		fail("zombies were not restored correctly");
		return 1;
	}
	pass();
	return 0;
}

/*
 * fown: owners (F_SETOWN_EX), signals (F_SETSIG) and O_ASYNC of open files
 * come back, and each owner gets its signal after restore.
 *
 *   proc   a pipe whose read end has O_ASYNC, this process as owner
 *          (F_OWNER_PID) and SIGUSR1 as signal
 *   pgrp   a pipe whose read end has O_ASYNC, this process group as owner
 *          (F_OWNER_PGRP) and no F_SETSIG (SIGIO)
 *   tid    a pipe whose read end has O_ASYNC, a second thread as owner
 *          (F_OWNER_TID) and SIGRTMIN+1 as signal; the thread waits for
 *          that signal with sigwaitinfo
 *   child  a pipe whose read end has O_ASYNC and a child process as owner
 *          with SIGUSR2 as signal; the child waits for it
 *   file   a regular file with this process as owner and SIGUSR1 as
 *          signal, without O_ASYNC (a file's owner is kept even where no
 *          signal ever comes)
 *
 * After SIGTERM every fd's F_GETOWN_EX, F_GETSIG and O_ASYNC are what
 * were set; then one byte is written into each pipe and each owner must
 * get its signal with si_fd naming the read end (SIGIO has no si_fd), and
 * no one else.
 *
 * --outside: the file's owner is process 1, outside the tree; the dump
 * must refuse it, naming it, and the tree goes on.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that file owners, F_SETSIG signals and O_ASYNC are restored";

static char *filename = "fown.file";
TEST_OPTION(filename, string, "the regular file to own", 0);
static int outside;
TEST_OPTION(outside, bool, "the file's owner is process 1, outside the tree", 0);

#define SIG_TID (SIGRTMIN + 1)
#define WAIT_SECS 10

static int failed;
static volatile sig_atomic_t got_usr1, got_io, usr1_fd = -1;
static int proc_p[2], pgrp_p[2], tid_p[2], child_p[2], file_fd;
static volatile pid_t thread_tid;
static volatile int thread_got_fd = -1;

static void on_signal(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (sig == SIGUSR1) {
		got_usr1++;
		usr1_fd = si->si_fd;
	} else if (sig == SIGIO) {
		got_io++;
	}
}

static int wait_sig(int sig, int *fd)
{
	struct timespec ts = { WAIT_SECS, 0 };
	siginfo_t si;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, sig);
	/* SIGIO (the group's) or SIGUSR1 may run a handler meanwhile */
	while (sigtimedwait(&set, &si, &ts) != sig)
		if (errno != EINTR)
			return -1;
	*fd = si.si_fd;
	return 0;
}

static void *thread_main(void *arg)
{
	int fd = -1;

	(void)arg;
	thread_tid = syscall(SYS_gettid);
	/* blocked in every thread: only sigtimedwait takes it */
	if (wait_sig(SIG_TID, &fd) == 0)
		thread_got_fd = fd;
	else
		thread_got_fd = -2;
	return NULL;
}

static int set_owner(int fd, int type, pid_t pid, int sig, int async)
{
	struct f_owner_ex ex = { .type = type, .pid = pid };

	if (fcntl(fd, F_SETOWN_EX, &ex) || (sig && fcntl(fd, F_SETSIG, sig)) ||
	    (async && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC))) {
		pr_perror("owner of fd %d", fd);
		return -1;
	}
	return 0;
}

static void check_owner(const char *what, int fd, int type, pid_t pid, int sig, int async)
{
	struct f_owner_ex ex = { -1, -1 };

	test_check(!fcntl(fd, F_GETOWN_EX, &ex) && ex.type == type && ex.pid == pid,
		   "%s: owner is type %d pid %d, expected type %d pid %d", what, ex.type, ex.pid, type, pid);
	test_check(fcntl(fd, F_GETSIG) == sig, "%s: signal %d, expected %d", what, fcntl(fd, F_GETSIG), sig);
	test_check(!!(fcntl(fd, F_GETFL) & O_ASYNC) == async, "%s: O_ASYNC is %s", what,
		   async ? "off" : "on");
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	pthread_t th;
	sigset_t set;
	pid_t child;
	int status, i;

	test_init(argc, argv);

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_signal;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	if (sigaction(SIGUSR1, &sa, NULL) || sigaction(SIGIO, &sa, NULL)) {
		pr_perror("sigaction");
		return 1;
	}
	sigemptyset(&set);
	sigaddset(&set, SIG_TID);
	sigaddset(&set, SIGUSR2);
	if (sigprocmask(SIG_BLOCK, &set, NULL)) {
		pr_perror("sigprocmask");
		return 1;
	}
	if (pipe(proc_p) || pipe(pgrp_p) || pipe(tid_p) || pipe(child_p)) {
		pr_perror("pipe");
		return 1;
	}
	file_fd = open(filename, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (file_fd < 0) {
		pr_perror("open %s", filename);
		return 1;
	}

	child = fork();
	if (child < 0) {
		pr_perror("fork");
		return 1;
	}
	if (child == 0) {
		int fd = -1;

		/* SIGUSR2 stays blocked: sigtimedwait takes it after restore */
		test_waitsig();
		if (wait_sig(SIGUSR2, &fd) || fd != child_p[0]) {
			test_msg("child: no SIGUSR2 for fd %d (got fd %d)\n", child_p[0], fd);
			_exit(1);
		}
		_exit(0);
	}

	if (pthread_create(&th, NULL, thread_main, NULL)) {
		pr_perror("pthread_create");
		return 1;
	}
	for (i = 0; !thread_tid && i < 1000; i++)
		usleep(1000);

	if (set_owner(proc_p[0], F_OWNER_PID, getpid(), SIGUSR1, 1) ||
	    set_owner(pgrp_p[0], F_OWNER_PGRP, getpgrp(), 0, 1) ||
	    set_owner(tid_p[0], F_OWNER_TID, thread_tid, SIG_TID, 1) ||
	    set_owner(child_p[0], F_OWNER_PID, child, SIGUSR2, 1) ||
	    set_owner(file_fd, F_OWNER_PID, outside ? 1 : getpid(), SIGUSR1, 0))
		return 1;

	test_daemon();
	test_waitsig();

	check_owner("proc", proc_p[0], F_OWNER_PID, getpid(), SIGUSR1, 1);
	check_owner("pgrp", pgrp_p[0], F_OWNER_PGRP, getpgrp(), 0, 1);
	check_owner("tid", tid_p[0], F_OWNER_TID, thread_tid, SIG_TID, 1);
	check_owner("child", child_p[0], F_OWNER_PID, child, SIGUSR2, 1);
	check_owner("file", file_fd, F_OWNER_PID, outside ? 1 : getpid(), SIGUSR1, 0);

	/* the child is in test_waitsig: let it go on to wait for SIGUSR2 */
	kill(child, SIGTERM);
	usleep(100000);

	if (write(proc_p[1], "x", 1) != 1 || write(pgrp_p[1], "x", 1) != 1 || write(tid_p[1], "x", 1) != 1 ||
	    write(child_p[1], "x", 1) != 1) {
		pr_perror("write");
		failed = 1;
	}
	for (i = 0; (!got_usr1 || !got_io) && i < WAIT_SECS * 100; i++)
		usleep(10000);
	test_check(got_usr1 == 1 && usr1_fd == proc_p[0], "proc: %d SIGUSR1 (si_fd %d), expected one for fd %d",
		   (int)got_usr1, (int)usr1_fd, proc_p[0]);
	test_check(got_io >= 1, "pgrp: no SIGIO");
	pthread_join(th, NULL);
	test_check(thread_got_fd == tid_p[0], "tid: the thread got si_fd %d, expected %d", thread_got_fd, tid_p[0]);
	if (test_wait_exit(child, &status, WAIT_SECS))
		test_msg("FAILED: waitpid(child %d): %s\n", child, strerror(errno)), failed = 1;
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: ended with status %#x", status);

	if (failed) {
		errno = 0;
		fail("file owners and their signals were not restored");
		return 1;
	}
	pass();
	return 0;
}

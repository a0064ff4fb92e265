/*
 * pidfd: pidfds of processes of the tree come back referring to the same
 * processes.
 *
 *   a     pidfd_open() of child A
 *   b     child B's pidfd from clone(CLONE_PIDFD)
 *   self  pidfd_open(getpid(), PIDFD_NONBLOCK)
 *
 * Each pidfd is held by this process only (B closes the one it inherits).
 *
 * After SIGTERM: each pidfd's fdinfo names the same pid and its flags are
 * kept; a signal sent through a's and b's pidfd (pidfd_send_signal) ends
 * the child; the pidfd then polls readable, and waitid(P_PIDFD) reaps the
 * child with the signal as its cause.
 *
 * --reaped: a third child C has exited (code 7) and been reaped; two
 * pidfds of it are still open (c, c2). After SIGTERM both name pid -1 and
 * are one process (one pidfs inode), poll readable and hung up, a signal
 * through them fails with ESRCH, waitid(P_PIDFD) finds no child, and
 * PIDFD_GET_INFO gives exit code 7 where the kernel gave it before.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that pidfds of processes in the tree are restored";

static int reaped;
TEST_OPTION(reaped, bool, "hold the pidfd of a reaped child: the dump must refuse it", 0);

#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif
#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x1000
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static int failed;

static int pidfd_open(pid_t pid, unsigned flags)
{
	return syscall(SYS_pidfd_open, pid, flags);
}

static pid_t fdinfo_pid(int fd)
{
	char path[64], line[256];
	pid_t pid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Pid: %d", &pid) == 1)
			break;
	fclose(f);
	return pid;
}

/* struct pidfd_info, first version (Linux 6.13) */
struct pidfd_info_v0 {
	uint64_t mask, cgroupid;
	uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
	int32_t exit_code;
};
#define PIDFD_INFO_EXIT_ (1ULL << 3)
#define PIDFD_GET_INFO_ _IOWR(0xFF, 11, struct pidfd_info_v0)

/* the exit status PIDFD_GET_INFO gives, or -1 */
static int info_exit(int fd)
{
	struct pidfd_info_v0 info = { .mask = PIDFD_INFO_EXIT_ };

	if (ioctl(fd, PIDFD_GET_INFO_, &info) || !(info.mask & PIDFD_INFO_EXIT_))
		return -1;
	return info.exit_code;
}

static void check_reaped(const char *what, int fd, int exit_before)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	siginfo_t si;
	int r;

	test_check(fdinfo_pid(fd) == -1, "%s: the pidfd of the reaped child names pid %d", what, fdinfo_pid(fd));
	test_check(poll(&p, 1, 0) == 1 && (p.revents & POLLIN) && (p.revents & POLLHUP),
		   "%s: the pidfd polls %#x, not readable and hung up", what, p.revents);
	errno = 0;
	r = syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0);
	test_check(r == -1 && errno == ESRCH, "%s: pidfd_send_signal gave %d (errno %d), not ESRCH", what, r, errno);
	errno = 0;
	r = waitid(P_PIDFD, fd, &si, WEXITED | WNOHANG);
	test_check(r == -1 && errno == ECHILD, "%s: waitid(P_PIDFD) gave %d (errno %d), not ECHILD", what, r, errno);
	if (exit_before != -1)
		test_check(info_exit(fd) == exit_before, "%s: PIDFD_GET_INFO gives exit status %#x, was %#x", what,
			   info_exit(fd), exit_before);
}

static void __attribute__((noreturn)) sleeper(void)
{
	for (;;)
		pause();
}

static void end_child(const char *what, int fd, pid_t pid)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	siginfo_t si;

	test_check(fdinfo_pid(fd) == pid, "%s: the pidfd names pid %d, expected %d", what, fdinfo_pid(fd), pid);
	test_check(syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0) == 0, "%s: pidfd_send_signal: %s", what,
		   strerror(errno));
	test_check(poll(&p, 1, 10000) == 1 && (p.revents & POLLIN), "%s: the pidfd does not poll readable", what);
	memset(&si, 0, sizeof(si));
	test_check(waitid(P_PIDFD, fd, &si, WEXITED) == 0 && si.si_pid == pid && si.si_code == CLD_KILLED &&
			   si.si_status == SIGKILL,
		   "%s: waitid(P_PIDFD) gave pid %d code %d status %d (errno %d)", what, si.si_pid, si.si_code,
		   si.si_status, errno);
}

int main(int argc, char **argv)
{
	int fd_a, fd_b = -1, fd_self, fd_c = -1, fd_c2 = -1, exit_c = -1;
	struct stat st_c, st_c2;
	pid_t a, b, c;

	test_init(argc, argv);

	a = fork();
	if (a < 0) {
		pr_perror("fork");
		return 1;
	}
	if (a == 0)
		sleeper();
	fd_a = pidfd_open(a, 0);
	b = syscall(SYS_clone, CLONE_PIDFD | SIGCHLD, 0, &fd_b, NULL, 0);
	if (b < 0) {
		pr_perror("clone(CLONE_PIDFD)");
		return 1;
	}
	if (b == 0) {
		/* a pidfd in two processes is refused yet */
		close(fd_a);
		sleeper();
	}
	fd_self = pidfd_open(getpid(), PIDFD_NONBLOCK);
	if (fd_a < 0 || fd_b < 0 || fd_self < 0) {
		pr_perror("pidfd_open");
		return 1;
	}
	if (reaped) {
		c = fork();
		if (c == 0)
			_exit(7);
		fd_c = pidfd_open(c, 0);
		fd_c2 = pidfd_open(c, PIDFD_NONBLOCK);
		if (c < 0 || fd_c < 0 || fd_c2 < 0 || waitpid(c, NULL, 0) != c) {
			pr_perror("child c");
			return 1;
		}
		exit_c = info_exit(fd_c);
		test_msg("PIDFD_GET_INFO of the reaped child: %#x\n", exit_c);
	}

	test_daemon();
	test_waitsig();

	test_check(fdinfo_pid(fd_self) == getpid(), "self: the pidfd names pid %d, expected %d", fdinfo_pid(fd_self),
		   getpid());
	test_check(fcntl(fd_self, F_GETFL) & O_NONBLOCK, "self: PIDFD_NONBLOCK is lost");
	test_check(!(fcntl(fd_b, F_GETFL) & O_NONBLOCK), "b: PIDFD_NONBLOCK appeared");
	end_child("a", fd_a, a);
	end_child("b", fd_b, b);
	if (reaped) {
		check_reaped("c", fd_c, exit_c);
		check_reaped("c2", fd_c2, exit_c);
		test_check(fcntl(fd_c2, F_GETFL) & O_NONBLOCK, "c2: PIDFD_NONBLOCK is lost");
		test_check(!fstat(fd_c, &st_c) && !fstat(fd_c2, &st_c2) && st_c.st_ino == st_c2.st_ino,
			   "c, c2: no longer pidfds of one process");
	}

	if (failed) {
		errno = 0;
		fail("pidfds were not restored");
		return 1;
	}
	pass();
	return 0;
}

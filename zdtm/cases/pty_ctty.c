/*
 * pty_ctty: a session leader with a pty (both sides in the tree) as its
 * controlling terminal, a job-control child group in the foreground and
 * another in the background.
 *
 *   root   the session leader: TIOCSCTTY on the slave; holds /dev/tty
 *          open as `tty_fd`
 *   fg     a child leading its own group, made the foreground group
 *   bg     a child leading its own group, in the background
 *
 * After SIGTERM: tcgetsid() is the root's pid and tcgetpgrp() fg's group,
 * seen from all three; each can open /dev/tty, which is the pty; tty_fd
 * still writes to the pty (the master reads it).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that a controlling pty, its session and foreground group come back";

static int failed;
static int s;
static pid_t root, fg;

/* the relations as `who` sees them; /dev/tty is the slave */
static void check_relations(const char *who)
{
	struct stat a, b;
	int fd;

	test_check(tcgetsid(s) == root, "%s: tcgetsid %d, expected %d", who, (int)tcgetsid(s), (int)root);
	test_check(tcgetpgrp(s) == fg, "%s: tcgetpgrp %d, expected %d", who, (int)tcgetpgrp(s), (int)fg);
	test_check(getsid(0) == root, "%s: session %d", who, (int)getsid(0));
	fd = open("/dev/tty", O_RDWR);
	test_check(fd >= 0, "%s: open /dev/tty: %s", who, strerror(errno));
	if (fd >= 0) {
		test_check(!fstat(fd, &a) && !fstat(s, &b) && major(a.st_rdev) == 5 && minor(a.st_rdev) == 0,
			   "%s: /dev/tty is no /dev/tty", who);
		test_check(tcgetsid(fd) == root, "%s: /dev/tty is not the session's terminal", who);
		close(fd);
	}
}

static pid_t child(int own_group_fg)
{
	pid_t p = test_fork();

	if (p < 0)
		exit(1);
	if (p == 0) {
		if (setpgid(0, 0))
			_exit(2);
		if (own_group_fg)
			fg = getpid();
		test_waitsig();
		check_relations(own_group_fg ? "fg" : "bg");
		test_check((tcgetpgrp(s) == getpgrp()) == own_group_fg, "%s: foreground is %d, own group %d",
			   own_group_fg ? "fg" : "bg", (int)tcgetpgrp(s), (int)getpgrp());
		_exit(failed);
	}
	setpgid(p, p);
	return p;
}

int main(int argc, char **argv)
{
	int m, idx, tty_fd, st, n;
	pid_t bg;
	char path[64], buf[64];
	struct pollfd p;

	test_init(argc, argv);
	root = getpid();

	m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m) || ioctl(m, TIOCGPTN, &idx)) {
		pr_perror("posix_openpt");
		return 1;
	}
	snprintf(path, sizeof(path), "/dev/pts/%d", idx);
	s = open(path, O_RDWR | O_NOCTTY);
	if (s < 0 || ioctl(s, TIOCSCTTY, 0)) {
		pr_perror("controlling terminal %s", path);
		return 1;
	}
	tty_fd = open("/dev/tty", O_RDWR);
	if (tty_fd < 0) {
		pr_perror("open /dev/tty");
		return 1;
	}
	/* the leader's own changes of foreground must not stop it */
	signal(SIGTTOU, SIG_IGN);
	fg = child(1);
	bg = child(0);
	if (tcsetpgrp(s, fg)) {
		pr_perror("tcsetpgrp");
		return 1;
	}

	test_daemon();
	test_waitsig();

	check_relations("root");
	test_check(write(tty_fd, "ping", 4) == 4, "write to /dev/tty fd: %s", strerror(errno));
	p = (struct pollfd){ .fd = m, .events = POLLIN };
	n = poll(&p, 1, 1000) == 1 ? read(m, buf, sizeof(buf)) : -1;
	test_check(n == 4 && !memcmp(buf, "ping", 4), "master read %d bytes from the /dev/tty fd", n);

	kill(fg, SIGTERM);
	kill(bg, SIGTERM);
	test_check(waitpid(fg, &st, 0) == fg && WIFEXITED(st) && !WEXITSTATUS(st), "fg failed its checks (%#x)", st);
	test_check(waitpid(bg, &st, 0) == bg && WIFEXITED(st) && !WEXITSTATUS(st), "bg failed its checks (%#x)", st);

	if (failed) {
		fail("the terminal relations changed");
		return 1;
	}
	pass();
	return 0;
}

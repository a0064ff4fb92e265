/*
 * tty_refused: terminals the dump refuses, naming them; the tree goes on.
 *
 *   --kind=external  the root holds the slave of a pty whose master a
 *                    process outside the tree holds (an orphan it made,
 *                    reparented away), the way a job holds the terminal
 *                    it was started from; the holder exits with the root
 *   --kind=console   /dev/console open
 *   --kind=vt        a virtual console (/dev/tty1) open
 *   --kind=serial    a serial line (/dev/ttyS0) open
 *   --kind=devpts_gone  a pty of a devpts instance the root mounted on a
 *                    directory and unmounted again (lazily: its ptys keep
 *                    it): an instance outside the tree's mounts
 *   --kind=ptmx_chmod  a devpts instance the root mounted (ptmxmode=0666)
 *                    whose ptmx node it chmod'ed to 0600, a pty open
 *                    through it (in a mount namespace of the tree's own)
 *
 * After SIGTERM (the dump having failed): the fd is still the terminal.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that terminals a restore cannot take over are refused at dump";

static char *kind;
TEST_OPTION(kind, string, "external, console, vt, serial, devpts_gone or ptmx_chmod", 1);

#define DEVPTS_DIR "tty_refused.devpts"

/* a pty master of a new devpts instance on DEVPTS_DIR: unmounted again
 * (gone), or with its ptmx node chmod'ed */
static int new_instance_master(int gone)
{
	int m;

	if (mkdir(DEVPTS_DIR, 0755) && errno != EEXIST)
		return -1;
	if (mount("devpts", DEVPTS_DIR, "devpts", 0, "newinstance,ptmxmode=0666"))
		return -1;
	m = open(DEVPTS_DIR "/ptmx", O_RDWR | O_NOCTTY);
	if (m < 0 || unlockpt(m))
		return -1;
	if (gone ? umount2(DEVPTS_DIR, MNT_DETACH) || rmdir(DEVPTS_DIR) : chmod(DEVPTS_DIR "/ptmx", 0600))
		return -1;
	return m;
}

/* a pty whose master only a process outside the tree holds: its slave */
static int external_slave(void)
{
	int path_pipe[2], hold[2], s;
	char path[64] = "";
	pid_t x;

	if (pipe(path_pipe) || pipe(hold))
		return -1;
	x = fork();
	if (x < 0)
		return -1;
	if (x == 0) {
		if (fork() == 0) {
			int m = posix_openpt(O_RDWR | O_NOCTTY), n;
			char c;

			if (m < 0 || grantpt(m) || unlockpt(m))
				_exit(1);
			snprintf(path, sizeof(path), "%s", ptsname(m));
			if (write(path_pipe[1], path, sizeof(path)) != sizeof(path))
				_exit(1);
			close(hold[1]);
			/* until the root is gone */
			n = read(hold[0], &c, 1);
			_exit(n < 0);
		}
		_exit(0);
	}
	waitpid(x, NULL, 0);
	close(hold[0]);
	if (read(path_pipe[0], path, sizeof(path)) != sizeof(path))
		return -1;
	close(path_pipe[0]);
	close(path_pipe[1]);
	s = open(path, O_RDWR | O_NOCTTY);
	return s;
}

int main(int argc, char **argv)
{
	const char *dev = NULL;
	int fd;

	test_init(argc, argv);

	if (!strcmp(kind, "external"))
		fd = external_slave();
	else if (!strcmp(kind, "devpts_gone") || !strcmp(kind, "ptmx_chmod"))
		fd = new_instance_master(!strcmp(kind, "devpts_gone"));
	else {
		if (!strcmp(kind, "console"))
			dev = "/dev/console";
		else if (!strcmp(kind, "vt"))
			dev = "/dev/tty1";
		else if (!strcmp(kind, "serial"))
			dev = "/dev/ttyS0";
		else {
			pr_err("unknown --kind=%s\n", kind);
			return 1;
		}
		fd = open(dev, O_RDONLY | O_NOCTTY | O_NONBLOCK);
		if (fd < 0) {
			skip("%s cannot be opened here: %s", dev, strerror(errno));
			test_daemon();
			test_waitsig();
			pass();
			return 0;
		}
	}
	if (fd < 0) {
		pr_perror("the terminal");
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (!isatty(fd)) {
		fail("fd %d is no terminal any more", fd);
		return 1;
	}
	pass();
	return 0;
}

/*
 * loginuid: the audit login uid survives checkpoint/restore.
 *
 * The root (privileged: setting a loginuid needs CAP_AUDIT_CONTROL) sets
 * its loginuid to 4321 and forks a child that inherits it; the child then
 * sets its own to 4322. After SIGTERM both check /proc/self/loginuid.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that the audit loginuid is restored";

static int failed;

static int set_loginuid(unsigned uid)
{
	char buf[16];
	int fd = open("/proc/self/loginuid", O_WRONLY), n, r;

	if (fd < 0)
		return -1;
	n = snprintf(buf, sizeof(buf), "%u", uid);
	r = write(fd, buf, n) == n ? 0 : -1;
	close(fd);
	return r;
}

static long get_loginuid(void)
{
	char buf[16] = "";
	int fd = open("/proc/self/loginuid", O_RDONLY);

	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) <= 0)
		return -1;
	close(fd);
	return strtol(buf, NULL, 10);
}

int main(int argc, char **argv)
{
	int go[2], status;
	pid_t child;
	char c;

	test_init(argc, argv);
	if (pipe(go) || set_loginuid(4321)) {
		pr_perror("setup (pipe, or loginuid 4321)");
		return 1;
	}
	child = fork();
	if (child < 0) {
		pr_perror("fork");
		return 1;
	}
	if (child == 0) {
		close(go[1]);
		if (set_loginuid(4322))
			_exit(3);
		if (read(go[0], &c, 1) != 1)
			_exit(4);
		test_check(get_loginuid() == 4322, "child: loginuid %ld, expected 4322", get_loginuid());
		_exit(failed ? 1 : 0);
	}
	close(go[0]);

	test_daemon();
	test_waitsig();

	test_check(get_loginuid() == 4321, "root: loginuid %ld, expected 4321", get_loginuid());
	if (write(go[1], "g", 1) != 1)
		test_check(0, "cannot wake the child: %s", strerror(errno));
	if (test_wait_exit(child, &status, 10))
		test_check(0, "waitpid: %s", strerror(errno));
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child ended with status %#x", status);
	if (failed)
		fail("loginuid differs");
	else
		pass();
	return 0;
}

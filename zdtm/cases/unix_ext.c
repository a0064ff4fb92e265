/*
 * unix_ext: UNIX sockets connected to peers outside the tree, dumped with
 * --ext-unix-sk and connected to the peers' names again at restore.
 *
 * A process outside the tree (a grandchild whose parent is gone) holds a
 * datagram socket bound to WORKDIR/sk.ext and a stream listener bound to
 * WORKDIR/sk.extl (absolute paths). The test holds a datagram socket D
 * connected to sk.ext and a stream socket C connected to sk.extl.
 *
 * After SIGTERM: D's peer is still sk.ext; what D and C send reaches the
 * outside process, which writes it into sk.ext.dgram and sk.ext.stream and
 * goes.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check UNIX sockets whose peers are outside the tree (--ext-unix-sk)";

#define WAIT_SECS 15
#define MAXC 8

static int failed;

static socklen_t addr_of(struct sockaddr_un *a, const char *dir, const char *name)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "%s/%s", dir, name);
	return offsetof(struct sockaddr_un, sun_path) + strlen(a->sun_path) + 1;
}

static void save(const char *file, const char *buf, int len)
{
	int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd >= 0) {
		if (write(fd, buf, len) != len)
			_exit(1);
		close(fd);
	}
}

/* The peer outside the tree: saves the first datagram and the first bytes
 * any connection sends, then goes (or after a minute in any case). */
static void __attribute__((noreturn)) outside(int dg, int l)
{
	struct pollfd p[2 + MAXC];
	int n = 2, got_dg = 0, got_st = 0, i;
	char buf[64];

	/* not of the case's session, which the runner takes for the tree */
	setsid();
	alarm(60);
	p[0].fd = dg;
	p[1].fd = l;
	p[0].events = p[1].events = POLLIN;
	while (!got_dg || !got_st) {
		if (poll(p, n, -1) < 0)
			_exit(1);
		if (p[0].revents & POLLIN) {
			ssize_t r = recv(dg, buf, sizeof(buf), 0);

			if (r > 0)
				save("sk.ext.dgram", buf, r), got_dg = 1;
		}
		if ((p[1].revents & POLLIN) && n < 2 + MAXC) {
			int c = accept(l, NULL, NULL);

			if (c >= 0) {
				p[n].fd = c;
				p[n].events = POLLIN;
				p[n++].revents = 0;
			}
		}
		for (i = 2; i < n; i++) {
			ssize_t r;

			if (!p[i].revents)
				continue;
			r = recv(p[i].fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (r > 0) {
				save("sk.ext.stream", buf, r), got_st = 1;
			} else if (r == 0) {
				/* the connection of the dumped tree, now gone */
				close(p[i].fd);
				p[i] = p[--n];
				i--;
			}
		}
	}
	_exit(0);
}

/* the contents of `file`, waiting for it */
static void expect_file(const char *file, const char *want)
{
	char buf[64];
	int i, fd = -1;
	ssize_t r = -1;

	for (i = 0; i < WAIT_SECS * 100; i++) {
		fd = open(file, O_RDONLY);
		if (fd >= 0) {
			r = read(fd, buf, sizeof(buf) - 1);
			close(fd);
			if (r == (ssize_t)strlen(want))
				break;
		}
		usleep(10000);
	}
	test_check(r == (ssize_t)strlen(want) && !memcmp(buf, want, r), "%s: the outside peer got %zd bytes, expected %s",
		   file, r, want);
	unlink(file);
}

int main(int argc, char **argv)
{
	struct sockaddr_un a_dg, a_l, peer;
	socklen_t l_dg, l_l, plen = sizeof(peer);
	char cwd[256];
	int dg, l, d, c;
	pid_t pid;

	test_init(argc, argv);
	if (!getcwd(cwd, sizeof(cwd))) {
		pr_perror("getcwd");
		return 1;
	}
	l_dg = addr_of(&a_dg, cwd, "sk.ext");
	l_l = addr_of(&a_l, cwd, "sk.extl");
	unlink(a_dg.sun_path);
	unlink(a_l.sun_path);
	unlink("sk.ext.dgram");
	unlink("sk.ext.stream");
	dg = socket(AF_UNIX, SOCK_DGRAM, 0);
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (dg < 0 || l < 0 || bind(dg, (struct sockaddr *)&a_dg, l_dg) || bind(l, (struct sockaddr *)&a_l, l_l) ||
	    listen(l, 4)) {
		pr_perror("the outside sockets");
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		pr_perror("fork");
		return 1;
	}
	if (pid == 0) {
		if (fork() == 0)
			outside(dg, l);
		_exit(0);
	}
	waitpid(pid, NULL, 0);
	close(dg);
	close(l);
	d = socket(AF_UNIX, SOCK_DGRAM, 0);
	c = socket(AF_UNIX, SOCK_STREAM, 0);
	if (d < 0 || c < 0 || connect(d, (struct sockaddr *)&a_dg, l_dg) || connect(c, (struct sockaddr *)&a_l, l_l)) {
		pr_perror("connect");
		return 1;
	}

	test_daemon();
	test_waitsig();

	test_check(!getpeername(d, (struct sockaddr *)&peer, &plen) && plen == l_dg && !strcmp(peer.sun_path, a_dg.sun_path),
		   "D's peer is not %s", a_dg.sun_path);
	test_check(send(d, "dgram-hi", 8, 0) == 8, "send on D");
	test_check(send(c, "stream-hi", 9, MSG_NOSIGNAL) == 9, "send on C");
	expect_file("sk.ext.dgram", "dgram-hi");
	expect_file("sk.ext.stream", "stream-hi");
	unlink(a_dg.sun_path);
	unlink(a_l.sun_path);
	if (failed) {
		errno = 0;
		fail("the sockets with peers outside the tree were not connected again");
		return 1;
	}
	pass();
	return 0;
}

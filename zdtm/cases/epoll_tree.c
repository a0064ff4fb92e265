/*
 * epoll_tree: an epoll set in a parent whose child holds none of the
 * watched files.
 *
 * The parent watches the read end of a pipe (at a high fd number) with an
 * epoll set; its child closes every fd it inherited but stdio. Each epoll
 * set is checked against its own task's fds (the child has no fd at that
 * number, which must not matter). After restore the parent writes into
 * the pipe and the set must report the read end readable with its data.
 * The parent reports ready only once the child has closed its fds (a dump
 * before that would find the epoll set shared by the two).
 */
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check an epoll set in a parent whose child does not have its files";

#define RD 40

int main(int argc, char **argv)
{
	int p[2], ready[2], ep, status, n;
	char c;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0x1234 };
	pid_t child;

	test_init(argc, argv);
	if (pipe(p) || dup2(p[0], RD) != RD)
		return pr_perror("pipe"), 1;
	close(p[0]);
	ep = epoll_create1(0);
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, RD, &ev))
		return pr_perror("epoll"), 1;
	if (pipe(ready))
		return pr_perror("pipe"), 1;
	child = test_fork();
	if (child < 0)
		return pr_perror("fork"), 1;
	if (child == 0) {
		close(RD);
		close(p[1]);
		close(ep);
		close(ready[0]);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		close(ready[1]);
		test_waitsig();
		_exit(0);
	}
	close(ready[1]);
	if (read(ready[0], &c, 1) != 1) {
		fail("the child did not close its fds");
		return 1;
	}
	close(ready[0]);

	test_daemon();
	test_waitsig();

	if (write(p[1], "x", 1) != 1) {
		fail("write to the pipe");
		return 1;
	}
	n = epoll_wait(ep, &ev, 1, 1000);
	kill(child, SIGTERM);
	waitpid(child, &status, 0);
	if (n != 1 || ev.data.u64 != 0x1234 || !(ev.events & EPOLLIN)) {
		fail("epoll_wait: %d events, data %#llx, events %#x", n, (unsigned long long)ev.data.u64,
		     ev.events);
		return 1;
	}
	pass();
	return 0;
}

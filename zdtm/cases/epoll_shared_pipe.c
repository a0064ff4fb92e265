/*
 * epoll_shared_pipe: an epoll set in a child watching a pipe its parent
 * holds too.
 *
 * The parent makes a pipe and forks; the child watches the read end (an
 * open file shared with the parent, as PostgreSQL's backends watch the
 * postmaster-death pipe) and an eventfd of its own with one epoll set.
 * After restore the parent writes into the pipe; the child must see the
 * read end readable with its data, the eventfd with its own, and the set
 * must know the read end under its fd number (EPOLL_CTL_MOD finds it).
 */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check an epoll set watching a pipe shared with the parent";

#define RD 30
#define EFD 20

static int child_main(int wr_unused)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0xfeed0001 };
	struct epoll_event out[4];
	int ep, n, i, pipe_seen = 0, efd_seen = 0;
	uint64_t one = 1;
	char c;

	close(wr_unused);
	if (dup2(eventfd(0, EFD_NONBLOCK), EFD) != EFD)
		return 10;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, RD, &ev))
		return 11;
	ev.data.u64 = 0xfeed0002;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, EFD, &ev))
		return 12;

	test_waitsig();

	if (write(EFD, &one, sizeof(one)) != sizeof(one))
		return 13;
	/* The parent writes into the pipe once it has been woken too. */
	for (i = 0; i < 50 && !(pipe_seen && efd_seen); i++) {
		n = epoll_wait(ep, out, 4, 100);
		while (n-- > 0) {
			if (out[n].data.u64 == 0xfeed0001 && (out[n].events & EPOLLIN))
				pipe_seen = 1;
			else if (out[n].data.u64 == 0xfeed0002 && (out[n].events & EPOLLIN))
				efd_seen = 1;
			else
				return 14;
		}
	}
	if (!pipe_seen)
		return 15;
	if (!efd_seen)
		return 16;
	if (read(RD, &c, 1) != 1 || c != 'p')
		return 17;
	ev.events = EPOLLIN | EPOLLRDHUP;
	ev.data.u64 = 0xfeed0003;
	if (epoll_ctl(ep, EPOLL_CTL_MOD, RD, &ev))
		return 18;
	if (epoll_ctl(ep, EPOLL_CTL_DEL, RD, NULL))
		return 19;
	return 0;
}

int main(int argc, char **argv)
{
	int p[2], status;
	pid_t child;

	test_init(argc, argv);
	if (pipe(p) || dup2(p[0], RD) != RD)
		return pr_perror("pipe"), 1;
	close(p[0]);
	child = test_fork();
	if (child < 0)
		return pr_perror("fork"), 1;
	if (child == 0)
		_exit(child_main(p[1]));

	test_daemon();
	test_waitsig();

	kill(child, SIGTERM);
	if (write(p[1], "p", 1) != 1) {
		fail("write to the pipe");
		return 1;
	}
	if (waitpid(child, &status, 0) != child) {
		fail("waitpid");
		return 1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fail("child: status %#x (exit code %d: see child_main)", status, WEXITSTATUS(status));
		return 1;
	}
	pass();
	return 0;
}

/*
 * epoll_closed_target: an epoll set still watches files whose fd it was
 * added under has been closed since.
 *
 *   A  read end of pipe pa, added as fd 30 (data 0xa), then dup'd to 31
 *      and fd 30 closed: the set watches it as "30", the task has it at 31
 *   B  read end of pipe pb, added as fd 40 (data 0xb), dup'd to 41, fd 40
 *      closed and reused for /dev/null (which the set does not watch)
 *   C  read end of pipe pc, added as fd 50 (data 0xc) and still open there
 *
 * After SIGTERM: fd 40 is /dev/null still; nothing is ready; after one
 * byte into pa's, pb's and pc's write ends, epoll_wait reports exactly
 * three EPOLLIN events with data 0xa, 0xb and 0xc; after the bytes are
 * read none is ready.
 *
 * --kind=elsewhere: a child holds A (at fd 30) and the parent closed it:
 * the set watches a file open in another process only. The dump must
 * refuse it, naming the set; the tree goes on (A is not checked then).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check epoll targets whose fd was closed since they were added";

static char *kind;
TEST_OPTION(kind, string, "elsewhere", 0);

static int failed;

static int add(int ep, int fd, uint64_t data)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = data };

	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

int main(int argc, char **argv)
{
	int pa[2], pb[2], pc[2], ep, n, i, status, seen = 0, elsewhere;
	struct epoll_event evs[8];
	struct stat st, null_st;
	pid_t child = -1;
	char c;

	test_init(argc, argv);
	elsewhere = kind && !strcmp(kind, "elsewhere");

	if (pipe(pa) || pipe(pb) || pipe(pc))
		return pr_perror("pipe"), 1;
	if (dup2(pa[0], 30) != 30 || dup2(pb[0], 40) != 40 || dup2(pc[0], 50) != 50)
		return pr_perror("dup2"), 1;
	close(pa[0]);
	close(pb[0]);
	close(pc[0]);
	ep = epoll_create1(0);
	if (ep < 0 || add(ep, 30, 0xa) || add(ep, 40, 0xb) || add(ep, 50, 0xc))
		return pr_perror("epoll"), 1;
	if (elsewhere) {
		child = test_fork();
		if (child < 0)
			return pr_perror("fork"), 1;
		if (child == 0) {
			close(ep);
			test_waitsig();
			_exit(0);
		}
		close(30);
	} else {
		if (dup2(30, 31) != 31)
			return pr_perror("dup2"), 1;
		close(30);
	}
	if (dup2(40, 41) != 41)
		return pr_perror("dup2"), 1;
	close(40);
	i = open("/dev/null", O_RDONLY);
	if (i < 0)
		return pr_perror("open /dev/null"), 1;
	if (i != 40 && (dup2(i, 40) != 40 || close(i)))
		return pr_perror("dup2 /dev/null"), 1;

	test_daemon();
	test_waitsig();

	test_check(!fstat(40, &st) && !stat("/dev/null", &null_st) && st.st_rdev == null_st.st_rdev &&
			   S_ISCHR(st.st_mode),
		   "fd 40 is no longer /dev/null");
	n = epoll_wait(ep, evs, 8, 0);
	test_check(n == 0, "%d events before any data", n);
	if ((!elsewhere && write(pa[1], "a", 1) != 1) || write(pb[1], "b", 1) != 1 || write(pc[1], "c", 1) != 1)
		return fail("write"), 1;
	n = epoll_wait(ep, evs, 8, 1000);
	for (i = 0; i < n; i++) {
		test_check(evs[i].events == EPOLLIN, "event %d: events %#x", i, evs[i].events);
		if (evs[i].data.u64 >= 0xa && evs[i].data.u64 <= 0xc)
			seen |= 1 << (evs[i].data.u64 - 0xa);
		else
			test_check(0, "event %d: data %#llx", i, (unsigned long long)evs[i].data.u64);
	}
	test_check(n == (elsewhere ? 2 : 3) && seen == (elsewhere ? 6 : 7), "%d events, seen %#x", n, seen);
	if ((!elsewhere && read(31, &c, 1) != 1) || read(41, &c, 1) != 1 || read(50, &c, 1) != 1)
		return fail("read"), 1;
	n = epoll_wait(ep, evs, 8, 0);
	test_check(n == 0, "%d events once the data is read", n);

	if (child > 0) {
		kill(child, SIGTERM);
		waitpid(child, &status, 0);
	}
	if (failed) {
		errno = 0;
		fail("epoll targets changed (see above)");
		return 1;
	}
	pass();
	return 0;
}

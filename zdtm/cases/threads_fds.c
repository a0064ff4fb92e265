/*
 * Threads blocked on descriptors at checkpoint time: one in read() on an
 * empty pipe, one in epoll_wait() on an epoll set watching another pipe,
 * one in poll() on an eventfd. After restore none of them may have
 * returned (no EINTR they never asked for); then each is woken by writing
 * to its descriptor and must get exactly the data or event it waits for.
 * Data left buffered in a third pipe at checkpoint time must still be
 * there, and the eventfd counter must keep its value.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check threads blocked in read, epoll_wait and poll across a checkpoint";

static int rd_pipe[2], ep_pipe[2], buf_pipe[2], epfd, evfd;
static volatile int woken; /* set before we wake the threads on purpose */
static volatile int rd_res = -2, ep_res = -2, poll_res = -2;
static int rd_errno, ep_errno, poll_errno;
static char rd_buf[16];
static struct epoll_event ep_ev;

static void *reader(void *arg)
{
	(void)arg;
	rd_res = read(rd_pipe[0], rd_buf, sizeof(rd_buf));
	rd_errno = errno;
	return NULL;
}

static void *poller(void *arg)
{
	(void)arg;
	ep_res = epoll_wait(epfd, &ep_ev, 1, -1);
	ep_errno = errno;
	return NULL;
}

static void *evwaiter(void *arg)
{
	struct pollfd p = { .fd = evfd, .events = POLLPRI };

	(void)arg;
	/* The eventfd is readable already (counter 5): wait for POLLPRI,
	 * which never comes, with a timeout longer than any test run. */
	poll_res = poll(&p, 1, 600 * 1000);
	poll_errno = errno;
	return NULL;
}

int main(int argc, char **argv)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0x1234567890abcdefULL };
	pthread_t t[3];
	uint64_t cnt = 0;
	char buf[32] = { 0 };
	int i;

	test_init(argc, argv);

	if (pipe(rd_pipe) || pipe(ep_pipe) || pipe(buf_pipe)) {
		pr_perror("pipe");
		return 1;
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	evfd = eventfd(5, EFD_NONBLOCK);
	if (epfd < 0 || evfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, ep_pipe[0], &ev)) {
		pr_perror("epoll/eventfd");
		return 1;
	}
	if (write(buf_pipe[1], "buffered", 8) != 8) {
		pr_perror("write");
		return 1;
	}
	if (pthread_create(&t[0], NULL, reader, NULL) || pthread_create(&t[1], NULL, poller, NULL) ||
	    pthread_create(&t[2], NULL, evwaiter, NULL)) {
		pr_perror("pthread_create");
		return 1;
	}
	usleep(200 * 1000); /* let them block */

	test_daemon();
	test_waitsig();

	/* Nothing may have come back on its own. */
	if (rd_res != -2 || ep_res != -2 || poll_res != -2) {
		fail("a blocked call returned before it was woken: read %d (errno %d), epoll_wait %d (errno %d), "
		     "poll %d (errno %d)",
		     rd_res, rd_errno, ep_res, ep_errno, poll_res, poll_errno);
		return 1;
	}
	woken = 1;
	if (write(rd_pipe[1], "hello", 5) != 5 || write(ep_pipe[1], "x", 1) != 1) {
		pr_perror("wake writes");
		return 1;
	}
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	if (rd_res != 5 || memcmp(rd_buf, "hello", 5)) {
		fail("read returned %d (errno %d) '%.*s'", rd_res, rd_errno, rd_res > 0 ? rd_res : 0, rd_buf);
		return 1;
	}
	if (ep_res != 1 || ep_ev.data.u64 != 0x1234567890abcdefULL || !(ep_ev.events & EPOLLIN)) {
		fail("epoll_wait returned %d (errno %d), events %#x data %#llx", ep_res, ep_errno, ep_ev.events,
		     (unsigned long long)ep_ev.data.u64);
		return 1;
	}
	if (poll_res != -2) {
		fail("poll on the eventfd returned %d (errno %d) before it was cancelled", poll_res, poll_errno);
		return 1;
	}
	pthread_cancel(t[2]);
	pthread_join(t[2], NULL);
	if (read(buf_pipe[0], buf, sizeof(buf)) != 8 || memcmp(buf, "buffered", 8)) {
		fail("buffered pipe data lost: '%s'", buf);
		return 1;
	}
	if (read(evfd, &cnt, 8) != 8 || cnt != 5) {
		fail("eventfd counter %llu, expected 5", (unsigned long long)cnt);
		return 1;
	}
	pass();
	return 0;
}

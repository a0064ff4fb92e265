/*
 * unix_socketpair_child: a SOCK_SEQPACKET pair whose ends are in a parent
 * and its child keeps the messages queued both ways, with their
 * boundaries, and still connects the two processes.
 *
 * The parent queues 3 messages (10, 1000, 64 bytes) for the child and the
 * child 2 (5, 700 bytes) for the parent; neither reads before the dump.
 * Each process closes the end it does not use.
 *
 * After SIGTERM: the parent reads its 2 messages, sends SIGTERM to the
 * child, which reads its 3 messages, then echoes one new message reversed;
 * the parent checks the echo, then the child exits 0 if all was well.
 *
 * --sabotage=WHAT (debug): count (the child expects a fourth message).
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that a seqpacket pair between a parent and a child keeps its queued messages";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: expect other state after SIGTERM (count)", 0);

static const int down[] = { 10, 1000, 64 };
static const int up[] = { 5, 700 };
#define ECHO_BYTES 123
#define WAIT_SECS 15

static int failed;

static int queued(int fd)
{
	int n = -1;

	if (ioctl(fd, FIONREAD, &n))
		return -1;
	return n;
}

static int send_msg(int fd, int len, int seed)
{
	uint8_t buf[4096];

	zdtm_fill_seeded(buf, len, seed);
	if (send(fd, buf, len, MSG_DONTWAIT) != len) {
		pr_perror("send of %d bytes", len);
		return -1;
	}
	return 0;
}

static void expect_msg(int fd, const char *what, int len, int seed)
{
	uint8_t buf[4096], want[4096];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

	zdtm_fill_seeded(want, len, seed);
	test_check(n == len && !memcmp(buf, want, len), "%s: a message of %zd bytes, expected %d (seed %d)%s", what, n,
		   len, seed, n == len ? " with other contents" : "");
}

/* one message, waiting up to WAIT_SECS for it */
static int recv_timed(int fd, uint8_t *buf, int len)
{
	int i;

	for (i = 0; i < WAIT_SECS * 100; i++) {
		ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);

		if (n >= 0)
			return n;
		if (errno != EAGAIN && errno != EINTR)
			return -1;
		usleep(10000);
	}
	return -1;
}

static void __attribute__((noreturn)) child(int sk)
{
	uint8_t msg[ECHO_BYTES], rev[ECHO_BYTES];
	int i, n;

	for (i = 0; i < 2; i++)
		if (send_msg(sk, up[i], 20 + i))
			_exit(1);
	test_waitsig();

	for (i = 0; i < 3; i++)
		expect_msg(sk, "child", down[i], 10 + i);
	if (sabotage && !strcmp(sabotage, "count"))
		expect_msg(sk, "child", 1, 99);
	n = recv_timed(sk, msg, sizeof(msg));
	test_check(n == ECHO_BYTES, "child: the new message is %d bytes", n);
	for (i = 0; i < ECHO_BYTES; i++)
		rev[i] = msg[ECHO_BYTES - 1 - i];
	if (send(sk, rev, ECHO_BYTES, 0) != ECHO_BYTES)
		failed = 1;
	close(sk);
	_exit(failed);
}

int main(int argc, char **argv)
{
	uint8_t msg[ECHO_BYTES], buf[ECHO_BYTES];
	int sk[2], i, n, status;
	pid_t pid;

	test_init(argc, argv);

	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sk)) {
		pr_perror("socketpair");
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		pr_perror("fork");
		return 1;
	}
	if (pid == 0) {
		close(sk[0]);
		child(sk[1]);
	}
	close(sk[1]);
	for (i = 0; i < 3; i++)
		if (send_msg(sk[0], down[i], 10 + i))
			return 1;
	/* the child has sent everything once its bytes are all queued */
	for (i = 0; queued(sk[0]) < up[0] + up[1]; i++) {
		if (i == WAIT_SECS * 100) {
			pr_err("the child did not send its messages\n");
			kill(pid, SIGKILL);
			return 1;
		}
		usleep(10000);
	}

	test_daemon();
	test_waitsig();

	for (i = 0; i < 2; i++)
		expect_msg(sk[0], "parent", up[i], 20 + i);
	if (kill(pid, SIGTERM))
		test_msg("FAILED: kill(child %d): %s\n", pid, strerror(errno)), failed = 1;
	zdtm_fill_seeded(msg, ECHO_BYTES, 3);
	if (send(sk[0], msg, ECHO_BYTES, 0) != ECHO_BYTES)
		pr_perror("send"), failed = 1;
	n = recv_timed(sk[0], buf, sizeof(buf));
	test_check(n == ECHO_BYTES, "parent: the echo is %d bytes, expected %d", n, ECHO_BYTES);
	for (i = 0; i < n && i < ECHO_BYTES; i++)
		if (buf[i] != msg[ECHO_BYTES - 1 - i]) {
			test_msg("FAILED: parent: the echo differs at byte %d\n", i);
			failed = 1;
			break;
		}
	if (test_wait_exit(pid, &status, WAIT_SECS))
		test_msg("FAILED: waitpid(child %d): %s\n", pid, strerror(errno)), failed = 1;
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child ended with status %#x", status);

	if (failed) {
		errno = 0;
		fail("the seqpacket pair between the processes was not restored correctly");
		return 1;
	}
	pass();
	return 0;
}

/*
 * unix_listen: a listening UNIX stream socket with connections accepted
 * and waiting, and datagram sockets connected to one bound socket, with
 * the clients in a child process.
 *
 * The parent holds the listener L (bound to "sk.listen", backlog 7), the
 * accepted end A of the child's connection C, a client P1 of L not
 * accepted, the datagram socket S bound to "sk.server" and a datagram
 * client D1 of S. The child holds C, a client P2 of L not accepted
 * (connected after P1) and a datagram client D2 of S. Queued before the
 * dump: 300 bytes C -> A, 700 bytes A -> C; datagrams of 11 bytes from D1,
 * then 22 bytes from D2, on S.
 *
 * After SIGTERM: L accepts exactly two connections, the first P1's (what
 * P1 sends reaches it), the second P2's; A reads its 300 bytes then what C
 * sends; C reads its 700 bytes; S reads the two datagrams in order, then
 * what D1 and D2 send; D1's peer is sk.server; a new client connects to
 * sk.listen and is accepted.
 *
 * --sabotage=WHAT (debug): order (expects P2's connection first).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check listening UNIX sockets, their accepted and waiting connections, datagram clients";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: expect other state after SIGTERM (order)", 0);

#define WAIT_SECS 15
#define C_TO_A 300
#define A_TO_C 700

static int failed;
static struct sockaddr_un a_listen, a_server;
static socklen_t l_listen, l_server;

static socklen_t addr_of(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "%s", path);
	return offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
}

static int client(int type, struct sockaddr_un *a, socklen_t len)
{
	int sk = socket(AF_UNIX, type, 0);

	if (sk < 0 || connect(sk, (struct sockaddr *)a, len)) {
		pr_perror("socket/connect");
		return -1;
	}
	return sk;
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

/* `len` bytes from `seed`, waiting up to WAIT_SECS for them */
static void expect_bytes(int fd, const char *what, int len, int seed)
{
	uint8_t buf[4096], want[4096];
	int got = 0, i;

	for (i = 0; got < len && i < WAIT_SECS * 100; i++) {
		ssize_t n = recv(fd, buf + got, len - got, MSG_DONTWAIT);

		if (n > 0)
			got += n;
		else if (n == 0 || (errno != EAGAIN && errno != EINTR))
			break;
		else
			usleep(10000);
	}
	zdtm_fill_seeded(want, len, seed);
	test_check(got == len && !memcmp(buf, want, len), "%s: read %d of %d bytes (seed %d)%s", what, got, len, seed,
		   got == len ? ", with other contents" : "");
}

static int sync_read(int fd)
{
	char c;

	if (read(fd, &c, 1) != 1) {
		pr_perror("sync read");
		return -1;
	}
	return 0;
}

static void __attribute__((noreturn)) child(int to_parent, int from_parent)
{
	int c, p2, d2;

	c = client(SOCK_STREAM, &a_listen, l_listen);
	if (c < 0 || send_msg(c, C_TO_A, 1) || write(to_parent, "c", 1) != 1 || sync_read(from_parent))
		_exit(1);
	p2 = client(SOCK_STREAM, &a_listen, l_listen);
	d2 = client(SOCK_DGRAM, &a_server, l_server);
	if (p2 < 0 || d2 < 0 || send_msg(d2, 22, 4) || write(to_parent, "p", 1) != 1)
		_exit(1);
	close(to_parent);
	close(from_parent);

	test_waitsig();

	expect_bytes(c, "C", A_TO_C, 2);
	if (send_msg(c, 33, 5) || send_msg(p2, 1, 6) || send_msg(d2, 44, 7))
		failed = 1;
	_exit(failed);
}

int main(int argc, char **argv)
{
	int l, a, p1, s, d1, x, y, n, status, up[2], down[2];
	struct sockaddr_un peer;
	socklen_t plen = sizeof(peer);
	socklen_t ol = sizeof(n);
	pid_t pid;

	test_init(argc, argv);
	unlink("sk.listen");
	unlink("sk.server");
	l_listen = addr_of(&a_listen, "sk.listen");
	l_server = addr_of(&a_server, "sk.server");

	l = socket(AF_UNIX, SOCK_STREAM, 0);
	s = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (l < 0 || s < 0 || bind(l, (struct sockaddr *)&a_listen, l_listen) || listen(l, 7) ||
	    bind(s, (struct sockaddr *)&a_server, l_server)) {
		pr_perror("listener");
		return 1;
	}
	if (pipe(up) || pipe(down)) {
		pr_perror("pipe");
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		pr_perror("fork");
		return 1;
	}
	if (pid == 0) {
		close(up[0]);
		close(down[1]);
		child(up[1], down[0]);
	}
	close(up[1]);
	close(down[0]);
	if (sync_read(up[0]))
		goto kill_child;
	a = accept(l, NULL, NULL);
	p1 = client(SOCK_STREAM, &a_listen, l_listen);
	d1 = client(SOCK_DGRAM, &a_server, l_server);
	if (a < 0 || p1 < 0 || d1 < 0 || send_msg(d1, 11, 3) || write(down[1], "g", 1) != 1 || sync_read(up[0]))
		goto kill_child;
	if (send_msg(a, A_TO_C, 2))
		goto kill_child;
	close(up[0]);
	close(down[1]);
	if (fcntl(l, F_SETFL, O_NONBLOCK)) {
		pr_perror("O_NONBLOCK");
		goto kill_child;
	}

	test_daemon();
	test_waitsig();

	test_check(!getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &n, &ol) && n == 1, "L does not listen");
	x = accept(l, NULL, NULL);
	y = accept(l, NULL, NULL);
	n = accept(l, NULL, NULL);
	test_check(x >= 0 && y >= 0, "L accepted %d and %d, expected two connections", x, y);
	test_check(n < 0 && errno == EAGAIN, "L had a third connection waiting");
	if (sabotage && !strcmp(sabotage, "order")) {
		int t = x;

		x = y;
		y = t;
	}
	if (send_msg(p1, 1, 8))
		failed = 1;
	if (kill(pid, SIGTERM))
		pr_perror("kill"), failed = 1;
	if (x >= 0)
		expect_bytes(x, "the first connection accepted (P1)", 1, 8);
	if (y >= 0)
		expect_bytes(y, "the second connection accepted (P2)", 1, 6);
	expect_bytes(a, "A", C_TO_A, 1);
	expect_bytes(a, "A, after the restore", 33, 5);
	expect_bytes(s, "S, the first datagram", 11, 3);
	expect_bytes(s, "S, the second datagram", 22, 4);
	if (send_msg(d1, 55, 9))
		failed = 1;
	expect_bytes(s, "S, from D2 after the restore", 44, 7);
	expect_bytes(s, "S, from D1 after the restore", 55, 9);
	test_check(!getpeername(d1, (struct sockaddr *)&peer, &plen) && plen == l_server &&
			   !strcmp(peer.sun_path, "sk.server"),
		   "D1's peer is not sk.server");
	n = client(SOCK_STREAM, &a_listen, l_listen);
	test_check(n >= 0 && accept(l, NULL, NULL) >= 0, "a new client was not accepted");

	if (test_wait_exit(pid, &status, WAIT_SECS))
		pr_perror("waitpid"), failed = 1;
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child ended with status %#x", status);
	unlink("sk.listen");
	unlink("sk.server");
	if (failed) {
		errno = 0;
		fail("the listening and connected sockets were not restored correctly");
		return 1;
	}
	pass();
	return 0;

kill_child:
	kill(pid, SIGKILL);
	return 1;
}

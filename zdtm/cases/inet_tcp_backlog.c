/*
 * inet_tcp_backlog: a TCP socket listening on loopback (--family=4 or 6)
 * with three connections made to it and not accepted yet, each client
 * having sent its own bytes ("one", "two-two", "three-three-three").
 * The engine cannot put connections back into an accept queue with their
 * sequence numbers, so the dump must refuse the listener, naming it and
 * the connections waiting, and leave the process as it was.
 *
 * After SIGTERM: accept() returns the three connections in the order they
 * were made (each one's peer is its client's address), each with its
 * client's bytes; and they still work both ways.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"
#include "zdtmtst.h"

const char *test_doc = "Check that connections in a listening socket's accept queue are refused, unharmed";

static int family = 4;
TEST_OPTION(family, int, "4 or 6", 0);

#define N 3
static const char *msg[N] = { "one", "two-two", "three-three-three" };

static int failed;

static int same_addr(struct sockaddr_storage *a, struct sockaddr_storage *b, socklen_t len)
{
	return !memcmp(a, b, len);
}

int main(int argc, char **argv)
{
	struct sockaddr_storage ss, cl[N], peer;
	socklen_t len, l;
	int af, lst, cli[N], i;
	char buf[64];

	test_init(argc, argv);
	af = family == 6 ? AF_INET6 : AF_INET;
	len = test_loopback_addr(af, &ss);
	lst = socket(af, SOCK_STREAM, 0);
	if (lst < 0 || bind(lst, (struct sockaddr *)&ss, len) || listen(lst, 8) ||
	    getsockname(lst, (struct sockaddr *)&ss, &len)) {
		pr_perror("listen");
		return 1;
	}
	for (i = 0; i < N; i++) {
		cli[i] = socket(af, SOCK_STREAM, 0);
		l = sizeof(cl[i]);
		memset(&cl[i], 0, sizeof(cl[i]));
		if (cli[i] < 0 || connect(cli[i], (struct sockaddr *)&ss, len) ||
		    getsockname(cli[i], (struct sockaddr *)&cl[i], &l) ||
		    write(cli[i], msg[i], strlen(msg[i])) != (ssize_t)strlen(msg[i])) {
			pr_perror("client %d", i);
			return 1;
		}
	}

	test_daemon();
	test_waitsig();

	for (i = 0; i < N; i++) {
		int srv, n;

		l = sizeof(peer);
		memset(&peer, 0, sizeof(peer));
		srv = accept(lst, (struct sockaddr *)&peer, &l);
		if (srv < 0) {
			fail("accept %d", i);
			return 1;
		}
		test_check(same_addr(&peer, &cl[i], len), "connection %d accepted out of order", i);
		n = read(srv, buf, sizeof(buf));
		test_check(n == (int)strlen(msg[i]) && !memcmp(buf, msg[i], n),
			   "connection %d: read %d bytes, expected \"%s\"", i, n, msg[i]);
		test_check(write(srv, "back", 4) == 4 && read(cli[i], buf, sizeof(buf)) == 4 &&
				   !memcmp(buf, "back", 4),
			   "connection %d: no bytes back", i);
		close(srv);
	}
	if (failed)
		return 1;
	pass();
	return 0;
}

/*
 * inet_refused: a TCP connection established over loopback (both ends in
 * this process; --family=4 or 6). The dump must refuse it, naming its
 * addresses, and the process must go on as before.
 *
 * After SIGTERM the connection still works: bytes written before the dump
 * and after it arrive, both ways.
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

const char *test_doc = "Check that an established TCP connection is refused, unharmed";

static int family = 4;
TEST_OPTION(family, int, "4 or 6", 0);

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int af, lst, cli, srv;
	char buf[16];

	test_init(argc, argv);
	af = family == 6 ? AF_INET6 : AF_INET;
	len = test_loopback_addr(af, &ss);
	lst = socket(af, SOCK_STREAM, 0);
	cli = socket(af, SOCK_STREAM, 0);
	if (lst < 0 || cli < 0 || bind(lst, (struct sockaddr *)&ss, len) || listen(lst, 1) ||
	    getsockname(lst, (struct sockaddr *)&ss, &len) || connect(cli, (struct sockaddr *)&ss, len)) {
		pr_perror("connection");
		return 1;
	}
	srv = accept(lst, NULL, NULL);
	if (srv < 0 || write(cli, "before", 6) != 6) {
		pr_perror("accept");
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (write(cli, "after", 5) != 5 || write(srv, "back", 4) != 4) {
		fail("write");
		return 1;
	}
	if (read(srv, buf, sizeof(buf)) != 11 || memcmp(buf, "beforeafter", 11) || read(cli, buf, sizeof(buf)) != 4 ||
	    memcmp(buf, "back", 4)) {
		fail("the connection lost or changed bytes");
		return 1;
	}
	pass();
	return 0;
}

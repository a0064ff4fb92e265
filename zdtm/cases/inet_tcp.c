/*
 * inet_tcp: TCP sockets that are not connected keep their addresses,
 * state and options; --family=4 or 6 (IPv4 on 127.0.0.1, IPv6 on ::1).
 *
 *   lst    listening on the loopback address (a port the kernel picked),
 *          backlog 7, O_NONBLOCK; SO_REUSEADDR, SO_REUSEPORT, TCP_NODELAY,
 *          SO_KEEPALIVE with TCP_KEEPIDLE 77, TCP_KEEPINTVL 11,
 *          TCP_KEEPCNT 5, IP_TOS (IPv6: IPV6_TCLASS) 0x10, SO_RCVBUF set;
 *          IPv6: IPV6_V6ONLY
 *   bnd    bound to the loopback address, neither listening nor connected;
 *          TCP_CORK, SO_SNDBUF set, SO_RCVTIMEO 3.25 s
 *   raw    created, nothing else (IPv6: IPV6_V6ONLY off)
 *   tw     (--timewait) listening without SO_REUSEADDR; a connection it
 *          accepted was closed from its side first, so its port is held
 *          in TIME-WAIT
 *
 * After SIGTERM: the addresses, listening state, backlog, flags and
 * options read back; which buffer sizes were set by hand too (SO_BUF_LOCK);
 * nothing waits on lst; `raw` connects to lst and bytes go both ways over
 * the accepted connection; tw listens on its port without SO_REUSEADDR
 * (the TIME-WAIT did not keep the restore from binding it); another socket of this uid joins lst's port
 * with SO_REUSEPORT, one without it is refused; bnd can listen on its port.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"
#include "zdtmtst.h"

#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif

const char *test_doc = "Check that TCP sockets not connected keep addresses, state and options";

static int family = 4;
TEST_OPTION(family, int, "4 or 6", 0);
static int timewait;
TEST_OPTION(timewait, bool, "also a listening socket whose port a closed connection holds in TIME-WAIT", 0);

static int failed;

static int getopt_int(int fd, int level, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, level, opt, &v, &len))
		return -1000 - errno;
	return v;
}

static int setopt(int fd, int level, int opt, int v)
{
	if (setsockopt(fd, level, opt, &v, sizeof(v))) {
		pr_perror("setsockopt %d/%d", level, opt);
		return -1;
	}
	return 0;
}

static int port_of(struct sockaddr_storage *ss)
{
	return ntohs(family == 6 ? ((struct sockaddr_in6 *)ss)->sin6_port : ((struct sockaddr_in *)ss)->sin_port);
}

static int name_of(int fd, struct sockaddr_storage *ss, socklen_t *len)
{
	*len = sizeof(*ss);
	memset(ss, 0, sizeof(*ss));
	return getsockname(fd, (struct sockaddr *)ss, len);
}

static int tcp_socket(void)
{
	int fd = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		pr_perror("socket");
	return fd;
}

/* Binds fd to the loopback address of --family, on a port of the kernel's
 * choosing. */
static int bind_loopback(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = test_loopback_addr(family == 6 ? AF_INET6 : AF_INET, &ss);

	if (bind(fd, (struct sockaddr *)&ss, len)) {
		pr_perror("bind");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage lst_name, bnd_name, now;
	socklen_t lst_len, bnd_len, now_len;
	struct sockaddr_storage tw_name;
	socklen_t tw_len;
	int tw, tw_cli, tw_srv;
	int lst, bnd, raw, rcvbuf, sndbuf, raw_rcvbuf, c, other;
	int ip_level, tos_opt;
	struct timeval tv = { 3, 250000 }, tv_was, tv_now;
	socklen_t tvlen = sizeof(tv_now);
	char buf[16];

	test_init(argc, argv);
	if (family != 4 && family != 6) {
		pr_err("--family must be 4 or 6\n");
		return 1;
	}
	ip_level = family == 6 ? IPPROTO_IPV6 : IPPROTO_IP;
	tos_opt = family == 6 ? IPV6_TCLASS : IP_TOS;

	lst = tcp_socket();
	bnd = tcp_socket();
	raw = tcp_socket();
	if (lst < 0 || bnd < 0 || raw < 0)
		return 1;
	if (setopt(lst, SOL_SOCKET, SO_REUSEADDR, 1) || setopt(lst, SOL_SOCKET, SO_REUSEPORT, 1) ||
	    setopt(lst, IPPROTO_TCP, TCP_NODELAY, 1) || setopt(lst, SOL_SOCKET, SO_KEEPALIVE, 1) ||
	    setopt(lst, IPPROTO_TCP, TCP_KEEPIDLE, 77) || setopt(lst, IPPROTO_TCP, TCP_KEEPINTVL, 11) ||
	    setopt(lst, IPPROTO_TCP, TCP_KEEPCNT, 5) || setopt(lst, ip_level, tos_opt, 0x10) ||
	    setopt(lst, SOL_SOCKET, SO_RCVBUF, 100000))
		return 1;
	if (family == 6 && (setopt(lst, IPPROTO_IPV6, IPV6_V6ONLY, 1) || setopt(raw, IPPROTO_IPV6, IPV6_V6ONLY, 0)))
		return 1;
	if (bind_loopback(lst) || listen(lst, 7) || set_nonblock(lst, 1)) {
		pr_perror("listen");
		return 1;
	}
	if (setopt(bnd, IPPROTO_TCP, TCP_CORK, 1) || setopt(bnd, SOL_SOCKET, SO_SNDBUF, 60000) ||
	    setsockopt(bnd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) || bind_loopback(bnd))
		return 1;
	if (name_of(lst, &lst_name, &lst_len) || name_of(bnd, &bnd_name, &bnd_len)) {
		pr_perror("getsockname");
		return 1;
	}
	tw = timewait ? tcp_socket() : -1;
	tw_cli = timewait ? tcp_socket() : -1;
	if (timewait && (tw < 0 || tw_cli < 0 || bind_loopback(tw) || listen(tw, 2) || name_of(tw, &tw_name, &tw_len) ||
	    connect(tw_cli, (struct sockaddr *)&tw_name, tw_len))) {
		pr_perror("tw");
		return 1;
	}
	if (timewait) {
		tw_srv = accept(tw, NULL, NULL);
		if (tw_srv < 0) {
			pr_perror("accept");
			return 1;
		}
		close(tw_srv);
		usleep(20000);
		close(tw_cli);
	}
	rcvbuf = getopt_int(lst, SOL_SOCKET, SO_RCVBUF);
	/* As the kernel keeps it: in its clock ticks. */
	if (getsockopt(bnd, SOL_SOCKET, SO_RCVTIMEO, &tv_was, &tvlen)) {
		pr_perror("SO_RCVTIMEO");
		return 1;
	}
	sndbuf = getopt_int(bnd, SOL_SOCKET, SO_SNDBUF);
	raw_rcvbuf = getopt_int(raw, SOL_SOCKET, SO_RCVBUF);

	test_daemon();
	test_waitsig();

	/* The listening socket. */
	test_check(!name_of(lst, &now, &now_len) && now_len == lst_len && !memcmp(&now, &lst_name, lst_len),
		   "lst is bound elsewhere now (port %d, was %d)", port_of(&now), port_of(&lst_name));
	test_check(getopt_int(lst, SOL_SOCKET, SO_ACCEPTCONN) == 1, "lst does not listen");
	{
		struct tcp_info ti;
		socklen_t len = sizeof(ti);

		memset(&ti, 0, sizeof(ti));
		test_check(!getsockopt(lst, IPPROTO_TCP, TCP_INFO, &ti, &len) && ti.tcpi_sacked == 7,
			   "lst's backlog is %u, expected 7", ti.tcpi_sacked);
	}
	test_check(fcntl(lst, F_GETFL) & O_NONBLOCK, "lst lost O_NONBLOCK");
	test_check(!(fcntl(bnd, F_GETFL) & O_NONBLOCK), "bnd became O_NONBLOCK");
	test_check(getopt_int(lst, SOL_SOCKET, SO_REUSEADDR) == 1, "lst lost SO_REUSEADDR");
	test_check(getopt_int(lst, SOL_SOCKET, SO_REUSEPORT) == 1, "lst lost SO_REUSEPORT");
	test_check(getopt_int(lst, IPPROTO_TCP, TCP_NODELAY) == 1, "lst lost TCP_NODELAY");
	test_check(getopt_int(lst, SOL_SOCKET, SO_KEEPALIVE) == 1, "lst lost SO_KEEPALIVE");
	test_check(getopt_int(lst, IPPROTO_TCP, TCP_KEEPIDLE) == 77, "TCP_KEEPIDLE is %d",
		   getopt_int(lst, IPPROTO_TCP, TCP_KEEPIDLE));
	test_check(getopt_int(lst, IPPROTO_TCP, TCP_KEEPINTVL) == 11, "TCP_KEEPINTVL is %d",
		   getopt_int(lst, IPPROTO_TCP, TCP_KEEPINTVL));
	test_check(getopt_int(lst, IPPROTO_TCP, TCP_KEEPCNT) == 5, "TCP_KEEPCNT is %d",
		   getopt_int(lst, IPPROTO_TCP, TCP_KEEPCNT));
	test_check(getopt_int(lst, ip_level, tos_opt) == 0x10, "TOS is %#x", getopt_int(lst, ip_level, tos_opt));
	test_check(getopt_int(lst, SOL_SOCKET, SO_RCVBUF) == rcvbuf, "lst's SO_RCVBUF is %d, expected %d",
		   getopt_int(lst, SOL_SOCKET, SO_RCVBUF), rcvbuf);
	test_check(getopt_int(lst, SOL_SOCKET, SO_BUF_LOCK) == 2, "lst's SO_BUF_LOCK is %d, expected 2",
		   getopt_int(lst, SOL_SOCKET, SO_BUF_LOCK));
	if (family == 6) {
		test_check(getopt_int(lst, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "lst lost IPV6_V6ONLY");
		test_check(getopt_int(raw, IPPROTO_IPV6, IPV6_V6ONLY) == 0, "raw got IPV6_V6ONLY");
	}

	if (timewait) {
		test_check(!name_of(tw, &now, &now_len) && now_len == tw_len && !memcmp(&now, &tw_name, tw_len),
			   "tw is bound elsewhere now (port %d, was %d)", port_of(&now), port_of(&tw_name));
		test_check(getopt_int(tw, SOL_SOCKET, SO_ACCEPTCONN) == 1, "tw does not listen");
		test_check(getopt_int(tw, SOL_SOCKET, SO_REUSEADDR) == 0, "tw got SO_REUSEADDR");
	}

	/* The bound one. */
	test_check(!name_of(bnd, &now, &now_len) && now_len == bnd_len && !memcmp(&now, &bnd_name, bnd_len),
		   "bnd is bound elsewhere now (port %d, was %d)", port_of(&now), port_of(&bnd_name));
	test_check(getopt_int(bnd, SOL_SOCKET, SO_ACCEPTCONN) == 0, "bnd listens");
	test_check(getopt_int(bnd, IPPROTO_TCP, TCP_CORK) == 1, "bnd lost TCP_CORK");
	test_check(getopt_int(bnd, IPPROTO_TCP, TCP_NODELAY) == 0, "bnd got TCP_NODELAY");
	test_check(getopt_int(bnd, SOL_SOCKET, SO_SNDBUF) == sndbuf, "bnd's SO_SNDBUF is %d, expected %d",
		   getopt_int(bnd, SOL_SOCKET, SO_SNDBUF), sndbuf);
	test_check(!getsockopt(bnd, SOL_SOCKET, SO_RCVTIMEO, &tv_now, &tvlen) && tv_now.tv_sec == tv_was.tv_sec &&
			   tv_now.tv_usec == tv_was.tv_usec,
		   "bnd's SO_RCVTIMEO is %ld.%06ld, expected %ld.%06ld", (long)tv_now.tv_sec, (long)tv_now.tv_usec,
		   (long)tv_was.tv_sec, (long)tv_was.tv_usec);

	/* The fresh one: nothing set, the kernel still tunes its buffers. */
	test_check(!name_of(raw, &now, &now_len) && port_of(&now) == 0, "raw is bound to port %d", port_of(&now));
	test_check(getopt_int(raw, SOL_SOCKET, SO_BUF_LOCK) == 0, "raw's SO_BUF_LOCK is %d",
		   getopt_int(raw, SOL_SOCKET, SO_BUF_LOCK));
	test_check(getopt_int(raw, SOL_SOCKET, SO_RCVBUF) == raw_rcvbuf, "raw's SO_RCVBUF is %d, expected %d",
		   getopt_int(raw, SOL_SOCKET, SO_RCVBUF), raw_rcvbuf);
	test_check(getopt_int(raw, SOL_SOCKET, SO_KEEPALIVE) == 0, "raw got SO_KEEPALIVE");

	/* Nothing waits; then a connection goes through. */
	c = accept(lst, NULL, NULL);
	test_check(c < 0 && errno == EAGAIN, "accept on lst gave %d (errno %d), expected EAGAIN", c, errno);
	if (connect(raw, (struct sockaddr *)&lst_name, lst_len)) {
		fail("connect to lst");
		return 1;
	}
	set_nonblock(lst, 0);
	c = accept(lst, NULL, NULL);
	if (c < 0) {
		fail("accept");
		return 1;
	}
	if (write(raw, "ping", 4) != 4 || read(c, buf, sizeof(buf)) != 4 || memcmp(buf, "ping", 4) ||
	    write(c, "pong!", 5) != 5 || read(raw, buf, sizeof(buf)) != 5 || memcmp(buf, "pong!", 5))
		test_check(0, "no bytes through the connection accepted on lst");

	/* SO_REUSEPORT: same uid joins, a socket without it does not. */
	other = tcp_socket();
	if (other < 0 || setopt(other, SOL_SOCKET, SO_REUSEPORT, 1)) {
		fail("socket");
		return 1;
	}
	if (family == 6)
		setopt(other, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	test_check(!bind(other, (struct sockaddr *)&lst_name, lst_len), "SO_REUSEPORT socket cannot join lst's port (errno %d)",
		   errno);
	close(other);
	other = tcp_socket();
	test_check(bind(other, (struct sockaddr *)&lst_name, lst_len) && errno == EADDRINUSE,
		   "a socket without SO_REUSEPORT could bind lst's port");
	close(other);

	test_check(!listen(bnd, 1), "bnd cannot listen (errno %d)", errno);

	if (failed)
		fail("TCP sockets changed");
	else
		pass();
	return 0;
}

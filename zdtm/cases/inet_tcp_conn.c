/*
 * inet_tcp_conn: an established TCP connection over loopback (--family=4
 * or 6), dumped and restored with --tcp-established.
 *
 * --mode=pair: the test holds one end (C), a child of the tree the other
 * (S, accepted from a listener L the test keeps). Both sides write, not
 * reading, until the kernel takes no more: each receive queue is full and
 * each send queue holds bytes never sent (small buffers, a closed window).
 *
 * --mode=ext: the same, with the test holding the listener and the
 * accepted end, and the client end held by a process outside the tree (a
 * grandchild in a session of its own). Between the dump and the restore
 * its kernel keeps probing the closed window of the dumped end: without
 * the network lock the probe meets no socket and resets the connection.
 *
 * --mode=exthalf: as ext, but the test's end writes nothing and shuts its
 * side down at once: its FIN was sent and acknowledged (FIN-WAIT-2), and
 * the outside peer, in CLOSE-WAIT, must still see the end of the stream
 * and reach the test with what it writes.
 *
 * --mode=half: as pair, then S shuts its sending side down (C has read
 * nothing, so the FIN waits behind the queued bytes): S is FIN-WAIT, C
 * CLOSE-WAIT once the FIN arrives, or both still ESTABLISHED with the FIN
 * unsent.
 *
 * --mode=closewait: as pair, but S writes a little (all of it taken by
 * C's kernel, none read) and shuts its side down at once: S is FIN-WAIT-2
 * and C, which has not read the end of the stream, CLOSE-WAIT; then C
 * fills as in pair mode, and after the restore writes more, which S must
 * still receive.
 *
 * --mode=extclosewait: as ext, but the outside peer writes a little and
 * shuts its side down first: the test's end is in CLOSE-WAIT with the
 * peer's bytes and FIN unread, and fills the other way.
 *
 * --mode=lastack: as closewait, with a firewall rule (nft, a table of the
 * test's own) dropping every packet from C to S: S's bytes and FIN reach
 * C but are never acknowledged (S stays FIN-WAIT-1), and C writes a
 * little and shuts its side down too: LAST-ACK, its bytes and FIN never
 * acknowledged either. After the restore each side checks its state, then
 * the rule goes and the retransmissions finish the connection.
 *
 * --mode=closing: as lastack, but the rules drop the packets where they
 * arrive, both ways, while each side writes a little and shuts down (so
 * each FIN is sent and not received); then C's packets go through: S gets
 * C's bytes and FIN, which do not acknowledge its own, and is CLOSING,
 * while C, which hears nothing from S, stays FIN-WAIT-1 with its FIN sent
 * and not acknowledged.
 *
 * After SIGTERM each side reads everything the other wrote, byte for byte
 * (a pattern of its own per direction) and nothing more, then a last
 * message goes each way (not from S in half mode: there C must read the
 * end of the stream; in the closing modes, each reads the end of the
 * stream exactly where the other's FIN was). In the closing modes each
 * side first checks (TCP_INFO) that its state is still the one it had.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "net.h"
#include "netdev.h"
#include "zdtmtst.h"

const char *test_doc = "Check established TCP connections with queued and unsent data (--tcp-established)";

static int family = 4;
TEST_OPTION(family, int, "4 or 6", 0);
static char *mode = "pair";
TEST_OPTION(mode, string, "pair, ext, exthalf, half, closewait, extclosewait, lastack or closing", 0);
static int veth;
TEST_OPTION(veth, int, "1: between the two addresses of a veth pair the case makes (ns flavour)", 0);

#define WAIT_SECS 20
#define BUFSZ 8192
/* What a side writes before its FIN in the closing modes: a little, that
 * the other side's kernel takes whole. */
#define LITTLE 3000

static int failed;
static int half, closewait, lastack, closing_mode;

/* Byte k of the stream in direction d (0: C to S, 1: S to C). */
static uint8_t pat(int d, uint64_t k)
{
	return (uint8_t)(k * 131 + (k >> 9) + d * 71 + 5);
}

/* Writes the pattern of direction d until the kernel takes no more. */
static uint64_t fill(int fd, int d)
{
	uint8_t buf[1024];
	uint64_t n = 0;
	int i, idle = 0;

	set_nonblock(fd, 1);
	/* A little time for the window to close and the queues to settle. */
	while (idle < 20) {
		ssize_t r;

		for (i = 0; i < (int)sizeof(buf); i++)
			buf[i] = pat(d, n + i);
		r = write(fd, buf, sizeof(buf));
		if (r > 0) {
			n += r;
			idle = 0;
			continue;
		}
		if (r < 0 && errno != EAGAIN)
			return (uint64_t)-1;
		idle++;
		usleep(10000);
	}
	set_nonblock(fd, 0);
	return n;
}

/* Reads exactly `want` bytes of direction d's pattern; then `tail` if
 * not NULL, and then, with eof, the end of the stream. Returns 0 if so. */
static int drain(int fd, int d, uint64_t want, const char *tail, int eof, const char *who)
{
	uint8_t buf[4096];
	uint64_t got = 0;
	size_t tl = tail ? strlen(tail) : 0, tgot = 0;
	char tbuf[64];
	struct pollfd p = { .fd = fd, .events = POLLIN };
	time_t end = time(NULL) + WAIT_SECS;

	while (got < want) {
		ssize_t r, i;
		size_t ask = sizeof(buf);

		if (want - got < ask)
			ask = want - got;
		if (poll(&p, 1, 1000) < 0 || time(NULL) > end) {
			test_msg("%s: only %llu of %llu bytes arrived\n", who, (unsigned long long)got,
				 (unsigned long long)want);
			return -1;
		}
		if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		r = recv(fd, buf, ask, MSG_DONTWAIT);
		if (r < 0 && errno == EAGAIN)
			continue;
		if (r <= 0) {
			test_msg("%s: the stream ended after %llu of %llu bytes (errno %d)\n", who,
				 (unsigned long long)got, (unsigned long long)want, r < 0 ? errno : 0);
			return -1;
		}
		for (i = 0; i < r; i++)
			if (buf[i] != pat(d, got + i)) {
				test_msg("%s: byte %llu is %#x, not %#x\n", who, (unsigned long long)(got + i), buf[i],
					 pat(d, got + i));
				return -1;
			}
		got += r;
	}
	while (tgot < tl) {
		ssize_t r;

		if (poll(&p, 1, 1000) < 0 || time(NULL) > end)
			break;
		r = recv(fd, tbuf + tgot, tl - tgot, MSG_DONTWAIT);
		if (r > 0)
			tgot += r;
		else if (r == 0 || errno != EAGAIN)
			break;
	}
	if (tgot != tl || (tl && memcmp(tbuf, tail, tl))) {
		test_msg("%s: %zu bytes after the %llu queued ones, not \"%s\"\n", who, tgot, (unsigned long long)want,
			 tail);
		return -1;
	}
	if (eof) {
		ssize_t r = -1;

		while (time(NULL) <= end) {
			if (poll(&p, 1, 1000) < 0)
				break;
			r = recv(fd, tbuf, 1, MSG_DONTWAIT);
			if (r >= 0 || errno != EAGAIN)
				break;
		}
		if (r != 0) {
			test_msg("%s: no end of stream after the data (%zd, errno %d)\n", who, r, errno);
			return -1;
		}
	} else {
		/* Nothing more. */
		if (recv(fd, tbuf, 1, MSG_DONTWAIT) != -1 || errno != EAGAIN) {
			test_msg("%s: more bytes than were written\n", who);
			return -1;
		}
	}
	return 0;
}

static int write_all(int fd, const char *m)
{
	return write(fd, m, strlen(m)) == (ssize_t)strlen(m) ? 0 : -1;
}

/* Writes the first n bytes of direction d's pattern; n, or -1. */
static uint64_t write_pattern(int fd, int d, uint64_t n)
{
	uint8_t buf[LITTLE];
	uint64_t i;

	if (n > sizeof(buf))
		return (uint64_t)-1;
	for (i = 0; i < n; i++)
		buf[i] = pat(d, i);
	return write(fd, buf, n) == (ssize_t)n ? n : (uint64_t)-1;
}

static int tcp_state(int fd)
{
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl))
		return -1;
	return ti.tcpi_state;
}

static const char *state_name(int st)
{
	static const char *names[] = { "?",		"ESTABLISHED", "SYN-SENT",  "SYN-RECV",
				       "FIN-WAIT-1",	"FIN-WAIT-2",  "TIME-WAIT", "CLOSE",
				       "CLOSE-WAIT",	"LAST-ACK",    "LISTEN",    "CLOSING" };

	return st > 0 && st < (int)(sizeof(names) / sizeof(names[0])) ? names[st] : "?";
}

/* Waits up to two seconds for fd to be in state st; 0 if it is. */
static int wait_state(int fd, int st, const char *who)
{
	int i, now = -1;

	for (i = 0; i < 200; i++) {
		now = tcp_state(fd);
		if (now == st)
			return 0;
		usleep(10000);
	}
	test_msg("%s is in state %s, not %s\n", who, state_name(now), state_name(st));
	return -1;
}

/* The test's own firewall tables (lastack and closing modes): [0] drops
 * the packets from C to S, [1] those from S to C. */
static char nft_table[2][64];

static int nft(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int nft(const char *fmt, ...)
{
	char cmd[512];
	int n;
	va_list ap;

	n = snprintf(cmd, sizeof(cmd), "PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH nft ");
	va_start(ap, fmt);
	vsnprintf(cmd + n, sizeof(cmd) - n, fmt, ap);
	va_end(ap);
	return system(cmd) == 0 ? 0 : -1;
}

/* With --veth: a veth pair zt0 - zt1 with an address on each (IPv6
 * ones nodad), the listener's address (zt1's) in ss and cli bound to
 * zt0's, so the connection runs between the addresses the tree made. */
static int veth_addrs(int af, struct sockaddr_storage *ss, int cli)
{
	struct sockaddr_storage c = *ss;
	const char *a0 = af == AF_INET6 ? "fd00:88::1" : "10.88.0.1";
	const char *a1 = af == AF_INET6 ? "fd00:88::2" : "10.88.0.2";
	int plen = af == AF_INET6 ? 64 : 24, six = af == AF_INET6;
	void *d1 = six ? (void *)&((struct sockaddr_in6 *)ss)->sin6_addr : (void *)&((struct sockaddr_in *)ss)->sin_addr;
	void *d0 = six ? (void *)&((struct sockaddr_in6 *)&c)->sin6_addr : (void *)&((struct sockaddr_in *)&c)->sin_addr;

	if (cli < 0 || test_veth_create("zt0", "zt1") || test_link_set("zt0", 0, NULL, 1) ||
	    test_link_set("zt1", 0, NULL, 1) || test_addr_add("zt0", af, a0, plen, 1) ||
	    test_addr_add("zt1", af, a1, plen, 1) || inet_pton(af, a1, d1) != 1 || inet_pton(af, a0, d0) != 1)
		return -1;
	if (bind(cli, (struct sockaddr *)&c, six ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in))) {
		pr_perror("bind to %s", a0);
		return -1;
	}
	return 0;
}

/* Drops every packet from port `from` to port `to` on loopback with
 * table t, where it leaves (hook output: the sender's TCP counts it as not
 * sent) or where it arrives (hook input: sent, never received). */
static int drop_flow(int t, int from, int to, const char *hook)
{
	char *name = nft_table[t];

	snprintf(name, sizeof(nft_table[t]), "zdtm_tcp_%d_%d", getpid(), t);
	return nft("add table inet %s", name) ||
	       nft("'add chain inet %s c { type filter hook %s priority 0 ; }'", name, hook) ||
	       nft("add rule inet %s c tcp sport %d tcp dport %d drop", name, from, to);
}

static void undrop_one(int t)
{
	if (nft_table[t][0] && !nft("delete table inet %s", nft_table[t]))
		nft_table[t][0] = 0;
}

static void undrop(void)
{
	undrop_one(0);
	undrop_one(1);
}

static int port_of(int fd, int peer)
{
	struct sockaddr_storage a;
	socklen_t l = sizeof(a);

	if ((peer ? getpeername : getsockname)(fd, (struct sockaddr *)&a, &l))
		return -1;
	return ntohs(a.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&a)->sin6_port
					     : ((struct sockaddr_in *)&a)->sin_port);
}

/* What the two sides share (anonymous shared memory; in ext mode the
 * outside peer's counts go through files instead). */
struct shared {
	uint64_t from_s;
	uint64_t from_c;
	int s_ready;
	/* S has checked its state after the restore (closing modes). */
	int s_checked;
	/* S is CLOSING (closing mode). */
	int s_closing;
};

static int put_file(const char *name, uint64_t v)
{
	char tmp[64], buf[32];
	int fd, n;

	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return -1;
	n = snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
	if (write(fd, buf, n) != n)
		return -1;
	close(fd);
	return rename(tmp, name);
}

/* The number in `name`, waiting for it; -1 if it does not come. */
static int64_t get_file(const char *name, int secs)
{
	char buf[32];
	int i, fd;

	for (i = 0; i < secs * 100; i++) {
		fd = open(name, O_RDONLY);
		if (fd >= 0) {
			ssize_t r = read(fd, buf, sizeof(buf) - 1);

			close(fd);
			if (r > 0) {
				buf[r] = 0;
				return strtoll(buf, NULL, 10);
			}
		}
		usleep(10000);
	}
	return -1;
}

/* The outside peer (ext mode): fills, tells its count, waits for the test
 * to say go, checks what C wrote, answers, says how it went. */
static void __attribute__((noreturn)) outside(int s)
{
	uint64_t n;
	int64_t want;
	int ok;

	setsid();
	alarm(120);
	if (!strcmp(mode, "extclosewait")) {
		/* A little, then the end of the stream: the test's end goes
		 * CLOSE-WAIT, and this one FIN-WAIT-2. */
		n = write_pattern(s, 1, LITTLE);
		if (n == (uint64_t)-1 || shutdown(s, SHUT_WR))
			_exit(1);
	} else {
		n = fill(s, 1);
	}
	if (n == (uint64_t)-1 || put_file("tcp.from_s", n))
		_exit(1);
	if (get_file("tcp.go", 110) < 0)
		_exit(1);
	want = get_file("tcp.from_c", 1);
	if (!strcmp(mode, "extclosewait"))
		/* Its side is shut down: nothing goes back. */
		ok = want >= 0 && !drain(s, 0, want, "after", 0, "the outside peer");
	else if (!strcmp(mode, "exthalf"))
		ok = want == 0 && !drain(s, 0, 0, NULL, 1, "the outside peer") && !write_all(s, "back");
	else
		ok = want >= 0 && !drain(s, 0, want, "after", 0, "the outside peer") && !write_all(s, "back");
	put_file("tcp.result", ok ? 1 : 0);
	/* Stay until the test has read the answer. */
	get_file("tcp.done", 30);
	_exit(0);
}

/* S, the child's end in the pair modes. */
static void __attribute__((noreturn)) serve(struct shared *sh, int srv)
{
	int closing = closewait || lastack || closing_mode;
	int want = closewait ? TCP_FIN_WAIT2 : closing_mode ? TCP_CLOSING : TCP_FIN_WAIT1;

	if (closing) {
		/* A little, then its FIN: taken by C's kernel, not read. */
		sh->from_s = write_pattern(srv, 1, LITTLE);
		if (sh->from_s == (uint64_t)-1 || shutdown(srv, SHUT_WR) ||
		    wait_state(srv, closewait ? TCP_FIN_WAIT2 : TCP_FIN_WAIT1, "S"))
			sh->from_s = (uint64_t)-1;
	} else {
		sh->from_s = fill(srv, 1);
		if (half && shutdown(srv, SHUT_WR))
			sh->from_s = (uint64_t)-1;
	}
	__atomic_store_n(&sh->s_ready, 1, __ATOMIC_SEQ_CST);
	if (closing_mode) {
		/* C's bytes and FIN come once C lets them through; they do not
		 * acknowledge S's FIN, which C never got: CLOSING. */
		int i;

		for (i = 0; i < WAIT_SECS * 100 && tcp_state(srv) != TCP_CLOSING; i++)
			usleep(10000);
		if (tcp_state(srv) == TCP_CLOSING)
			__atomic_store_n(&sh->s_closing, 1, __ATOMIC_SEQ_CST);
		else
			test_msg("S is in state %s, not CLOSING\n", state_name(tcp_state(srv)));
	}
	test_waitsig();
	if (closing) {
		int now = tcp_state(srv);

		if (now != want) {
			test_msg("S is in state %s after the restore, not %s\n", state_name(now), state_name(want));
			_exit(1);
		}
		__atomic_store_n(&sh->s_checked, 1, __ATOMIC_SEQ_CST);
	}
	if (lastack || closing_mode)
		/* C's bytes, then the end of the stream where its FIN was. */
		_exit(drain(srv, 0, sh->from_c, NULL, 1, "S") ? 1 : 0);
	/* Its side is shut down: C closes once it has read everything, so
	 * the end of the stream follows "after". */
	if (closewait)
		_exit(drain(srv, 0, sh->from_c, "after", 1, "S") ? 1 : 0);
	if (drain(srv, 0, sh->from_c, "after", 0, "S"))
		_exit(1);
	/* In half mode C keeps its end open until S is done. */
	if (half)
		_exit(0);
	if (write_all(srv, "back"))
		_exit(1);
	/* Open until C has checked there is nothing more. */
	if (drain(srv, 0, 0, NULL, 1, "S"))
		_exit(1);
	_exit(0);
}

static int wait_flag(int *flag)
{
	int i;

	for (i = 0; i < WAIT_SECS * 100 && !__atomic_load_n(flag, __ATOMIC_SEQ_CST); i++)
		usleep(10000);
	return __atomic_load_n(flag, __ATOMIC_SEQ_CST) ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	struct shared *sh;
	socklen_t len;
	int af, lst, cli, srv, small = BUFSZ, ext, rshut, extcw, status, closing, c_state = 0;
	uint64_t from_c;
	pid_t pid;

	test_init(argc, argv);
	rshut = !strcmp(mode, "exthalf");
	extcw = !strcmp(mode, "extclosewait");
	ext = rshut || extcw || !strcmp(mode, "ext");
	half = !strcmp(mode, "half");
	closewait = !strcmp(mode, "closewait");
	lastack = !strcmp(mode, "lastack");
	closing_mode = !strcmp(mode, "closing");
	closing = closewait || lastack || closing_mode;
	if (!ext && !half && !closing && strcmp(mode, "pair")) {
		pr_err("unknown --mode=%s\n", mode);
		return 1;
	}
	unlink("tcp.from_s");
	unlink("tcp.from_c");
	unlink("tcp.go");
	unlink("tcp.result");
	unlink("tcp.done");
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		pr_perror("mmap");
		return 1;
	}
	af = family == 6 ? AF_INET6 : AF_INET;
	len = test_loopback_addr(af, &ss);
	lst = socket(af, SOCK_STREAM, 0);
	cli = socket(af, SOCK_STREAM, 0);
	if (veth && (veth_addrs(af, &ss, cli) || lst < 0)) {
		pr_err("veth pair and its addresses\n");
		return 1;
	}
	if (lst < 0 || cli < 0 || setsockopt(lst, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) ||
	    setsockopt(lst, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) ||
	    setsockopt(cli, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) ||
	    setsockopt(cli, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) || bind(lst, (struct sockaddr *)&ss, len) ||
	    listen(lst, 1) || getsockname(lst, (struct sockaddr *)&ss, &len) ||
	    connect(cli, (struct sockaddr *)&ss, len)) {
		pr_perror("connection");
		return 1;
	}
	srv = accept(lst, NULL, NULL);
	if (srv < 0) {
		pr_perror("accept");
		return 1;
	}
	if ((lastack && drop_flow(0, port_of(cli, 0), port_of(cli, 1), "output")) ||
	    (closing_mode && (drop_flow(0, port_of(cli, 0), port_of(cli, 1), "input") ||
			      drop_flow(1, port_of(cli, 1), port_of(cli, 0), "input")))) {
		pr_err("nft: cannot drop the packets of the connection\n");
		undrop();
		return 1;
	}

	pid = fork();
	if (pid < 0) {
		pr_perror("fork");
		return 1;
	}
	if (pid == 0) {
		if (ext) {
			/* The outside peer is the client; the test keeps the
			 * listener and the accepted end. */
			close(srv);
			close(lst);
			if (fork() == 0)
				outside(cli);
			_exit(0);
		}
		close(cli);
		close(lst);
		serve(sh, srv);
	}
	if (ext) {
		/* C is the test's end from here on. */
		close(cli);
		cli = srv;
	} else {
		close(srv);
	}
	if (closing) {
		/* S's bytes and FIN first. */
		if (wait_flag(&sh->s_ready) || sh->from_s == (uint64_t)-1) {
			pr_err("the child did not write and shut down its side\n");
			undrop();
			return 1;
		}
	}
	if ((closing && !closing_mode) || extcw) {
		if (wait_state(cli, TCP_CLOSE_WAIT, "C")) {
			pr_err("C did not get the peer's FIN\n");
			undrop();
			return 1;
		}
	}
	if (rshut) {
		/* The test's side shut down at once: its FIN is sent and
		 * acknowledged (FIN-WAIT-2), the outside peer in CLOSE-WAIT. */
		from_c = 0;
		if (shutdown(cli, SHUT_WR)) {
			pr_perror("shutdown");
			return 1;
		}
		if (wait_state(cli, TCP_FIN_WAIT2, "C")) {
			pr_err("C is not FIN-WAIT-2\n");
			return 1;
		}
	} else if (lastack || closing_mode) {
		/* A little, never acknowledged, then its FIN. */
		from_c = write_pattern(cli, 0, LITTLE);
		if (from_c != (uint64_t)-1 &&
		    (shutdown(cli, SHUT_WR) || wait_state(cli, lastack ? TCP_LAST_ACK : TCP_FIN_WAIT1, "C")))
			from_c = (uint64_t)-1;
		if (closing_mode && from_c != (uint64_t)-1) {
			/* C's bytes and FIN reach S now, S's never reach C. */
			undrop_one(0);
			if (nft_table[0][0] || wait_flag(&sh->s_closing))
				from_c = (uint64_t)-1;
		}
	} else {
		from_c = fill(cli, 0);
	}
	if (from_c == (uint64_t)-1) {
		pr_perror("writing on C");
		undrop();
		return 1;
	}
	if (ext) {
		waitpid(pid, NULL, 0);
		if (put_file("tcp.from_c", from_c) || get_file("tcp.from_s", WAIT_SECS) < 0) {
			pr_err("the outside peer did not start\n");
			return 1;
		}
	} else if (wait_flag(&sh->s_ready) || sh->from_s == (uint64_t)-1) {
		pr_err("the child did not fill its side\n");
		undrop();
		return 1;
	}
	sh->from_c = from_c;
	if (closing || extcw)
		c_state = tcp_state(cli);
	test_msg("C wrote %llu bytes (state %s)\n", (unsigned long long)from_c, state_name(tcp_state(cli)));

	test_daemon();
	test_waitsig();

	if (c_state) {
		int now = tcp_state(cli);

		test_check(now == c_state, "C is in state %s after the restore, not %s", state_name(now),
			   state_name(c_state));
	}
	if (ext) {
		int64_t from_s = get_file("tcp.from_s", 1), res;

		put_file("tcp.go", 1);
		/*
		 * exthalf: the outside peer answers as soon as it has seen the
		 * end of C's stream, which it has already, so the answer may be
		 * right behind the pattern before C has read it all.
		 */
		test_check(!drain(cli, 1, from_s, rshut ? "back" : NULL, extcw, "C"),
			   "C did not get what the outside peer wrote");
		if (!rshut)
			test_check(!write_all(cli, "after"), "write on C");
		else
			test_check(send(cli, "x", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE,
				   "C, shut down for writing, is not any more");
		res = get_file("tcp.result", WAIT_SECS);
		test_check(res == 1, "the outside peer did not get what C wrote (%lld)", (long long)res);
		if (!extcw && !rshut)
			test_check(!drain(cli, 1, 0, "back", 0, "C"), "C did not get the answer");
		put_file("tcp.done", 1);
	} else {
		kill(pid, SIGTERM);
		if (closing) {
			/* S checks its state before anything moves it on. */
			test_check(!wait_flag(&sh->s_checked), "S did not find its state as it was");
			undrop();
			test_check(!nft_table[0][0] && !nft_table[1][0], "nft: cannot remove the tables %s %s",
				   nft_table[0], nft_table[1]);
		}
		if (lastack || closing_mode)
			test_check(send(cli, "x", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE,
				   "C, shut down for writing, is not any more");
		else
			test_check(!write_all(cli, "after"), "write on C");
		test_check(!drain(cli, 1, sh->from_s, half || closing ? NULL : "back", half || closing, "C"),
			   "C did not get what S wrote");
		if (!half)
			close(cli);
		test_check(test_wait_exit(pid, &status, WAIT_SECS) == 0 && WIFEXITED(status) && !WEXITSTATUS(status),
			   "S did not get what C wrote");
	}
	undrop();
	if (failed) {
		errno = 0;
		fail("the TCP connection lost, changed or reset its bytes");
		return 1;
	}
	pass();
	return 0;
}

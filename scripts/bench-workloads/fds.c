/*
 * Workload: one process holding N open file descriptors of one family,
 * for comparing what a kind of file costs a dump.
 *
 *   fds sockets N   N sockets: a third in connected UNIX stream socketpairs,
 *                   a third UDP sockets bound to 127.0.0.1, the rest TCP
 *                   sockets listening on 127.0.0.1 (each on a port of its
 *                   own)
 *   fds pipes N     N pipe ends: N/2 pipes, both ends open
 *
 * Ready line: "ready pid=N fds=N sum=HEX" (sum: a hash of the kinds of the
 * fds, in order). On SIGUSR1 it checks every fd: still a socket of the same
 * domain and type (listening for TCP), or still a pipe; every socketpair
 * and pipe still carries a byte from one end to the other. "ok sum=HEX"
 * (the same hash), or "bad fd=N ...".
 */
#include "bench_lib.c"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

enum kind { K_UNIX_A, K_UNIX_B, K_UDP, K_TCP_LISTEN, K_PIPE_R, K_PIPE_W };

#define MAX_FDS 4000

static int nfds;
static int fds[MAX_FDS];
static enum kind kinds[MAX_FDS];
static volatile uint64_t expected_sum;

static uint64_t checksum(void)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (int i = 0; i < nfds; i++)
		h = (h ^ (uint64_t)(kinds[i] + 1)) * 0x100000001b3ULL;
	return h;
}

static void add(int fd, enum kind k)
{
	if (fd < 0)
		bench_die("making fd %d: %s", nfds, strerror(errno));
	if (nfds == MAX_FDS)
		bench_die("too many fds");
	fds[nfds] = fd;
	kinds[nfds++] = k;
}

static int inet_sock(int type)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int s = socket(AF_INET, type, 0);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)))
		bench_die("socket/bind: %s", strerror(errno));
	if (type == SOCK_STREAM && listen(s, 16))
		bench_die("listen: %s", strerror(errno));
	return s;
}

static int sock_is(int fd, int domain, int type, int listening)
{
	int v;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &l) || v != domain)
		return 0;
	l = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l) || v != type)
		return 0;
	l = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) || v != listening)
		return 0;
	return 1;
}

/* A byte from one end to the other (both blocking: the peer is ours). */
static int carries(int from, int to)
{
	char c = 'x', d = 0;
	return write(from, &c, 1) == 1 && read(to, &d, 1) == 1 && d == 'x';
}

static int check_fd(int i)
{
	struct stat st;
	int fd = fds[i];
	if (fstat(fd, &st))
		return 0;
	switch (kinds[i]) {
	case K_UNIX_A:
		return S_ISSOCK(st.st_mode) && sock_is(fd, AF_UNIX, SOCK_STREAM, 0) &&
		       carries(fd, fds[i + 1]) && carries(fds[i + 1], fd);
	case K_UNIX_B:
		return S_ISSOCK(st.st_mode) && sock_is(fd, AF_UNIX, SOCK_STREAM, 0);
	case K_UDP:
		return S_ISSOCK(st.st_mode) && sock_is(fd, AF_INET, SOCK_DGRAM, 0);
	case K_TCP_LISTEN:
		return S_ISSOCK(st.st_mode) && sock_is(fd, AF_INET, SOCK_STREAM, 1);
	case K_PIPE_R:
		return S_ISFIFO(st.st_mode) && carries(fds[i + 1], fd);
	case K_PIPE_W:
		return S_ISFIFO(st.st_mode);
	}
	return 0;
}

static void verify(struct bench_buf *b)
{
	for (int i = 0; i < nfds; i++) {
		if (!check_fd(i)) {
			bench_put(b, "bad fd=");
			bench_put_dec(b, (uint64_t)fds[i]);
			bench_put(b, " kind=");
			bench_put_dec(b, (uint64_t)kinds[i]);
			return;
		}
	}
	bench_put(b, "ok sum=");
	bench_put_hex(b, checksum());
}

int main(int argc, char **argv)
{
	bench_init();
	if (argc != 3)
		bench_die("usage: fds sockets|pipes N");
	int n = atoi(argv[2]);
	if (n < 2 || n > MAX_FDS)
		bench_die("N out of range: %d", n);
	if (!strcmp(argv[1], "sockets")) {
		int pairs = n / 3 / 2, i;
		for (i = 0; i < pairs; i++) {
			int sv[2] = { -1, -1 };
			if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
				bench_die("socketpair: %s", strerror(errno));
			add(sv[0], K_UNIX_A);
			add(sv[1], K_UNIX_B);
		}
		for (i = 0; nfds < n; i++)
			add(inet_sock(i % 2 ? SOCK_DGRAM : SOCK_STREAM), i % 2 ? K_UDP : K_TCP_LISTEN);
	} else if (!strcmp(argv[1], "pipes")) {
		while (nfds + 2 <= n) {
			int p[2] = { -1, -1 };
			if (pipe(p))
				bench_die("pipe: %s", strerror(errno));
			add(p[0], K_PIPE_R);
			add(p[1], K_PIPE_W);
		}
	} else {
		bench_die("unknown family %s", argv[1]);
	}
	expected_sum = checksum();
	bench_set_verify(verify);
	bench_ready("pid=%d fds=%d sum=%016llx", (int)getpid(), nfds, (unsigned long long)expected_sum);
	bench_pause_forever();
}

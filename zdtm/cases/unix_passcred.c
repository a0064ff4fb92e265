/*
 * unix_passcred: SO_PASSCRED and SO_PASSSEC of UNIX sockets come back,
 * and so does the name (or the lack of one) that SO_PASSCRED gives as a
 * side effect: the kernel autobinds an unbound socket with SO_PASSCRED
 * when it connects or sends.
 *
 *   srv    a SOCK_DGRAM socket bound to "sk.pcsrv", neither option
 *   early  SOCK_DGRAM, SO_PASSCRED set, then connected to srv: the kernel
 *          gave it an autobind name
 *   late   SOCK_DGRAM, connected to srv, then SO_PASSCRED set: no name
 *   idle   SOCK_DGRAM, SO_PASSCRED and SO_PASSSEC, never connected: no
 *          name
 *   st     a SOCK_STREAM pair: st[0] with SO_PASSSEC, st[1] with
 *          SO_PASSCRED
 *   l      a listening SOCK_STREAM socket bound to "sk.pcl" with both
 *
 * After SIGTERM: every option reads back on each socket only where set;
 * early has its autobind name still, late and idle have none (checked
 * before anything is sent); srv receives from early and late, and st[1]
 * receives st[0]'s bytes with this process's credentials.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that SO_PASSCRED and SO_PASSCRED's autobind, and SO_PASSSEC, come back";

static int failed;

static int sockopt(int fd, int opt)
{
	int v = -100;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, opt, &v, &l))
		return -100;
	return v;
}

static int set(int fd, int opt)
{
	int v = 1;

	if (setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v))) {
		pr_perror("setsockopt %d", opt);
		return -1;
	}
	return 0;
}

static socklen_t addr_of(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "%s", path);
	return offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
}

/* fd's name: its length (sizeof(sa_family_t) for none) and bytes */
static socklen_t name_of(int fd, struct sockaddr_un *a)
{
	socklen_t l = sizeof(*a);

	memset(a, 0, sizeof(*a));
	if (getsockname(fd, (struct sockaddr *)a, &l))
		return 0;
	return l;
}

#define check_opts(fd, cred, sec)                                                                \
	test_check(sockopt(fd, SO_PASSCRED) == (cred) && sockopt(fd, SO_PASSSEC) == (sec),       \
		   #fd ": SO_PASSCRED %d SO_PASSSEC %d, expected %d %d", sockopt(fd, SO_PASSCRED), \
		   sockopt(fd, SO_PASSSEC), cred, sec)

int main(int argc, char **argv)
{
	int srv, early, late, idle, st[2], l;
	struct sockaddr_un a, b, early_name, n;
	socklen_t la, lb, early_len;
	char buf[8];

	test_init(argc, argv);
	unlink("sk.pcsrv");
	unlink("sk.pcl");
	la = addr_of(&a, "sk.pcsrv");
	lb = addr_of(&b, "sk.pcl");

	srv = socket(AF_UNIX, SOCK_DGRAM, 0);
	early = socket(AF_UNIX, SOCK_DGRAM, 0);
	late = socket(AF_UNIX, SOCK_DGRAM, 0);
	idle = socket(AF_UNIX, SOCK_DGRAM, 0);
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (srv < 0 || early < 0 || late < 0 || idle < 0 || l < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, st)) {
		pr_perror("socket");
		return 1;
	}
	if (bind(srv, (struct sockaddr *)&a, la) || bind(l, (struct sockaddr *)&b, lb) || listen(l, 4)) {
		pr_perror("bind or listen");
		return 1;
	}
	if (set(early, SO_PASSCRED) || connect(early, (struct sockaddr *)&a, la) ||
	    connect(late, (struct sockaddr *)&a, la) || set(late, SO_PASSCRED) || set(idle, SO_PASSCRED) ||
	    set(idle, SO_PASSSEC) || set(st[0], SO_PASSSEC) || set(st[1], SO_PASSCRED) || set(l, SO_PASSCRED) ||
	    set(l, SO_PASSSEC)) {
		pr_perror("options or connect");
		return 1;
	}
	early_len = name_of(early, &early_name);
	if (early_len <= offsetof(struct sockaddr_un, sun_path) || early_name.sun_path[0] != 0) {
		pr_err("connecting with SO_PASSCRED gave no autobind name (length %u)\n", early_len);
		return 1;
	}
	if (name_of(late, &n) != sizeof(sa_family_t) || name_of(idle, &n) != sizeof(sa_family_t)) {
		pr_err("late or idle has a name before the checkpoint\n");
		return 1;
	}

	test_daemon();
	test_waitsig();

	check_opts(srv, 0, 0);
	check_opts(early, 1, 0);
	check_opts(late, 1, 0);
	check_opts(idle, 1, 1);
	check_opts(st[0], 0, 1);
	check_opts(st[1], 1, 0);
	check_opts(l, 1, 1);
	test_check(name_of(early, &n) == early_len && !memcmp(&n, &early_name, early_len),
		   "early's autobind name changed (length %u, was %u)", name_of(early, &n), early_len);
	test_check(name_of(late, &n) == sizeof(sa_family_t), "late has a name (length %u)", name_of(late, &n));
	test_check(name_of(idle, &n) == sizeof(sa_family_t), "idle has a name (length %u)", name_of(idle, &n));

	/* Still connected to srv. */
	test_check(send(early, "e", 1, 0) == 1 && send(late, "l", 1, 0) == 1, "send to srv");
	test_check(recv(srv, buf, sizeof(buf), MSG_DONTWAIT) == 1 && buf[0] == 'e' &&
			   recv(srv, buf, sizeof(buf), MSG_DONTWAIT) == 1 && buf[0] == 'l',
		   "srv did not receive early's and late's bytes in order");

	/* st[1] gets credentials with st[0]'s bytes. */
	{
		char cbuf[CMSG_SPACE(sizeof(struct ucred))];
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				    .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *c;
		struct ucred *u = NULL;

		test_check(send(st[0], "s", 1, 0) == 1, "send on st[0]");
		test_check(recvmsg(st[1], &m, MSG_DONTWAIT) == 1 && buf[0] == 's', "recvmsg on st[1]");
		for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
				u = (struct ucred *)CMSG_DATA(c);
		test_check(u && u->pid == getpid() && u->uid == getuid(),
			   "st[1] got no credentials or not this process's (pid %d)", u ? u->pid : -1);
	}

	if (failed)
		return 1;
	pass();
	return 0;
}

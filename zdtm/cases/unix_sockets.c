/*
 * unix_sockets: one socket of a kind; those the engine checkpoints come
 * back working, the others the dump must refuse (naming them) and the
 * process goes on as before.
 *
 * --kind=WHAT:
 *   bound        a UNIX datagram socket bound to a path
 *   listen       a listening UNIX stream socket
 *   unconnected  a UNIX datagram socket, neither bound nor connected
 *   pending_data (refused) a client of a listening socket that sent 5
 *                bytes on its connection, not accepted yet
 *   pending_closed (refused) the same, and then the client closed its
 *                socket
 *   outside      (refused) a UNIX stream socket whose peer is held by a
 *                process outside the tree
 *   rights       a UNIX stream pair with a file descriptor in
 *                flight
 *   creds        a UNIX datagram pair whose receiving end has
 *                SO_PASSCRED, with a message queued (and its sender's
 *                credentials)
 *   inet         (refused) an INET datagram socket
 *
 * After SIGTERM the socket still works: the bound one receives from a new
 * socket, the listening one accepts, the waiting connection is accepted
 * with its bytes, the outside peer echoes, the fd in flight is received
 * and is the pipe it was, the queued message comes with this process's
 * credentials.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that sockets the engine cannot checkpoint are refused, unharmed";

static char *kind;
TEST_OPTION(kind, string, "bound, listen, unconnected, pending_data, pending_closed, outside, rights, creds or inet", 1);

static int failed;

static int unix_addr(struct sockaddr_un *a, const char *name)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "%s", name);
	return offsetof(struct sockaddr_un, sun_path) + strlen(name) + 1;
}

int main(int argc, char **argv)
{
	struct sockaddr_un a;
	int sk, sv[2], p[2], len, c;
	char buf[8];

	test_init(argc, argv);
	unlink("sk.bound");
	len = unix_addr(&a, "sk.bound");
	if (!strcmp(kind, "bound") || !strcmp(kind, "listen") || !strcmp(kind, "pending_data") ||
	    !strcmp(kind, "pending_closed")) {
		int listening = strcmp(kind, "bound");

		sk = socket(AF_UNIX, listening ? SOCK_STREAM : SOCK_DGRAM, 0);
		if (sk < 0 || bind(sk, (struct sockaddr *)&a, len) || (listening && listen(sk, 4))) {
			pr_perror("socket");
			return 1;
		}
		if (!strcmp(kind, "pending_data") || !strcmp(kind, "pending_closed")) {
			c = socket(AF_UNIX, SOCK_STREAM, 0);
			if (c < 0 || connect(c, (struct sockaddr *)&a, len) || write(c, "early", 5) != 5) {
				pr_perror("client");
				return 1;
			}
			if (!strcmp(kind, "pending_closed"))
				close(c);
		}
	} else if (!strcmp(kind, "outside")) {
		pid_t pid;

		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
			pr_perror("socketpair");
			return 1;
		}
		/* the peer's holder: a grandchild whose parent is gone */
		pid = fork();
		if (pid < 0) {
			pr_perror("fork");
			return 1;
		}
		if (pid == 0) {
			if (fork() == 0) {
				close(sv[0]);
				/* echo one byte, then go when the peer closes */
				while (read(sv[1], buf, 1) == 1)
					if (write(sv[1], buf, 1) != 1)
						break;
				_exit(0);
			}
			_exit(0);
		}
		waitpid(pid, NULL, 0);
		close(sv[1]);
		sk = sv[0];
	} else if (!strcmp(kind, "unconnected")) {
		sk = socket(AF_UNIX, SOCK_DGRAM, 0);
	} else if (!strcmp(kind, "inet")) {
		sk = socket(AF_INET, SOCK_DGRAM, 0);
	} else if (!strcmp(kind, "pending_data")) {
		c = accept(sk, NULL, NULL);
		test_check(c >= 0 && recv(c, buf, sizeof(buf), MSG_DONTWAIT) == 5 && !memcmp(buf, "early", 5),
			   "the waiting connection lost its bytes");
	} else if (!strcmp(kind, "outside")) {
		test_check(write(sk, "o", 1) == 1 && read(sk, buf, 1) == 1 && buf[0] == 'o',
			   "the outside peer does not echo");
		close(sk);
	} else if (!strcmp(kind, "rights")) {
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = { "r", 1 };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				     .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || pipe(p)) {
			pr_perror("socketpair");
			return 1;
		}
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &p[1], sizeof(int));
		if (sendmsg(sv[0], &mh, 0) != 1) {
			pr_perror("sendmsg");
			return 1;
		}
		close(p[1]);
		sk = sv[1];
	} else if (!strcmp(kind, "creds")) {
		int on = 1;

		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) ||
		    setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) || send(sv[0], "c", 1, 0) != 1) {
			pr_perror("socketpair with SO_PASSCRED");
			return 1;
		}
		sk = sv[1];
	} else {
		pr_err("unknown --kind=%s\n", kind);
		return 1;
	}
	if (sk < 0) {
		pr_perror("socket");
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (!strcmp(kind, "bound")) {
		int s = socket(AF_UNIX, SOCK_DGRAM, 0);

		test_check(sendto(s, "hi", 2, 0, (struct sockaddr *)&a, len) == 2, "sendto the bound socket");
		test_check(recv(sk, buf, sizeof(buf), MSG_DONTWAIT) == 2, "the bound socket received nothing");
	} else if (!strcmp(kind, "listen")) {
		int s = socket(AF_UNIX, SOCK_STREAM, 0);

		test_check(!connect(s, (struct sockaddr *)&a, len), "connect to the listening socket");
		c = accept(sk, NULL, NULL);
		test_check(c >= 0, "accept");
	} else if (!strcmp(kind, "pending_data") || !strcmp(kind, "pending_closed")) {
		c = accept(sk, NULL, NULL);
		test_check(c >= 0 && recv(c, buf, sizeof(buf), MSG_DONTWAIT) == 5 && !memcmp(buf, "early", 5),
			   "the waiting connection lost its bytes");
		if (!strcmp(kind, "pending_closed"))
			test_check(recv(c, buf, sizeof(buf), MSG_DONTWAIT) == 0, "no EOF after the bytes of a closed client");
	} else if (!strcmp(kind, "outside")) {
		test_check(write(sk, "o", 1) == 1 && read(sk, buf, 1) == 1 && buf[0] == 'o',
			   "the outside peer does not echo");
		close(sk);
	} else if (!strcmp(kind, "rights")) {
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = { buf, 1 };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				     .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *cm;
		int fd = -1;

		test_check(recvmsg(sk, &mh, MSG_DONTWAIT) == 1, "recvmsg of the fd in flight");
		cm = CMSG_FIRSTHDR(&mh);
		if (cm && cm->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(cm), sizeof(int));
		test_check(fd >= 0 && write(fd, "x", 1) == 1 && read(p[0], buf, 1) == 1,
			   "the fd in flight is not the pipe");
	} else if (!strcmp(kind, "creds")) {
		char cbuf[CMSG_SPACE(sizeof(struct ucred))];
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				     .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *cm;
		struct ucred u = { .pid = -1 };

		test_check(recvmsg(sk, &mh, MSG_DONTWAIT) == 1 && buf[0] == 'c', "recvmsg of the queued message");
		cm = CMSG_FIRSTHDR(&mh);
		if (cm && cm->cmsg_type == SCM_CREDENTIALS)
			memcpy(&u, CMSG_DATA(cm), sizeof(u));
		test_check(u.pid == getpid() && u.uid == getuid() && u.gid == getgid(),
			   "the message came with pid %d uid %d gid %d", u.pid, u.uid, u.gid);
	} else {
		int t = -1;
		socklen_t l = sizeof(t);

		test_check(!getsockopt(sk, SOL_SOCKET, SO_TYPE, &t, &l) && t == SOCK_DGRAM, "the socket is gone");
	}
	unlink("sk.bound");
	if (failed) {
		errno = 0;
		fail("the socket does not work after the refused dump");
		return 1;
	}
	pass();
	return 0;
}

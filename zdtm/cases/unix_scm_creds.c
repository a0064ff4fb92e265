/*
 * unix_scm_creds: messages queued on UNIX sockets with SO_PASSCRED keep
 * their senders' credentials (SCM_CREDENTIALS): pid, uid and gid.
 *
 *   dg     SOCK_DGRAM pair, SO_PASSCRED on dg[1]; queued dg[0] -> dg[1]:
 *          "self" from this process (root), "child" from a child that
 *          runs as uid 444 gid 555 and stays, "dead" from a child that
 *          exited since (its pid is what the receiver reads)
 *   st     SOCK_STREAM pair, SO_PASSCRED on st[1]; "aaa" from this
 *          process, then "bbb" from the child: two runs, each with its own
 *          sender
 *   srv    a datagram socket bound to an abstract name, with SO_PASSCRED;
 *          "named" sent to it by the child
 *
 * After SIGTERM each message reads back with the credentials it was sent
 * with.
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that the senders' credentials of queued UNIX messages are restored";

static int failed;

#define CHILD_UID 444
#define CHILD_GID 555

static void expect(int sk, const char *want, pid_t pid, uid_t uid, gid_t gid)
{
	char m[16] = {};
	char cbuf[CMSG_SPACE(sizeof(struct ucred))];
	struct iovec iov = { m, strlen(want) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	struct ucred u = { .pid = -1, .uid = -1, .gid = -1 };
	ssize_t n = recvmsg(sk, &mh, MSG_DONTWAIT);

	test_check(n == (ssize_t)strlen(want) && !memcmp(m, want, n), "%s: got \"%s\" (%zd)", want, n > 0 ? m : "", n);
	cm = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
	if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS)
		memcpy(&u, CMSG_DATA(cm), sizeof(u));
	test_check(u.pid == pid && u.uid == uid && u.gid == gid,
		   "%s: came with pid %d uid %d gid %d, expected pid %d uid %d gid %d", want, u.pid, (int)u.uid,
		   (int)u.gid, pid, (int)uid, (int)gid);
}

static int passcred(int sk)
{
	int on = 1;

	return setsockopt(sk, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on));
}

int main(int argc, char **argv)
{
	int dg[2], st[2], go[2], done[2], srv, status;
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	socklen_t alen;
	pid_t child, dead;
	char c;

	test_init(argc, argv);

	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) || socketpair(AF_UNIX, SOCK_STREAM, 0, st) || pipe(go) ||
	    pipe(done) || passcred(dg[1]) || passcred(st[1])) {
		pr_perror("socketpair");
		return 1;
	}
	srv = socket(AF_UNIX, SOCK_DGRAM, 0);
	snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, "zdtm_scm_creds_%d", getpid());
	alen = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(addr.sun_path + 1);
	if (srv < 0 || bind(srv, (struct sockaddr *)&addr, alen) || passcred(srv)) {
		pr_perror("srv");
		return 1;
	}

	if (send(dg[0], "self", 4, 0) != 4 || send(st[0], "aaa", 3, 0) != 3) {
		pr_perror("send");
		return 1;
	}
	child = fork();
	if (child < 0) {
		pr_perror("fork");
		return 1;
	}
	if (child == 0) {
		int cl = socket(AF_UNIX, SOCK_DGRAM, 0);

		if (setresgid(CHILD_GID, CHILD_GID, CHILD_GID) || setresuid(CHILD_UID, CHILD_UID, CHILD_UID) ||
		    send(dg[0], "child", 5, 0) != 5 || send(st[0], "bbb", 3, 0) != 3 ||
		    sendto(cl, "named", 5, 0, (struct sockaddr *)&addr, alen) != 5) {
			pr_perror("child's sends");
			_exit(1);
		}
		close(cl);
		if (write(done[1], "d", 1) != 1)
			_exit(1);
		/* stays until the end */
		while (read(go[0], &c, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	if (read(done[0], &c, 1) != 1) {
		pr_perror("the child's sends");
		return 1;
	}
	dead = fork();
	if (dead < 0) {
		pr_perror("fork");
		return 1;
	}
	if (dead == 0)
		_exit(send(dg[0], "dead", 4, 0) == 4 ? 0 : 1);
	if (waitpid(dead, &status, 0) != dead || !WIFEXITED(status) || WEXITSTATUS(status)) {
		pr_err("the short-lived sender failed\n");
		return 1;
	}

	test_daemon();
	test_waitsig();

	expect(dg[1], "self", getpid(), getuid(), getgid());
	expect(dg[1], "child", child, CHILD_UID, CHILD_GID);
	expect(dg[1], "dead", dead, getuid(), getgid());
	expect(st[1], "aaa", getpid(), getuid(), getgid());
	expect(st[1], "bbb", child, CHILD_UID, CHILD_GID);
	expect(srv, "named", child, CHILD_UID, CHILD_GID);
	test_check(recv(dg[1], &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "dg[1]: more queued");

	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	if (failed) {
		errno = 0;
		fail("the senders' credentials were not restored");
		return 1;
	}
	pass();
	return 0;
}

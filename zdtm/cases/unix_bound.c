/*
 * unix_bound: UNIX sockets bound to names keep them, and their files.
 *
 *   dg     SOCK_DGRAM bound to the relative path "sk.dgram", whose file
 *          is made mode 0640; datagrams of 3, 1000 and 9 bytes are queued
 *          on it by a socket since closed
 *   gone   SOCK_STREAM bound to "sk.gone", whose path is then removed
 *   abs    SOCK_DGRAM bound to an abstract name (with the pid in it); one
 *          datagram of 77 bytes queued
 *   ab     SOCK_SEQPACKET with an autobind name (bind with no name)
 *
 * After SIGTERM: every socket has its name (getsockname) and type; the
 * file of sk.dgram is a socket with mode 0640 and the test's owner, and a
 * new socket reaches dg through it; sk.gone is not there; the queued
 * datagrams read back in order with their sizes; abs is reached by its
 * name; ab has the name the kernel gave it.
 *
 * --sabotage=WHAT (debug): mode (expects mode 0600).
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that bound UNIX sockets keep their names, files and queues";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: expect other state after SIGTERM (mode)", 0);

static int failed;
static const int dg_msgs[] = { 3, 1000, 9 };
#define N_DG 3
#define ABS_BYTES 77

static socklen_t addr_of(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "%s", path);
	return offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
}

static socklen_t abstract_of(struct sockaddr_un *a, const char *name)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "%s", name);
	return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name);
}

static int bound(int type, struct sockaddr_un *a, socklen_t len)
{
	int sk = socket(AF_UNIX, type, 0);

	if (sk < 0 || bind(sk, (struct sockaddr *)a, len)) {
		pr_perror("socket/bind");
		return -1;
	}
	return sk;
}

static int send_to(struct sockaddr_un *a, socklen_t len, int bytes, int seed)
{
	uint8_t buf[1000];
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);
	int ret = 0;

	zdtm_fill_seeded(buf, bytes, seed);
	if (s < 0 || sendto(s, buf, bytes, MSG_DONTWAIT, (struct sockaddr *)a, len) != bytes) {
		pr_perror("sendto");
		ret = -1;
	}
	close(s);
	return ret;
}

static void expect_msg(int fd, const char *what, int len, int seed)
{
	uint8_t buf[2000], want[2000];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

	zdtm_fill_seeded(want, len, seed);
	test_check(n == len && !memcmp(buf, want, len), "%s: a message of %zd bytes, expected %d (seed %d)", what, n,
		   len, seed);
}

/* getsockname of fd is `len` bytes of `want` */
static void expect_name(int fd, const char *what, struct sockaddr_un *want, socklen_t len)
{
	struct sockaddr_un got;
	socklen_t l = sizeof(got);

	memset(&got, 0, sizeof(got));
	test_check(!getsockname(fd, (struct sockaddr *)&got, &l) && l == len && !memcmp(&got, want, len),
		   "%s: getsockname gives %u bytes \"%s\", expected %u bytes \"%s\"", what, l,
		   got.sun_path[0] ? got.sun_path : got.sun_path + 1, len,
		   want->sun_path[0] ? want->sun_path : want->sun_path + 1);
}

static int sock_type(int fd)
{
	int v = -1;
	socklen_t l = sizeof(v);

	getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l);
	return v;
}

int main(int argc, char **argv)
{
	struct sockaddr_un a_dg, a_gone, a_abs, a_ab;
	socklen_t l_dg, l_gone, l_abs, l_ab;
	int dg, gone, abs_sk, ab, i;
	char name[64];
	struct stat st;

	test_init(argc, argv);
	unlink("sk.dgram");
	unlink("sk.gone");

	l_dg = addr_of(&a_dg, "sk.dgram");
	l_gone = addr_of(&a_gone, "sk.gone");
	snprintf(name, sizeof(name), "zdtm-unix-bound-%d", getpid());
	l_abs = abstract_of(&a_abs, name);
	dg = bound(SOCK_DGRAM, &a_dg, l_dg);
	gone = bound(SOCK_STREAM, &a_gone, l_gone);
	abs_sk = bound(SOCK_DGRAM, &a_abs, l_abs);
	if (dg < 0 || gone < 0 || abs_sk < 0)
		return 1;
	memset(&a_ab, 0, sizeof(a_ab));
	a_ab.sun_family = AF_UNIX;
	ab = bound(SOCK_SEQPACKET, &a_ab, sizeof(sa_family_t));
	if (ab < 0)
		return 1;
	l_ab = sizeof(a_ab);
	if (getsockname(ab, (struct sockaddr *)&a_ab, &l_ab)) {
		pr_perror("getsockname");
		return 1;
	}
	if (chmod("sk.dgram", 0640) || unlink("sk.gone")) {
		pr_perror("chmod/unlink");
		return 1;
	}
	for (i = 0; i < N_DG; i++)
		if (send_to(&a_dg, l_dg, dg_msgs[i], 10 + i))
			return 1;
	if (send_to(&a_abs, l_abs, ABS_BYTES, 20))
		return 1;

	test_daemon();
	test_waitsig();

	test_check(sock_type(dg) == SOCK_DGRAM && sock_type(gone) == SOCK_STREAM && sock_type(abs_sk) == SOCK_DGRAM &&
			   sock_type(ab) == SOCK_SEQPACKET,
		   "socket types changed");
	expect_name(dg, "dg", &a_dg, l_dg);
	expect_name(gone, "gone", &a_gone, l_gone);
	expect_name(abs_sk, "abs", &a_abs, l_abs);
	expect_name(ab, "ab (autobind)", &a_ab, l_ab);

	if (lstat("sk.dgram", &st)) {
		pr_perror("stat sk.dgram"), failed = 1;
	} else {
		mode_t want = sabotage && !strcmp(sabotage, "mode") ? 0600 : 0640;

		test_check(S_ISSOCK(st.st_mode) && (st.st_mode & 07777) == want,
			   "sk.dgram has mode %o, expected a socket with mode %o", st.st_mode, want);
		test_check(st.st_uid == getuid() && st.st_gid == getgid(), "sk.dgram is owned by %d:%d, expected %d:%d",
			   st.st_uid, st.st_gid, getuid(), getgid());
	}
	test_check(lstat("sk.gone", &st) && errno == ENOENT, "sk.gone is there again");

	for (i = 0; i < N_DG; i++)
		expect_msg(dg, "dg", dg_msgs[i], 10 + i);
	expect_msg(abs_sk, "abs", ABS_BYTES, 20);
	if (!send_to(&a_dg, l_dg, 5, 30))
		expect_msg(dg, "dg after the restore", 5, 30);
	else
		failed = 1;
	if (!send_to(&a_abs, l_abs, 6, 31))
		expect_msg(abs_sk, "abs after the restore", 6, 31);
	else
		failed = 1;

	unlink("sk.dgram");
	if (failed) {
		errno = 0;
		fail("the bound sockets were not restored correctly");
		return 1;
	}
	pass();
	return 0;
}

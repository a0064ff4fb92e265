/*
 * uts_nested: UTS namespaces made inside the tree come back, with their
 * names, their owners and their sharing.
 *
 * The test task T forks A, which unshares a UTS namespace and sets its
 * host and domain names, then forks A1, which inherits it; and B, which
 * unshares a user namespace and a UTS namespace together (a sandbox:
 * the UTS namespace is owned by the new user namespace), which T maps
 * (0 0 1), and sets its host name. After SIGTERM:
 *  - A sees its names, its UTS namespace is owned by T's user namespace,
 *    and A sets a new host name, which A1 then sees (one namespace);
 *  - B sees its name, its UTS namespace is owned by its own user
 *    namespace, and B, with power only there, may set its name again;
 *  - T's host name is still the one it started with.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that UTS namespaces made inside the tree survive";

#ifndef NS_GET_USERNS
#define NS_GET_USERNS 0xb701
#endif

#define A_HOST "zdtm-uts-a"
#define A_DOMAIN "zdtm-dom-a"
#define A_HOST2 "zdtm-uts-a2"
#define B_HOST "zdtm-uts-b"
#define B_HOST2 "zdtm-uts-b2"
/* T maps B from outside: mapping uid 0 of the parent takes CAP_SETFCAP
 * there, which B has no more. */
#define B_MAP "0 0 1\n"

/* Whether the user namespace that owns our UTS namespace is our own. */
static int uts_owned_by_own_user(void)
{
	struct stat own, owner;
	int ns = open("/proc/self/ns/uts", O_RDONLY), u;

	if (ns < 0)
		return -1;
	u = ioctl(ns, NS_GET_USERNS);
	close(ns);
	if (u < 0)
		return -1;
	if (fstat(u, &owner) || stat("/proc/self/ns/user", &own)) {
		close(u);
		return -1;
	}
	close(u);
	return own.st_ino == owner.st_ino;
}

static int names_are(const char *host, const char *domain)
{
	struct utsname u;

	if (uname(&u))
		return 0;
	return !strcmp(u.nodename, host) && (!domain || !strcmp(u.domainname, domain));
}

/* A1: waits for A's SIGTERM, then sees A's new name. */
static int a1_main(int ready)
{
	if (write(ready, "1", 1) != 1)
		return 2;
	close(ready);
	while (test_go())
		pause();
	return names_are(A_HOST2, A_DOMAIN) ? 0 : 3;
}

static int a_main(int ready)
{
	int p[2], st;
	pid_t a1;
	char c;

	if (unshare(CLONE_NEWUTS) || sethostname(A_HOST, strlen(A_HOST)) ||
	    setdomainname(A_DOMAIN, strlen(A_DOMAIN)) || pipe(p))
		return 10;
	a1 = fork();
	if (a1 < 0)
		return 11;
	if (a1 == 0) {
		close(p[0]);
		close(ready);
		_exit(a1_main(p[1]));
	}
	close(p[1]);
	if (read(p[0], &c, 1) != 1 || write(ready, "a", 1) != 1)
		return 12;
	close(ready);
	while (test_go())
		pause();
	if (!names_are(A_HOST, A_DOMAIN))
		return 13;
	if (uts_owned_by_own_user() != 1)
		return 14;
	if (sethostname(A_HOST2, strlen(A_HOST2)))
		return 15;
	kill(a1, SIGTERM);
	if (waitpid(a1, &st, 0) != a1 || !WIFEXITED(st))
		return 16;
	return WEXITSTATUS(st) ? 20 + WEXITSTATUS(st) : 0;
}

static int b_go = -1;

static int b_main(int ready)
{
	char c;

	if (unshare(CLONE_NEWUSER | CLONE_NEWUTS) || write(ready, "u", 1) != 1)
		return 30;
	if (read(b_go, &c, 1) != 1 || sethostname(B_HOST, strlen(B_HOST)) || write(ready, "b", 1) != 1)
		return 31;
	close(b_go);
	close(ready);
	while (test_go())
		pause();
	if (!names_are(B_HOST, NULL))
		return 32;
	if (uts_owned_by_own_user() != 1)
		return 33;
	/* Its power is in its own user namespace only: the owner's. */
	if (sethostname(B_HOST2, strlen(B_HOST2)) || !names_are(B_HOST2, NULL))
		return 34;
	return 0;
}

static pid_t start(int (*fn)(int), int *rd)
{
	int p[2];
	pid_t pid;

	if (pipe(p))
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(p[0]);
		_exit(fn(p[1]));
	}
	close(p[1]);
	*rd = p[0];
	return pid;
}

static int finish(pid_t pid, const char *name)
{
	int st;

	kill(pid, SIGTERM);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
		errno = 0;
		fail("%s ended with status %#x", name, st);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct utsname before;
	pid_t a, b;
	int ra, rb, go[2];
	char c;

	test_init(argc, argv);

	if (uname(&before)) {
		pr_perror("uname");
		return 1;
	}
	if (pipe(go)) {
		pr_perror("pipe");
		return 1;
	}
	a = start(a_main, &ra);
	b_go = go[0];
	b = start(b_main, &rb);
	close(go[0]);
	if (a < 0 || b < 0) {
		pr_perror("fork");
		return 1;
	}
	/* B is in its namespaces: its maps, then its name. */
	if (read(rb, &c, 1) != 1 || test_map_userns(b, B_MAP, B_MAP) || write(go[1], "g", 1) != 1) {
		pr_perror("mapping B's user namespace");
		return 1;
	}
	close(go[1]);
	if (read(ra, &c, 1) != 1 || read(rb, &c, 1) != 1) {
		pr_perror("a child did not set up");
		return 1;
	}
	close(ra);
	close(rb);

	test_daemon();
	test_waitsig();

	if (finish(a, "A") || finish(b, "B"))
		return 1;
	if (!names_are(before.nodename, before.domainname)) {
		errno = 0;
		fail("the test task's names changed");
		return 1;
	}
	pass();
	return 0;
}

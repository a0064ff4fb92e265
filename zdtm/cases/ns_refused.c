/*
 * ns_refused: trees in namespaces the restore cannot make are refused at
 * dump time, and go on unharmed.
 *
 * --kind=net: the test task, the tree's root, enters a network namespace
 *   of its own and gives it a route (10.0.0.0/8 through lo). Supported
 *   since network namespaces are kept whole (the row expects a pass, and
 *   the route is checked after the restore);
 * --kind=bridge: the same namespace with a bridge device in it, a kind of
 *   device the restore does not make;
 * --kind=veth_out: the same namespace with a veth zo0 whose other end is
 *   in the namespace the test started in (undeclared: the dump names the
 *   device and --external veth[zo0]);
 * --kind=time: the test task makes a time namespace for its children and
 *   forks one into it;
 * --kind=nestedpid_thread: a child of the test task makes a pid namespace
 *   for its children and forks its init, which starts a thread (threads
 *   in a pid namespace nested in the tree's are not supported yet: the
 *   supported nesting is pidns_nested's);
 * --kind=nft: the root enters a network namespace of its own (only lo,
 *   down) and gives it an nftables table with a chain and a rule;
 * --kind=nft_table: the same with an empty table (no chain, no rule).
 *   Both supported now too (the ruleset is kept): the rows expect a pass;
 * --kind=cgroup_back: a child of the test task makes a cgroup namespace
 *   of its own and forks a grandchild, which goes back into the test
 *   task's (the host's) with setns: a namespace the restore cannot put a
 *   task back into from one made inside the tree;
 * --kind=userns_thread: a child of the test task unshares a user
 *   namespace and starts a thread (threads of a task in a user namespace
 *   below the root's are not supported yet: userns_nested's tasks are
 *   single-threaded);
 * --kind=ramfs: the root mounts a ramfs (in the ns flavour's mount
 *   namespace), a file system whose contents the dump does not save;
 *   after SIGTERM its file is still there.
 *
 * After SIGTERM the nft kinds check that their table is still there.
 *
 * After SIGTERM the task checks that its child is still alive and that
 * the names it set are still there.
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"
#include "netdev.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

const char *test_doc = "Check that namespaces the restore cannot make are refused at dump";

static char *kind = "net";
static int host_cgns = -1;
static void *sleeper(void *arg)
{
	for (;;)
		pause();
	return arg;
}

TEST_OPTION(kind, string, "net, bridge, veth_out, time, nestedpid_thread, nft, nft_table, cgroup_back or userns_thread", 0);

/* lo up, then a route the kernel does not make: 10.0.0.0/8 through lo */
static int add_route(void)
{
	struct sockaddr_in *sin;
	struct rtentry rt;
	struct ifreq ifr;
	int sk, ret = -1;

	sk = socket(AF_INET, SOCK_DGRAM, 0);
	if (sk < 0)
		return -1;
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(sk, SIOCGIFFLAGS, &ifr))
		goto out;
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(sk, SIOCSIFFLAGS, &ifr))
		goto out;
	memset(&rt, 0, sizeof(rt));
	sin = (struct sockaddr_in *)&rt.rt_dst;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(0x0a000000);
	sin = (struct sockaddr_in *)&rt.rt_genmask;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(0xff000000);
	rt.rt_flags = RTF_UP;
	rt.rt_dev = "lo";
	ret = ioctl(sk, SIOCADDRT, &rt);
out:
	close(sk);
	return ret;
}

int main(int argc, char **argv)
{
	int p[2], status;
	pid_t child;
	char c;

	test_init(argc, argv);
	if (pipe(p)) {
		pr_perror("pipe");
		return 1;
	}
	int outside = -1;
	if (!strcmp(kind, "veth_out")) {
		outside = open("/proc/self/ns/net", O_RDONLY);
		if (outside < 0) {
			pr_perror("open /proc/self/ns/net");
			return 1;
		}
	}
	if ((!strcmp(kind, "net") || !strcmp(kind, "bridge") || outside >= 0) &&
	    (unshare(CLONE_NEWNET) || add_route())) {
		pr_perror("unshare(CLONE_NEWNET) or the route in it");
		return 1;
	}
	if (!strcmp(kind, "bridge") && test_link_add("zb0", "bridge"))
		return 1;
	if (outside >= 0) {
		char cmd[128];

		/* ip inherits the fd: the other end goes where the test began */
		snprintf(cmd, sizeof(cmd), "ip link add zo0 type veth peer name zo%d netns /proc/self/fd/%d",
			 (int)getpid(), outside);
		if (system(cmd)) {
			pr_err("%s failed\n", cmd);
			return 1;
		}
		close(outside);
	}
	if (!strncmp(kind, "nft", 3)) {
		const char *make = !strcmp(kind, "nft") ?
			"nft add table inet zdtm_nft && "
			"nft 'add chain inet zdtm_nft input { type filter hook input priority 0; }' && "
			"nft add rule inet zdtm_nft input tcp dport 4242 accept" :
			"nft add table ip zdtm_nft_empty";

		if (unshare(CLONE_NEWNET)) {
			pr_perror("unshare(CLONE_NEWNET)");
			return 1;
		}
		if (system(make)) {
			pr_err("could not make the nftables table (%s)\n", make);
			return 1;
		}
	}
	if (!strcmp(kind, "ramfs")) {
		int fd;

		if ((mkdir("ns_refused.ramfs", 0755) && errno != EEXIST) ||
		    mount("zdtm_ramfs", "ns_refused.ramfs", "ramfs", 0, NULL)) {
			pr_perror("mount ramfs");
			return 1;
		}
		fd = open("ns_refused.ramfs/kept", O_CREAT | O_WRONLY, 0600);
		if (fd < 0 || close(fd)) {
			pr_perror("create ns_refused.ramfs/kept");
			return 1;
		}
	}
	if (!strcmp(kind, "time") && unshare(CLONE_NEWTIME)) {
		pr_perror("unshare(CLONE_NEWTIME)");
		return 1;
	}
	if (!strcmp(kind, "cgroup_back"))
		host_cgns = open("/proc/self/ns/cgroup", O_RDONLY);
	if (!strcmp(kind, "cgroup_back") && host_cgns < 0) {
		pr_perror("open /proc/self/ns/cgroup");
		return 1;
	}
	child = fork();
	if (child < 0) {
		pr_perror("fork");
		return 1;
	}
	if (child == 0) {
		pid_t init = 0;
		int st;

		if (!strcmp(kind, "userns_thread")) {
			pthread_t th;

			if (unshare(CLONE_NEWUSER) || pthread_create(&th, NULL, sleeper, NULL))
				_exit(2);
		}
		if (!strcmp(kind, "cgroup_back")) {
			if (unshare(CLONE_NEWCGROUP))
				_exit(2);
			init = fork();
			if (init < 0)
				_exit(2);
			if (init == 0) {
				if (setns(host_cgns, CLONE_NEWCGROUP))
					_exit(5);
				/* set up: ready (the test task waits for this too) */
				if (write(p[1], "i", 1) != 1)
					_exit(5);
				for (;;)
					pause();
			}
		}
		if (!strcmp(kind, "nestedpid_thread")) {
			if (unshare(CLONE_NEWPID))
				_exit(2);
			init = fork();
			if (init < 0)
				_exit(2);
			if (init == 0) {
				pthread_t th;

				if (getpid() != 1)
					_exit(5);
				if (pthread_create(&th, NULL, sleeper, NULL))
					_exit(5);
				/* its thread exists: ready (else a dump could find it
				 * single-threaded and not refuse it) */
				if (write(p[1], "i", 1) != 1)
					_exit(5);
				for (;;)
					pause();
			}
		}
		close(p[0]);
		if (write(p[1], "r", 1) != 1)
			_exit(3);
		while (test_go())
			pause();
		if (init > 0) {
			/* still its init's parent, the init still alive */
			if (waitpid(init, &st, WNOHANG) != 0)
				_exit(6);
			kill(init, SIGKILL);
			if (waitpid(init, &st, 0) != init || !WIFSIGNALED(st))
				_exit(7);
		}
		_exit(0);
	}
	close(p[1]);
	if (host_cgns >= 0)
		close(host_cgns); /* the child keeps its copy */
	if (read(p[0], &c, 1) != 1) {
		pr_perror("the child did not start");
		return 1;
	}
	/* a nested init says when it is set up too */
	if ((!strcmp(kind, "nestedpid_thread") || !strcmp(kind, "cgroup_back")) &&
	    read(p[0], &c, 1) != 1) {
		pr_perror("the nested init did not start");
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (!strcmp(kind, "net") && system("grep -q '^lo\t0000000A' /proc/self/net/route")) {
		errno = 0;
		fail("the route 10.0.0.0/8 through lo is gone");
		return 1;
	}
	if (!strcmp(kind, "nft") &&
	    system("nft list chain inet zdtm_nft input | grep -q 'dport 4242 accept'")) {
		errno = 0;
		fail("the nftables rule is gone");
		return 1;
	}
	if (!strcmp(kind, "nft_table") && system("nft list table ip zdtm_nft_empty >/dev/null")) {
		errno = 0;
		fail("the nftables table is gone");
		return 1;
	}
	if (!strcmp(kind, "ramfs")) {
		if (access("ns_refused.ramfs/kept", F_OK)) {
			fail("the ramfs's file is gone");
			return 1;
		}
		if (umount2("ns_refused.ramfs", MNT_DETACH) || rmdir("ns_refused.ramfs")) {
			fail("clean up of the ramfs");
			return 1;
		}
	}
	kill(child, SIGTERM);
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status)) {
		errno = 0;
		fail("the child ended with status %#x", status);
		return 1;
	}
	pass();
	return 0;
}

/*
 * userns_maps: the tree's own user namespace comes back with its maps,
 * its setgroups switch, the credentials and capabilities of the task in
 * it, and files owned through the mapping keep their owners.
 *
 * The test task unshares a user namespace; a short-lived helper child,
 * still outside it, writes "deny" to its setgroups and uid and gid maps
 * with a non-identity extent (root is mapped to itself so that the test
 * can still publish its log in the root-owned work directory):
 *	uid_map: 0 0 1, 1 200000 5000	gid_map: 0 0 1, 1 300000 5000
 * The task then takes uids 1000/0/0 and gids 1001/1002/0, and creates a
 * file it gives to 1000:1001 (host 200999:301000).
 *
 * After SIGTERM it checks: /proc/self/uid_map, gid_map and setgroups as
 * they were; getresuid and getresgid; the capability sets (full in the
 * namespace: effective uid 0); the file's owner inside (stat): the disk
 * holds the owner outside (200999:301000), so with the maps checked equal
 * that is the owner outside too; that it cannot setgroups (deny).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that a user namespace of the tree's own survives with its maps";

char *filename;
TEST_OPTION(filename, string, "file owned through the mapping", 1);

#define UID_MAP "0 0 1\n1 200000 5000\n"
#define GID_MAP "0 0 1\n1 300000 5000\n"

struct state {
	char uid_map[256], gid_map[256], setgroups[32], caps[512];
};

static int get_state(struct state *s)
{
	return test_read_file("/proc/self/uid_map", s->uid_map, sizeof(s->uid_map)) ||
	       test_read_file("/proc/self/gid_map", s->gid_map, sizeof(s->gid_map)) ||
	       test_read_file("/proc/self/setgroups", s->setgroups, sizeof(s->setgroups)) ||
	       test_read_caps(s->caps, sizeof(s->caps));
}

/* The helper outside: maps the test task once it is in its namespace. */
static int map_from_outside(pid_t task, int go)
{
	char c;

	if (read(go, &c, 1) != 1)
		return 1;
	if (test_map_userns(task, UID_MAP, GID_MAP))
		return 2;
	return 0;
}

int main(int argc, char **argv)
{
	struct state before, after;
	uid_t r, e, s;
	gid_t rg, eg, sg;
	struct stat st;
	int p[2], status, fd, ret = 1;
	pid_t helper;

	test_init(argc, argv);

	if (pipe(p)) {
		pr_perror("pipe");
		return 1;
	}
	helper = fork();
	if (helper < 0) {
		pr_perror("fork");
		return 1;
	}
	if (helper == 0) {
		close(p[1]);
		_exit(map_from_outside(getppid(), p[0]));
	}
	close(p[0]);
	if (unshare(CLONE_NEWUSER)) {
		pr_perror("unshare(CLONE_NEWUSER)");
		return 1;
	}
	if (write(p[1], "g", 1) != 1) {
		pr_perror("write");
		return 1;
	}
	close(p[1]);
	if (waitpid(helper, &status, 0) != helper || !WIFEXITED(status) || WEXITSTATUS(status)) {
		pr_err("the helper could not map the namespace (status %#x)\n", status);
		return 1;
	}
	if (setresgid(1001, 1002, 0) || setresuid(1000, 0, 0)) {
		pr_perror("setresgid/setresuid in the namespace");
		return 1;
	}
	fd = open(filename, O_CREAT | O_EXCL | O_WRONLY, 0644);
	if (fd < 0) {
		pr_perror("create %s", filename);
		return 1;
	}
	if (fchown(fd, 1000, 1001)) {
		pr_perror("fchown %s to 1000:1001 (mapped)", filename);
		return 1;
	}
	close(fd);
	if (get_state(&before)) {
		pr_perror("reading the namespace's state");
		return 1;
	}
	if (!test_same_numbers(before.uid_map, UID_MAP) || !test_same_numbers(before.gid_map, GID_MAP)) {
		pr_err("maps not as written: %s / %s\n", before.uid_map, before.gid_map);
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (get_state(&after)) {
		fail("reading the namespace's state after restore: %m");
		goto out;
	}
	if (strcmp(before.uid_map, after.uid_map) || strcmp(before.gid_map, after.gid_map)) {
		fail("maps differ: uid_map %s -> %s, gid_map %s -> %s", before.uid_map, after.uid_map,
		     before.gid_map, after.gid_map);
		goto out;
	}
	if (strcmp(before.setgroups, after.setgroups) || strncmp(after.setgroups, "deny", 4)) {
		fail("setgroups %s -> %s", before.setgroups, after.setgroups);
		goto out;
	}
	if (strcmp(before.caps, after.caps)) {
		fail("capabilities differ:\n%s---\n%s", before.caps, after.caps);
		goto out;
	}
	if (getresuid(&r, &e, &s) || getresgid(&rg, &eg, &sg)) {
		fail("getresuid/getresgid: %m");
		goto out;
	}
	if (r != 1000 || e != 0 || s != 0 || rg != 1001 || eg != 1002 || sg != 0) {
		fail("ids inside are %d/%d/%d %d/%d/%d, want 1000/0/0 1001/1002/0", r, e, s, rg, eg, sg);
		goto out;
	}
	if (setgroups(0, NULL) == 0 || errno != EPERM) {
		fail("setgroups was allowed in a namespace that denies it");
		goto out;
	}
	if (stat(filename, &st)) {
		fail("stat %s: %m", filename);
		goto out;
	}
	/* Inside: the ids it was made with; outside: through the maps. */
	if (st.st_uid != 1000 || st.st_gid != 1001) {
		fail("the file is %d:%d inside, want 1000:1001", st.st_uid, st.st_gid);
		goto out;
	}
	pass();
	ret = 0;
out:
	unlink(filename);
	return ret;
}

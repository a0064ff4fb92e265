/*
 * uid: the credentials of a non-root process survive checkpoint/restore.
 *
 * Normally the runner starts this case with ZDTM_UID/ZDTM_GID (and maybe
 * ZDTM_GROUPS) and test_init() drops to them: real, effective and saved
 * ids are then all the same non-root ids.
 *
 * Run as root without ZDTM_UID, the test drops privileges itself after
 * test_init(), to distinct real/effective/saved ids:
 *	groups 58467 58468 1234, gids 58467/58468/58469,
 *	uids 18943/18944/0 (the saved uid stays 0 so that, once the checks
 *	are done, seteuid(0) lets the exit hook rename the log in a directory
 *	only root may write to).
 *
 * After restore getresuid(), getresgid(), getgroups() and the Uid, Gid,
 * Groups and Cap* lines of /proc/self/status must be what they were.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that the uids, gids, supplementary groups and capabilities are restored";

#define MAX_GROUPS 64

struct creds {
	uid_t r, e, s;
	gid_t rg, eg, sg;
	int ngroups;
	gid_t groups[MAX_GROUPS];
	char status[2048]; /* the Uid/Gid/Groups/Cap* lines of /proc/self/status */
};

static int get_creds(struct creds *c)
{
	char buf[8192], *line, *save = NULL;
	size_t len = 0;
	ssize_t n;
	int fd;

	if (getresuid(&c->r, &c->e, &c->s) || getresgid(&c->rg, &c->eg, &c->sg))
		return -1;
	c->ngroups = getgroups(MAX_GROUPS, c->groups);
	if (c->ngroups < 0)
		return -1;

	fd = open("/proc/self/status", O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	c->status[0] = '\0';
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "Uid:", 4) && strncmp(line, "Gid:", 4) && strncmp(line, "Groups:", 7) &&
		    strncmp(line, "Cap", 3))
			continue;
		len += snprintf(c->status + len, sizeof(c->status) - len, "%s\n", line);
		if (len >= sizeof(c->status))
			return -1;
	}
	return 0;
}

static int drop_privileges(void)
{
	static const gid_t groups[] = { 58467, 58468, 1234 };

	if (setgroups(ARRAY_SIZE(groups), groups)) {
		pr_perror("setgroups");
		return -1;
	}
	if (setresgid(58467, 58468, 58469)) {
		pr_perror("setresgid");
		return -1;
	}
	if (setresuid(18943, 18944, 0)) {
		pr_perror("setresuid");
		return -1;
	}
	/* changing the uids made us non-dumpable */
	if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)) {
		pr_perror("PR_SET_DUMPABLE");
		return -1;
	}
	return 0;
}

static void show(const char *when, const struct creds *c)
{
	char groups[512] = "";
	size_t len = 0;
	int i;

	for (i = 0; i < c->ngroups && len < sizeof(groups); i++)
		len += snprintf(groups + len, sizeof(groups) - len, " %u", c->groups[i]);
	test_msg("%s: uid %u/%u/%u gid %u/%u/%u groups%s\n", when, c->r, c->e, c->s, c->rg, c->eg, c->sg, groups);
}

int main(int argc, char **argv)
{
	struct creds before, after;
	int self_dropped = 0;

	test_init(argc, argv);

	if (getuid() == 0 && geteuid() == 0 && !getenv("ZDTM_UID")) {
		if (drop_privileges())
			return 1;
		self_dropped = 1;
	}
	if (get_creds(&before)) {
		pr_perror("can't read the credentials");
		return 1;
	}
	show("before", &before);
	if (before.r == 0 || before.e == 0) {
		pr_err("the test must run as a non-root user (set ZDTM_UID)\n");
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (get_creds(&after)) {
		fail("can't read the credentials after restore");
		return 1;
	}
	/* only root may write the log's directory: get the saved root back */
	if (self_dropped && seteuid(0))
		pr_perror("seteuid(0)");

	if (before.r != after.r || before.e != after.e || before.s != after.s || before.rg != after.rg ||
	    before.eg != after.eg || before.sg != after.sg || before.ngroups != after.ngroups ||
	    memcmp(before.groups, after.groups, before.ngroups * sizeof(gid_t)) ||
	    strcmp(before.status, after.status)) {
		show("after", &after);
		test_msg("/proc/self/status before:\n%s", before.status);
		test_msg("/proc/self/status after:\n%s", after.status);
		errno = 0;
		fail("the credentials changed");
		return 1;
	}
	pass();
	return 0;
}

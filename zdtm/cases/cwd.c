/*
 * cwd: the current working directory survives checkpoint/restore.
 * The test creates "cwd.dir/sub dir" (a name with a space), chdirs into it
 * and leaves a marker file there. After restore getcwd() must return the
 * same path, "." must be the same inode as that path, the marker must be
 * reachable by a relative name, and the root must still be "/".
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that the current working directory is restored";

#define TOP "cwd.dir"
#define SUB "sub dir"
#define MARKER "marker"

int main(int argc, char **argv)
{
	char before[PATH_MAX], after[PATH_MAX], root_before[PATH_MAX], root_after[PATH_MAX];
	struct stat st_before, st_after, st_path;
	ssize_t n;
	int fd;

	test_init(argc, argv);

	if (mkdir(TOP, 0755) && errno != EEXIST) {
		pr_perror("mkdir %s", TOP);
		return 1;
	}
	if (mkdir(TOP "/" SUB, 0755) && errno != EEXIST) {
		pr_perror("mkdir %s", TOP "/" SUB);
		return 1;
	}
	if (chdir(TOP "/" SUB)) {
		pr_perror("chdir %s", TOP "/" SUB);
		return 1;
	}
	fd = open(MARKER, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	if (fd < 0 || close(fd)) {
		pr_perror("create %s", MARKER);
		return 1;
	}
	if (!getcwd(before, sizeof(before)) || stat(".", &st_before)) {
		pr_perror("getcwd/stat before");
		return 1;
	}
	n = readlink("/proc/self/root", root_before, sizeof(root_before) - 1);
	if (n < 0) {
		pr_perror("readlink /proc/self/root");
		return 1;
	}
	root_before[n] = '\0';
	test_msg("cwd is %s\n", before);

	test_daemon();
	test_waitsig();

	if (!getcwd(after, sizeof(after))) {
		fail("getcwd after restore");
		return 1;
	}
	if (strcmp(before, after)) {
		errno = 0;
		fail("cwd changed: was \"%s\", now \"%s\"", before, after);
		return 1;
	}
	if (stat(".", &st_after) || stat(after, &st_path)) {
		fail("stat . or %s", after);
		return 1;
	}
	if (st_after.st_dev != st_before.st_dev || st_after.st_ino != st_before.st_ino ||
	    st_path.st_dev != st_after.st_dev || st_path.st_ino != st_after.st_ino) {
		errno = 0;
		fail("\".\" is %lu:%lu, was %lu:%lu; %s is %lu:%lu", (unsigned long)st_after.st_dev,
		     (unsigned long)st_after.st_ino, (unsigned long)st_before.st_dev,
		     (unsigned long)st_before.st_ino, after, (unsigned long)st_path.st_dev,
		     (unsigned long)st_path.st_ino);
		return 1;
	}
	if (access(MARKER, F_OK)) {
		fail("%s is not reachable from the cwd", MARKER);
		return 1;
	}
	n = readlink("/proc/self/root", root_after, sizeof(root_after) - 1);
	if (n < 0) {
		fail("readlink /proc/self/root");
		return 1;
	}
	root_after[n] = '\0';
	if (strcmp(root_before, root_after)) {
		errno = 0;
		fail("root changed: was \"%s\", now \"%s\"", root_before, root_after);
		return 1;
	}

	/* clean up what the test created (the runner checks for leftovers) */
	if (unlink(MARKER) || chdir("../..") || rmdir(TOP "/" SUB) || rmdir(TOP)) {
		fail("clean up");
		return 1;
	}

	pass();
	return 0;
}

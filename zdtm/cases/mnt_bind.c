/*
 * mnt_bind: bind mounts the test makes in its own mount namespace come
 * back: a directory of the host's file system bound elsewhere (the cwd
 * inside it), a file bound over another file, a read-only, nosuid,
 * nodev, noexec bind, and a bind of a directory of the test's own tmpfs.
 * Needs the ns flavour (a mount namespace of the tree's own).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that bind mounts of directories and files are restored";

#define SRC "mnt_bind.src"
#define DST "mnt_bind.dst"
#define F1 "mnt_bind.f1"
#define F2 "mnt_bind.f2"
#define RO "mnt_bind.ro"
#define TMP "mnt_bind.tmp"
#define TDST "mnt_bind.tdst"

static int mkfile(const char *path, const char *data)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);

	if (fd < 0 || write(fd, data, strlen(data)) != (ssize_t)strlen(data) || close(fd)) {
		pr_perror("create %s", path);
		return 1;
	}
	return 0;
}

static int same(const char *a, const char *b)
{
	struct stat sa, sb;

	if (stat(a, &sa) || stat(b, &sb)) {
		fail("stat %s or %s", a, b);
		return 0;
	}
	if (sa.st_dev != sb.st_dev || sa.st_ino != sb.st_ino) {
		errno = 0;
		fail("%s (%lu:%lu) is not %s (%lu:%lu)", a, (unsigned long)sa.st_dev, (unsigned long)sa.st_ino, b,
		     (unsigned long)sb.st_dev, (unsigned long)sb.st_ino);
		return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	char top[PATH_MAX], cwd[PATH_MAX];
	const unsigned long want = ST_RDONLY | ST_NOSUID | ST_NODEV | ST_NOEXEC;
	struct statvfs vfs;
	int fd;

	test_init(argc, argv);

	if (!getcwd(top, sizeof(top))) {
		pr_perror("getcwd");
		return 1;
	}
	if ((mkdir(SRC, 0755) && errno != EEXIST) || (mkdir(DST, 0755) && errno != EEXIST) ||
	    (mkdir(RO, 0755) && errno != EEXIST) || (mkdir(TMP, 0755) && errno != EEXIST) ||
	    (mkdir(TDST, 0755) && errno != EEXIST)) {
		pr_perror("mkdir");
		return 1;
	}
	if (mkfile(SRC "/marker", "src") || mkfile(F1, "file one") || mkfile(F2, "file two"))
		return 1;
	if (mount(SRC, DST, NULL, MS_BIND, NULL) || mount(F1, F2, NULL, MS_BIND, NULL) ||
	    mount(SRC, RO, NULL, MS_BIND, NULL) ||
	    mount(NULL, RO, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) {
		pr_perror("bind mounts");
		return 1;
	}
	if (mount("zdtm_bind", TMP, "tmpfs", 0, NULL) || mkdir(TMP "/sub", 0700) ||
	    mkfile(TMP "/sub/inner", "inner") || mount(TMP "/sub", TDST, NULL, MS_BIND, NULL)) {
		pr_perror("tmpfs and its bind");
		return 1;
	}
	if (chdir(DST)) {
		pr_perror("chdir %s", DST);
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (!getcwd(cwd, sizeof(cwd)) || strncmp(cwd, top, strlen(top)) || strcmp(cwd + strlen(top), "/" DST)) {
		fail("cwd is %s, want %s/%s", cwd, top, DST);
		return 1;
	}
	if (chdir(top))
		return 1;
	if (!same(DST, SRC) || !same(DST "/marker", SRC "/marker") || !same(F2, F1) || !same(RO, SRC) ||
	    !same(TDST, TMP "/sub") || !same(TDST "/inner", TMP "/sub/inner"))
		return 1;
	if (statvfs(RO, &vfs) || (vfs.f_flag & want) != want) {
		fail("%s flags %lx, want %lx set", RO, vfs.f_flag, want);
		return 1;
	}
	if (statvfs(DST, &vfs) || (vfs.f_flag & ST_RDONLY)) {
		fail("%s is read-only", DST);
		return 1;
	}
	fd = open(RO "/new", O_CREAT | O_WRONLY, 0644);
	if (fd >= 0 || errno != EROFS) {
		fail("creating a file on the read-only bind: %d", fd);
		return 1;
	}
	/* A file made through the tmpfs bind is in the tmpfs. */
	if (mkfile(TDST "/made", "x") || access(TMP "/sub/made", F_OK)) {
		fail("%s/made is not in %s/sub", TDST, TMP);
		return 1;
	}
	if (umount2(TDST, MNT_DETACH) || umount2(TMP, MNT_DETACH) || umount2(RO, MNT_DETACH) ||
	    umount2(F2, MNT_DETACH) || umount2(DST, MNT_DETACH) || unlink(SRC "/marker") || unlink(F1) ||
	    unlink(F2) || rmdir(SRC) || rmdir(DST) || rmdir(RO) || rmdir(TMP) || rmdir(TDST)) {
		fail("clean up");
		return 1;
	}
	pass();
	return 0;
}

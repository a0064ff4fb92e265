/*
 * mnt_tmpfs: a tmpfs the test mounts in its own mount namespace comes
 * back with its contents: a file with its data, mode and owner, a
 * directory with its mode, a symlink; an fd open on a file of it (data
 * and offset, the same inode as the path), and the cwd inside it; and
 * the tree can remount it with a new size (in a user namespace: the
 * tmpfs is the namespace's, as the one it mounted was).
 * Needs a mount namespace of the tree's own (the ns and uns flavours).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that a tmpfs mounted by the tree is restored with its contents";

#define MNT "mnt_tmpfs.dir"
#define DATA "tmpfs data survives\n"
#define TMPFS_MAGIC 0x01021994

static int check_stat(const char *path, mode_t mode, uid_t uid, gid_t gid)
{
	struct stat st;

	if (lstat(path, &st)) {
		fail("lstat %s", path);
		return 1;
	}
	if (st.st_mode != mode || st.st_uid != uid || st.st_gid != gid) {
		errno = 0;
		fail("%s: mode %o uid %u gid %u, want %o %u %u", path, st.st_mode, st.st_uid, st.st_gid, mode, uid,
		     gid);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	char top[PATH_MAX], cwd[PATH_MAX], top_mnt[PATH_MAX + 16], link[64];
	struct statfs sfs;
	ssize_t n;
	int fd;

	test_init(argc, argv);

	if (mkdir(MNT, 0755) && errno != EEXIST) {
		pr_perror("mkdir %s", MNT);
		return 1;
	}
	if (!getcwd(top, sizeof(top))) {
		pr_perror("getcwd");
		return 1;
	}
	snprintf(top_mnt, sizeof(top_mnt), "%s/%s", top, MNT);
	if (mount("zdtm_tmpfs", MNT, "tmpfs", MS_NOSUID, "size=4m,mode=0751")) {
		pr_perror("mount tmpfs on %s", MNT);
		return 1;
	}
	if (mkdir(MNT "/sub", 0710) || chown(MNT "/sub", 1234, 5678)) {
		pr_perror("mkdir %s/sub", MNT);
		return 1;
	}
	fd = open(MNT "/sub/file", O_CREAT | O_RDWR | O_TRUNC, 0600);
	if (fd < 0 || write(fd, DATA, strlen(DATA)) != (ssize_t)strlen(DATA) || fchmod(fd, 0640) ||
	    fchown(fd, 4321, 8765) || lseek(fd, 5, SEEK_SET) != 5) {
		pr_perror("make %s/sub/file", MNT);
		return 1;
	}
	if (symlink("sub/file", MNT "/link")) {
		pr_perror("symlink");
		return 1;
	}
	if (chdir(MNT "/sub")) {
		pr_perror("chdir");
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (statfs(".", &sfs) || sfs.f_type != TMPFS_MAGIC) {
		fail("the cwd is not on a tmpfs after restore (f_type %lx)", (unsigned long)sfs.f_type);
		return 1;
	}
	if (!getcwd(cwd, sizeof(cwd)) || strlen(cwd) <= strlen(top) || strncmp(cwd, top, strlen(top)) ||
	    strcmp(cwd + strlen(top), "/" MNT "/sub")) {
		fail("cwd is %s, want %s/%s/sub", cwd, top, MNT);
		return 1;
	}
	if (check_stat(".", S_IFDIR | 0710, 1234, 5678) || check_stat("file", S_IFREG | 0640, 4321, 8765) ||
	    check_stat("..", S_IFDIR | 0751, 0, 0))
		return 1;
	n = readlink("../link", link, sizeof(link) - 1);
	if (n < 0 || (link[n] = 0, strcmp(link, "sub/file"))) {
		fail("the symlink reads %s", n < 0 ? "(error)" : link);
		return 1;
	}
	if (test_check_open_file(fd, "file", 5, DATA))
		return 1;
	if (mount(NULL, top_mnt, NULL, MS_REMOUNT | MS_NOSUID, "size=8m") || statfs(top_mnt, &sfs) ||
	    (unsigned long long)sfs.f_blocks * sfs.f_bsize != 8ULL << 20) {
		fail("remount of the tmpfs with size=8m (errno %d, %llu bytes)", errno,
		     (unsigned long long)sfs.f_blocks * sfs.f_bsize);
		return 1;
	}
	/* The mount is in the restored namespace only; nothing to leave. */
	close(fd);
	if (chdir(top) || umount2(MNT, MNT_DETACH) || rmdir(MNT)) {
		fail("clean up");
		return 1;
	}
	pass();
	return 0;
}

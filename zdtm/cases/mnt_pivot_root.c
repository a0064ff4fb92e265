/*
 * mnt_pivot_root: the test pivot_roots its mount namespace into a tmpfs
 * with files (a container's root) and unmounts the old root; its work
 * directory and /usr (its program and libraries) are bound in from the
 * host at the same paths, declared external at dump and restore. After
 * restore `/` is still that tmpfs with its files, the open fd (data,
 * offset, the same inode as the path) and the cwd inside it are there,
 * the namespace holds the container's five mounts only and nothing of
 * the old root is visible. Its fifth mount is a devpts instance on
 * /dev/pts with a pty opened through its ptmx, input queued on it: the
 * pty is still number 0 there, its slave fd the node /dev/pts/0, the
 * input still queued; its stdin is that pty too. The tree may remount its
 * root (in uns: the tmpfs is its user namespace's).
 * Needs a mount namespace of the tree's own (the ns and uns flavours).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that a tree that pivot_root'ed into a tmpfs keeps its root, files and mounts";

#define ROOT "mnt_pivot_root.root"
#define DATA "container data survives\n"
#define TMPFS_MAGIC 0x01021994
#define PROC_MAGIC 0x9fa0
#define MOUNTS 5
#define PTY_DATA "pty input\n"

/* mkdir -p of `path` (absolute) below `base`. */
static int mkdirs(const char *base, const char *path)
{
	char buf[PATH_MAX], *p;

	if (snprintf(buf, sizeof(buf), "%s%s", base, path) >= (int)sizeof(buf))
		return -1;
	for (p = buf + strlen(base) + 1; (p = strchr(p, '/')); p++) {
		*p = 0;
		if (mkdir(buf, 0755) && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, 0755) && errno != EEXIST ? -1 : 0;
}

static int bind_in(const char *from)
{
	char to[PATH_MAX];

	snprintf(to, sizeof(to), "%s%s", ROOT, from);
	if (mkdirs(ROOT, from) || mount(from, to, NULL, MS_BIND, NULL)) {
		pr_perror("bind %s into the new root", from);
		return -1;
	}
	return 0;
}

static int count_mounts(void)
{
	char line[4096];
	int n = 0;
	FILE *f = fopen("/proc/self/mountinfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n++;
	fclose(f);
	return n;
}

int main(int argc, char **argv)
{
	char top[PATH_MAX], cwd[PATH_MAX];
	struct statfs sfs;
	struct stat st, node;
	char buf[64];
	int fd, m, s, idx = -1, n;

	test_init(argc, argv);

	if (!getcwd(top, sizeof(top))) {
		pr_perror("getcwd");
		return 1;
	}
	if (mkdir(ROOT, 0755) && errno != EEXIST) {
		pr_perror("mkdir %s", ROOT);
		return 1;
	}
	if (mount("zdtm_root", ROOT, "tmpfs", 0, "size=4m,mode=0755")) {
		pr_perror("mount tmpfs on %s", ROOT);
		return 1;
	}
	if (mkdir(ROOT "/proc", 0555) || mkdir(ROOT "/data", 0750) || mkdir(ROOT "/dev", 0755) ||
	    mkdir(ROOT "/dev/pts", 0755)) {
		pr_perror("mkdir in %s", ROOT);
		return 1;
	}
	fd = open(ROOT "/data/file", O_CREAT | O_WRONLY | O_TRUNC, 0640);
	if (fd < 0 || write(fd, DATA, strlen(DATA)) != (ssize_t)strlen(DATA) || close(fd)) {
		pr_perror("write %s/data/file", ROOT);
		return 1;
	}
	if (bind_in(top) || bind_in("/usr"))
		return 1;
	/*
	 * Its /proc before the pivot_root, as container runtimes do: a user
	 * namespace may mount a proc only where one is fully visible already
	 * (the kernel's mount_too_revealing), which after the old root is
	 * gone none is.
	 */
	if (mount("proc", ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) {
		pr_perror("mount /proc in the new root");
		return 1;
	}
	if (chdir(ROOT) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) || chdir("/")) {
		pr_perror("pivot_root into %s", ROOT);
		return 1;
	}
	if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")) {
		pr_perror("mount devpts in the new root");
		return 1;
	}
	m = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY);
	if (m < 0 || unlockpt(m) || ioctl(m, TIOCGPTN, &idx) || idx != 0) {
		pr_perror("a pty of the new devpts (number %d)", idx);
		return 1;
	}
	s = open("/dev/pts/0", O_RDWR | O_NOCTTY);
	if (s < 0 || write(m, PTY_DATA, strlen(PTY_DATA)) != (ssize_t)strlen(PTY_DATA)) {
		pr_perror("open /dev/pts/0");
		return 1;
	}
	/*
	 * stdin was the host's /dev/null, whose mount is gone with the old
	 * root: the container's terminal instead (a device node of its own
	 * cannot be made in a user namespace).
	 */
	if (dup2(s, 0) != 0) {
		pr_perror("stdin on /dev/pts/0");
		return 1;
	}
	fd = open("/data/file", O_RDWR);
	if (fd < 0 || lseek(fd, 3, SEEK_SET) != 3 || chdir("/data")) {
		pr_perror("open /data/file");
		return 1;
	}
	if (count_mounts() != MOUNTS) {
		pr_err("%d mounts before the dump, want %d\n", count_mounts(), MOUNTS);
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (statfs("/", &sfs) || sfs.f_type != TMPFS_MAGIC) {
		fail("/ is not the tmpfs after restore (f_type %lx)", (unsigned long)sfs.f_type);
		return 1;
	}
	/* The root's tmpfs is the tree's (in uns: its user namespace's). */
	if (mount(NULL, "/", NULL, MS_REMOUNT, "size=8m") || statfs("/", &sfs) ||
	    (unsigned long long)sfs.f_blocks * sfs.f_bsize != 8ULL << 20) {
		fail("remount of the root tmpfs with size=8m (errno %d)", errno);
		return 1;
	}
	if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, "/data")) {
		fail("cwd is %s, want /data", cwd);
		return 1;
	}
	if (test_check_open_file(fd, "file", 3, DATA))
		return 1;
	if (stat("file", &st) || (st.st_mode & 07777) != 0640) {
		fail("/data/file lost its mode");
		return 1;
	}
	if (!access("/etc", F_OK) || !access("/" ROOT, F_OK) || errno != ENOENT) {
		fail("something of the old root is visible");
		return 1;
	}
	if (statfs("/proc", &sfs) || sfs.f_type != PROC_MAGIC || access("/proc/1/stat", F_OK)) {
		fail("/proc is not the tree's proc");
		return 1;
	}
	if (count_mounts() != MOUNTS) {
		fail("%d mounts after restore, want %d", count_mounts(), MOUNTS);
		return 1;
	}
	idx = -1;
	if (ioctl(m, TIOCGPTN, &idx) || idx != 0 || fstat(s, &st) || stat("/dev/pts/0", &node) ||
	    st.st_dev != node.st_dev || st.st_ino != node.st_ino) {
		fail("the pty is number %d, or its slave is not /dev/pts/0", idx);
		return 1;
	}
	n = test_read_ready(s, buf, sizeof(buf));
	if (n != (int)strlen(PTY_DATA) || memcmp(buf, PTY_DATA, n)) {
		fail("the pty's slave read %d bytes: %.*s", n, n > 0 ? n : 0, buf);
		return 1;
	}
	close(fd);
	pass();
	return 0;
}

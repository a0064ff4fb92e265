/*
 * devpts_newinstance: a devpts instance of the tree's own, mounted as
 * containers do (newinstance, ptmxmode=0666, mode=620, gid=5, max=64 on
 * /dev/pts, /dev/ptmx a bind of /dev/pts/ptmx), with two ptys opened
 * through it (indices 0 and 1 there):
 *
 *   pty 0  "queued input\n" written on its master, not read by its slave
 *   pty 1  its slave's termios changed (no echo, ^B as VINTR, 2400 baud);
 *          its node chmod'ed to 0604
 *
 * After SIGTERM: the same indices (TIOCGPTN), each slave fd is the node
 * /dev/pts/N of the instance mounted on /dev/pts (same device and inode),
 * /dev/ptmx is still that instance's ptmx, each master's fd still names
 * the path it was opened by (/dev/ptmx, the bind), the termios, the queued
 * data, the nodes' modes and owners (ptmx's too: in a user namespace the
 * instance's root is the namespace's), and the mount's options (from
 * /proc/self/mountinfo) are the same; and the instance can be remounted
 * with its options, which in a user namespace needs the instance to be the
 * namespace's. Needs a mount namespace of its own (the ns and uns
 * flavours).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that a devpts instance of the tree's own comes back with its ptys";

#define DATA "queued input\n"

static int failed;

/* The super options of the last mount on /dev/pts. */
static int devpts_options(char *out, size_t len)
{
	char line[1024], point[256], fstype[64], source[256], opts[512];
	FILE *f = fopen("/proc/self/mountinfo", "r");
	int found = 0;

	if (!f) {
		pr_perror("open mountinfo");
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *dash = strstr(line, " - ");

		if (!dash || sscanf(line, "%*d %*d %*s %*s %255s", point) != 1 ||
		    sscanf(dash, " - %63s %255s %511s", fstype, source, opts) != 3)
			continue;
		if (!strcmp(point, "/dev/pts") && !strcmp(fstype, "devpts")) {
			snprintf(out, len, "%s", opts);
			found = 1;
		}
	}
	fclose(f);
	if (!found) {
		errno = 0;
		pr_perror("no devpts on /dev/pts");
		return -1;
	}
	return 0;
}

/* The path fd's link in /proc names. */
static int fd_link(int fd, char *out, size_t len)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, out, len - 1);
	if (n < 0) {
		pr_perror("readlink %s", path);
		return -1;
	}
	out[n] = 0;
	return 0;
}

static int open_pty(int want, int *m, int *s)
{
	char path[64];
	int idx = -1;

	*m = open("/dev/ptmx", O_RDWR | O_NOCTTY);
	if (*m < 0 || unlockpt(*m) || ioctl(*m, TIOCGPTN, &idx)) {
		pr_perror("open /dev/ptmx");
		return -1;
	}
	if (idx != want) {
		errno = 0;
		pr_perror("pty index %d in the new instance, want %d", idx, want);
		return -1;
	}
	snprintf(path, sizeof(path), "/dev/pts/%d", idx);
	*s = open(path, O_RDWR | O_NOCTTY);
	if (*s < 0) {
		pr_perror("open %s", path);
		return -1;
	}
	return 0;
}

/* The slave fd is the node /dev/pts/N of the instance on /dev/pts. */
static void check_node(int s, int n, const struct stat *before)
{
	struct stat fs, ps, pts;
	char path[64];

	snprintf(path, sizeof(path), "/dev/pts/%d", n);
	if (fstat(s, &fs) || stat(path, &ps) || stat("/dev/pts", &pts)) {
		failed = 1;
		pr_perror("stat %s", path);
		return;
	}
	test_check(fs.st_rdev == ps.st_rdev && fs.st_dev == ps.st_dev && fs.st_ino == ps.st_ino,
		   "slave %d is %x:%x (dev %lx ino %lu), %s is %x:%x (dev %lx ino %lu)", n, major(fs.st_rdev),
		   minor(fs.st_rdev), (long)fs.st_dev, (unsigned long)fs.st_ino, path, major(ps.st_rdev),
		   minor(ps.st_rdev), (long)ps.st_dev, (unsigned long)ps.st_ino);
	test_check(fs.st_dev == pts.st_dev, "slave %d is not on the devpts mounted on /dev/pts", n);
	test_check(ps.st_mode == before->st_mode && ps.st_uid == before->st_uid && ps.st_gid == before->st_gid,
		   "%s: mode %o owner %d:%d, was %o %d:%d", path, ps.st_mode, (int)ps.st_uid, (int)ps.st_gid,
		   before->st_mode, (int)before->st_uid, (int)before->st_gid);
}

int main(int argc, char **argv)
{
	char opts[512], opts2[512], buf[256];
	struct termios t, t2;
	struct stat st0, st1, ptmx, pts, pn0, pn1;
	char link0[64], link1[64];
	int m0, s0, m1, s1, idx, n;

	test_init(argc, argv);

	if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		  "newinstance,ptmxmode=0666,mode=620,gid=5,max=64")) {
		pr_perror("mount a new devpts instance on /dev/pts");
		return 1;
	}
	if (mount("/dev/pts/ptmx", "/dev/ptmx", NULL, MS_BIND, NULL)) {
		pr_perror("bind /dev/pts/ptmx on /dev/ptmx");
		return 1;
	}
	if (open_pty(0, &m0, &s0) || open_pty(1, &m1, &s1))
		return 1;
	if (write(m0, DATA, strlen(DATA)) != (ssize_t)strlen(DATA)) {
		pr_perror("write to master 0");
		return 1;
	}
	if (tcgetattr(s1, &t)) {
		pr_perror("tcgetattr");
		return 1;
	}
	t.c_lflag &= ~(ECHO | ECHOE | ECHOK | ECHONL);
	t.c_cc[VINTR] = 2;
	cfsetispeed(&t, B2400);
	cfsetospeed(&t, B2400);
	if (tcsetattr(s1, TCSANOW, &t) || tcgetattr(s1, &t)) {
		pr_perror("tcsetattr");
		return 1;
	}
	if (chmod("/dev/pts/1", 0604)) {
		pr_perror("chmod /dev/pts/1");
		return 1;
	}
	if (stat("/dev/pts/0", &st0) || stat("/dev/pts/1", &st1) || stat("/dev/pts/ptmx", &pn0) ||
	    devpts_options(opts, sizeof(opts)) || fd_link(m0, link0, sizeof(link0)))
		return 1;
	if (strcmp(link0, "/dev/ptmx")) {
		errno = 0;
		pr_perror("master 0 opened by /dev/ptmx names %s", link0);
		return 1;
	}
	if ((st0.st_mode & 07777) != 0620 || st0.st_gid != 5) {
		errno = 0;
		pr_perror("/dev/pts/0: mode %o gid %d, the mount's mode=620,gid=5 not applied", st0.st_mode,
			  (int)st0.st_gid);
		return 1;
	}

	test_daemon();
	test_waitsig();

	test_check(!ioctl(m0, TIOCGPTN, &idx) && idx == 0, "master 0 has index %d", idx);
	idx = -1;
	test_check(!ioctl(m1, TIOCGPTN, &idx) && idx == 1, "master 1 has index %d", idx);
	check_node(s0, 0, &st0);
	check_node(s1, 1, &st1);
	test_check(!stat("/dev/ptmx", &ptmx) && !stat("/dev/pts", &pts) && ptmx.st_dev == pts.st_dev,
		   "/dev/ptmx is not the ptmx of the instance on /dev/pts");
	test_check(!devpts_options(opts2, sizeof(opts2)) && !strcmp(opts, opts2), "devpts options %s, were %s",
		   opts2, opts);
	test_check(!fd_link(m0, link1, sizeof(link1)) && !strcmp(link0, link1), "master 0 names %s, was %s", link1,
		   link0);
	test_check(!stat("/dev/pts/ptmx", &pn1) && pn1.st_uid == pn0.st_uid && pn1.st_gid == pn0.st_gid &&
			   pn1.st_mode == pn0.st_mode,
		   "/dev/pts/ptmx: mode %o owner %d:%d, was %o %d:%d", pn1.st_mode, (int)pn1.st_uid,
		   (int)pn1.st_gid, pn0.st_mode, (int)pn0.st_uid, (int)pn0.st_gid);
	test_check(!mount(NULL, "/dev/pts", NULL, MS_REMOUNT | MS_NOSUID | MS_NOEXEC,
			  "ptmxmode=0666,mode=620,gid=5,max=64"),
		   "remount of the devpts instance on /dev/pts: %s", strerror(errno));

	test_check(!tcgetattr(s1, &t2), "tcgetattr");
	test_check(t2.c_lflag == t.c_lflag && t2.c_iflag == t.c_iflag && t2.c_oflag == t.c_oflag &&
			   t2.c_cflag == t.c_cflag && !memcmp(t2.c_cc, t.c_cc, sizeof(t.c_cc)),
		   "termios of pty 1: lflag %#x iflag %#x oflag %#x cflag %#x, were %#x %#x %#x %#x", t2.c_lflag,
		   t2.c_iflag, t2.c_oflag, t2.c_cflag, t.c_lflag, t.c_iflag, t.c_oflag, t.c_cflag);
	test_check(cfgetospeed(&t2) == B2400 && cfgetispeed(&t2) == B2400, "speed of pty 1 %d/%d",
		   (int)cfgetispeed(&t2), (int)cfgetospeed(&t2));

	n = test_read_ready(s0, buf, sizeof(buf));
	test_check(n == (int)strlen(DATA) && !memcmp(buf, DATA, n), "slave 0 read %d bytes: %.*s", n,
		   n > 0 ? n : 0, buf);
	/* Both ptys still carry data. */
	test_check(write(m1, "x\n", 2) == 2, "write to master 1");
	n = test_read_ready(s1, buf, sizeof(buf));
	test_check(n == 2 && !memcmp(buf, "x\n", 2), "slave 1 read %d bytes", n);
	test_check(write(s0, "y", 1) == 1, "write to slave 0");
	n = test_read_ready(m0, buf, sizeof(buf));
	test_check(n >= 1 && buf[n - 1] == 'y', "master 0 read %d bytes", n);

	if (failed) {
		fail("the devpts instance or its ptys changed");
		return 1;
	}
	pass();
	return 0;
}

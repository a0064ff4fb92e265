/*
 * inotify: instances survive checkpoint/restore with every watch under its
 * own watch number, with its mask and flags, and the watches still work.
 *
 * In a directory inotify.dir with files f1, f2 and a symlink ln -> f1:
 *   A (IN_NONBLOCK|IN_CLOEXEC):
 *     wd 1  the directory   IN_CREATE|IN_DELETE|IN_MOVED_TO
 *     wd 2  f1              IN_MODIFY|IN_ONESHOT
 *     (wd 3 added and removed again: a gap)
 *     wd 4  f2              IN_ATTRIB|IN_EXCL_UNLINK
 *     wd 5  ln itself       IN_ATTRIB (IN_DONT_FOLLOW)
 *   B (blocking, no cloexec), shared with a child process:
 *     wd 1  f2              IN_OPEN|IN_CLOSE_WRITE
 * Both queues are empty when the state is ready.
 *
 * After restore:
 *  - the "inotify" lines of /proc/self/fdinfo of both are as before (watch
 *    numbers, inodes, devices, masks, handles), F_GETFL/F_GETFD too, and
 *    nothing is queued;
 *  - creating inotify.dir/new gives IN_CREATE "new" on wd 1; writing f1
 *    gives IN_MODIFY on wd 2 and then IN_IGNORED (one shot), and a second
 *    write nothing; chmod of f2 gives IN_ATTRIB on wd 4; utimensat of ln
 *    (not followed) IN_ATTRIB on wd 5; a new watch gets wd 6;
 *  - the child opens f2 for writing and closes it: the parent reads
 *    IN_OPEN and IN_CLOSE_WRITE on B's wd 1.
 *
 *   --queued    leave an event queued: the dump must refuse it.
 * (Watches on unlinked files: inotify_unlinked.c.)
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that inotify watches are restored";

static int queued;
TEST_OPTION(queued, bool, "leave an event queued (the dump refuses)", 0);

#define DIR_ "inotify.dir"

static int failed;

static int fdinfo_watches(int fd, char *out, size_t size)
{
	char path[64], line[512];
	size_t len = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		return -1;
	out[0] = '\0';
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "inotify ", 8)) {
			if (len + strlen(line) + 1 > size)
				break;
			strcpy(out + len, line);
			len += strlen(line);
		}
	fclose(f);
	return 0;
}

/* Events read but not yet looked at, per descriptor (a read takes all). */
static struct pending {
	int fd, len, pos;
	char buf[4096] __attribute__((aligned(8)));
} pend[2];

/* The next event of fd; 0 when there is none. */
static int read_event(int fd, struct inotify_event *ev, char *name)
{
	struct pending *p = &pend[fd == pend[0].fd ? 0 : 1];
	struct inotify_event *e;
	int avail;

	if (p->pos >= p->len) {
		if (ioctl(fd, FIONREAD, &avail) || avail == 0)
			return 0;
		p->len = read(fd, p->buf, sizeof(p->buf));
		p->pos = 0;
		if (p->len < (int)sizeof(struct inotify_event))
			return -1;
	}
	e = (struct inotify_event *)(p->buf + p->pos);
	p->pos += sizeof(*e) + e->len;
	*ev = *e;
	name[0] = '\0';
	if (e->len)
		snprintf(name, NAME_MAX + 1, "%s", e->name);
	return 1;
}

static void expect(int fd, const char *which, int wd, uint32_t mask, const char *name)
{
	struct inotify_event ev;
	char got[NAME_MAX + 1];
	int r = read_event(fd, &ev, got);

	test_check(r == 1, "%s: no event (wanted wd %d mask %#x)", which, wd, mask);
	if (r != 1)
		return;
	test_check(ev.wd == wd && ev.mask == mask && !strcmp(got, name),
		   "%s: event wd %d mask %#x name '%s', wanted wd %d mask %#x name '%s'", which, ev.wd, ev.mask,
		   got, wd, mask, name);
}

static void expect_none(int fd, const char *which)
{
	struct pending *p = &pend[fd == pend[0].fd ? 0 : 1];
	int avail = -1;

	test_check(ioctl(fd, FIONREAD, &avail) == 0 && avail == 0 && p->pos >= p->len,
		   "%s: %d bytes queued, wanted none", which, avail);
}

int main(int argc, char **argv)
{
	static char before_a[4096], before_b[4096], after[4096];
	int a, b, w, fl_a, fl_b, fd_a, fd_b, tmp;
	struct timespec ts[2] = { { 0, UTIME_NOW }, { 0, UTIME_NOW } };
	int ready[2], go[2], status;
	pid_t child;
	char c;

	test_init(argc, argv);

	if (mkdir(DIR_, 0755) && errno != EEXIST) {
		pr_perror("mkdir");
		return 1;
	}
	tmp = open(DIR_ "/f1", O_CREAT | O_WRONLY | O_TRUNC, 0644);
	if (tmp < 0 || close(tmp) || (tmp = open(DIR_ "/f2", O_CREAT | O_WRONLY | O_TRUNC, 0644)) < 0 ||
	    close(tmp) || (tmp = open(DIR_ "/gap", O_CREAT | O_WRONLY | O_TRUNC, 0644)) < 0 || close(tmp)) {
		pr_perror("creating files");
		return 1;
	}
	unlink(DIR_ "/ln");
	unlink(DIR_ "/new");
	if (symlink("f1", DIR_ "/ln")) {
		pr_perror("symlink");
		return 1;
	}

	a = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	b = inotify_init1(0);
	if (a < 0 || b < 0) {
		pr_perror("inotify_init1");
		return 1;
	}
	pend[0].fd = a;
	pend[1].fd = b;
	if (inotify_add_watch(a, DIR_, IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_ONLYDIR) != 1 ||
	    inotify_add_watch(a, DIR_ "/f1", IN_MODIFY | IN_ONESHOT) != 2 ||
	    (w = inotify_add_watch(a, DIR_ "/gap", IN_OPEN)) != 3 || inotify_rm_watch(a, w) ||
	    inotify_add_watch(a, DIR_ "/f2", IN_ATTRIB | IN_EXCL_UNLINK) != 4 ||
	    inotify_add_watch(a, DIR_ "/ln", IN_ATTRIB | IN_DONT_FOLLOW) != 5 ||
	    inotify_add_watch(b, DIR_ "/f2", IN_OPEN | IN_CLOSE_WRITE) != 1) {
		pr_perror("inotify_add_watch");
		return 1;
	}
	expect(a, "A", 3, IN_IGNORED, "");
	expect_none(a, "A");
	if (queued && (tmp = open(DIR_ "/f1", O_WRONLY)) >= 0) {
		if (write(tmp, "q", 1) != 1)
			pr_perror("write");
		close(tmp);
	}
	fl_a = fcntl(a, F_GETFL);
	fl_b = fcntl(b, F_GETFL);
	fd_a = fcntl(a, F_GETFD);
	fd_b = fcntl(b, F_GETFD);
	if (fdinfo_watches(a, before_a, sizeof(before_a)) || fdinfo_watches(b, before_b, sizeof(before_b))) {
		pr_perror("fdinfo");
		return 1;
	}

	if (pipe(ready) || pipe(go)) {
		pr_perror("pipe");
		return 1;
	}
	child = fork();
	if (child < 0) {
		pr_perror("fork");
		return 1;
	}
	if (child == 0) {
		/* holds B too; opens f2 for writing when told to */
		close(a);
		if (read(go[0], &c, 1) != 1)
			_exit(1);
		tmp = open(DIR_ "/f2", O_WRONLY);
		if (tmp < 0)
			_exit(2);
		close(tmp);
		if (write(ready[1], "x", 1) != 1)
			_exit(3);
		_exit(0);
	}

	test_daemon();
	test_waitsig();

	test_check(fcntl(a, F_GETFL) == fl_a && fcntl(b, F_GETFL) == fl_b, "F_GETFL changed");
	test_check(fcntl(a, F_GETFD) == fd_a && fcntl(b, F_GETFD) == fd_b, "F_GETFD changed");
	if (fdinfo_watches(a, after, sizeof(after)) == 0)
		test_check(!strcmp(after, before_a), "A's watches were\n%s  and are\n%s", before_a, after);
	else
		test_check(0, "A is gone");
	if (fdinfo_watches(b, after, sizeof(after)) == 0)
		test_check(!strcmp(after, before_b), "B's watches were\n%s  and are\n%s", before_b, after);
	else
		test_check(0, "B is gone");
	if (queued) {
		/* the event the dump refused to lose, then the end of the one shot */
		expect(a, "A", 2, IN_MODIFY, "");
		expect(a, "A", 2, IN_IGNORED, "");
	}
	expect_none(a, "A");
	expect_none(b, "B");

	tmp = open(DIR_ "/new", O_CREAT | O_WRONLY, 0644);
	if (tmp >= 0)
		close(tmp);
	expect(a, "A", 1, IN_CREATE, "new");
	tmp = open(DIR_ "/f1", O_WRONLY);
	if (tmp < 0 || write(tmp, "1", 1) != 1 || write(tmp, "2", 1) != 1)
		pr_perror("write f1");
	if (tmp >= 0)
		close(tmp);
	if (!queued) {
		expect(a, "A", 2, IN_MODIFY, "");
		expect(a, "A", 2, IN_IGNORED, "");
	}
	if (chmod(DIR_ "/f2", 0600))
		pr_perror("chmod");
	expect(a, "A", 4, IN_ATTRIB, "");
	if (utimensat(AT_FDCWD, DIR_ "/ln", ts, AT_SYMLINK_NOFOLLOW))
		pr_perror("utimensat");
	expect(a, "A", 5, IN_ATTRIB, "");
	expect_none(a, "A");
	w = inotify_add_watch(a, DIR_ "/gap", IN_OPEN);
	test_check(w == 6, "a new watch got wd %d, wanted 6", w);

	/* B is the child's too: its opening shows in the parent's B */
	if (write(go[1], "g", 1) != 1 || read(ready[0], &c, 1) != 1)
		test_check(0, "the child did not open f2");
	expect(b, "B", 1, IN_OPEN, "");
	expect(b, "B", 1, IN_CLOSE_WRITE, "");
	expect_none(b, "B");
	test_check(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		   "child failed");

	if (failed) {
		errno = 0;
		fail("inotify state was not restored");
		return 1;
	}
	pass();
	return 0;
}

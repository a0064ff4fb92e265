/*
 * inotify_unlinked: a watch on a file since unlinked (still open) survives
 * checkpoint/restore, on the same inode as the open fd, under its own watch
 * number and mask, and still works.
 *
 * In a directory inotify_unlinked.dir, file f holds "hello" and stays
 * open (fd `hold`, read-write). Instance A (IN_NONBLOCK):
 *     wd 1  the directory  IN_CREATE|IN_DELETE|IN_MODIFY (no IN_EXCL_UNLINK:
 *                          it sees the unlinked file's events, by name)
 *     wd 2  f              IN_MODIFY|IN_ATTRIB|IN_DELETE_SELF
 * then f is unlinked (IN_ATTRIB on wd 2, IN_DELETE "f" on wd 1, read).
 *
 * After restore:
 *  - A's watches have the same numbers and masks, wd 2 on the inode of
 *    `hold`, which has no link and still holds "hello"; nothing is queued;
 *  - a write through `hold` gives IN_MODIFY "f" on wd 1 and IN_MODIFY on
 *    wd 2; closing `hold` gives IN_DELETE_SELF and IN_IGNORED on wd 2;
 *  - a new watch gets wd 3.
 *
 *   --mapped       f is held by a shared mapping instead of an fd: after
 *                  restore the mapping holds "hello", and unmapping it
 *                  gives IN_DELETE_SELF and IN_IGNORED on wd 2.
 *   --shared       a child holds A too (not f): the one instance is made
 *                  once and is both processes' again; the child checks
 *                  A's watches after restore and adds one (wd 3), so the
 *                  parent's new one is wd 4.
 *   --refuse=open  wd 2 also watches IN_OPEN, which copying the file into
 *                  the images would generate: the dump must refuse it.
 *   --refuse=dir   wd 1 also watches IN_OPEN (without IN_EXCL_UNLINK),
 *                  which it would see of that copy: refused too.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that inotify watches on unlinked files are restored";

static char *refuse = "";
TEST_OPTION(refuse, string, "open or dir: a mask the dump refuses", 0);
static int shared;
TEST_OPTION(shared, bool, "a child holds the inotify fd too", 0);
static int mapped;
TEST_OPTION(mapped, bool, "hold the unlinked file by a mapping, not an fd", 0);

#define DIR_ "inotify_unlinked.dir"

static int failed;

/* "wd:N ... mask:M" of every watch of fd, one "N:M" a line. */
static int watches(int fd, char *out, size_t size)
{
	char path[64], line[512];
	unsigned int wd, mask;
	size_t len = 0;
	char *m;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		return -1;
	out[0] = '\0';
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "inotify wd:", 11))
			continue;
		m = strstr(line, " mask:");
		if (!m || sscanf(line + 11, "%x", &wd) != 1 || sscanf(m + 6, "%x", &mask) != 1)
			break;
		len += snprintf(out + len, size - len, "%x:%x\n", wd, mask);
		if (len >= size)
			break;
	}
	fclose(f);
	return 0;
}

/* The inode of watch wd of fd, as fdinfo shows it. */
static unsigned long watch_ino(int fd, int wd)
{
	char path[64], line[512], want[32];
	unsigned long ino = 0;
	char *i;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	snprintf(want, sizeof(want), "inotify wd:%x ", wd);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, want, strlen(want)) && (i = strstr(line, " ino:")))
			sscanf(i + 5, "%lx", &ino);
	fclose(f);
	return ino;
}

static struct {
	int len, pos;
	char buf[4096] __attribute__((aligned(8)));
} pend;

static int read_event(int fd, struct inotify_event *ev, char *name)
{
	struct inotify_event *e;
	int avail;

	if (pend.pos >= pend.len) {
		if (ioctl(fd, FIONREAD, &avail) || avail == 0)
			return 0;
		pend.len = read(fd, pend.buf, sizeof(pend.buf));
		pend.pos = 0;
		if (pend.len < (int)sizeof(struct inotify_event))
			return -1;
	}
	e = (struct inotify_event *)(pend.buf + pend.pos);
	pend.pos += sizeof(*e) + e->len;
	*ev = *e;
	name[0] = '\0';
	if (e->len)
		snprintf(name, NAME_MAX + 1, "%s", e->name);
	return 1;
}

static void expect(int fd, int wd, uint32_t mask, const char *name)
{
	struct inotify_event ev;
	char got[NAME_MAX + 1];
	int r = read_event(fd, &ev, got);

	test_check(r == 1, "no event (wanted wd %d mask %#x)", wd, mask);
	if (r != 1)
		return;
	test_check(ev.wd == wd && ev.mask == mask && !strcmp(got, name),
		   "event wd %d mask %#x name '%s', wanted wd %d mask %#x name '%s'", ev.wd, ev.mask, got, wd,
		   mask, name);
}

static void expect_none(int fd)
{
	int avail = -1;

	test_check(ioctl(fd, FIONREAD, &avail) == 0 && avail == 0 && pend.pos >= pend.len,
		   "%d bytes of events queued, wanted none", avail);
}

int main(int argc, char **argv)
{
	static char before[1024], after[1024];
	uint32_t dir_mask = IN_CREATE | IN_DELETE | IN_MODIFY;
	uint32_t file_mask = IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF;
	struct inotify_event ev;
	char name[NAME_MAX + 1], buf[8], *map = NULL;
	int a, hold, w, seen_attrib = 0, seen_delete = 0, go[2], status;
	pid_t child = -1;
	struct stat st;

	test_init(argc, argv);

	if (!strcmp(refuse, "open"))
		file_mask |= IN_OPEN;
	else if (!strcmp(refuse, "dir"))
		dir_mask |= IN_OPEN;
	else if (*refuse) {
		pr_err("--refuse=%s: open or dir\n", refuse);
		return 1;
	}

	if (mkdir(DIR_, 0755) && errno != EEXIST) {
		pr_perror("mkdir");
		return 1;
	}
	hold = open(DIR_ "/f", O_CREAT | O_RDWR | O_TRUNC, 0644);
	if (hold < 0 || write(hold, "hello", 5) != 5) {
		pr_perror("creating f");
		return 1;
	}
	a = inotify_init1(IN_NONBLOCK);
	if (a < 0) {
		pr_perror("inotify_init1");
		return 1;
	}
	if (inotify_add_watch(a, DIR_, dir_mask) != 1 || inotify_add_watch(a, DIR_ "/f", file_mask) != 2) {
		pr_perror("inotify_add_watch");
		return 1;
	}
	if (mapped) {
		map = mmap(NULL, 4096, PROT_READ, MAP_SHARED, hold, 0);
		if (map == MAP_FAILED) {
			pr_perror("mmap");
			return 1;
		}
		/* IN_CLOSE_* is not watched: this close is no event */
		close(hold);
		hold = -1;
	}
	if (unlink(DIR_ "/f")) {
		pr_perror("unlink");
		return 1;
	}
	/* The unlink: its link count (IN_ATTRIB), its name (IN_DELETE). */
	while (read_event(a, &ev, name) == 1) {
		if (ev.wd == 2 && ev.mask == IN_ATTRIB)
			seen_attrib++;
		else if (ev.wd == 1 && ev.mask == IN_DELETE && !strcmp(name, "f"))
			seen_delete++;
		else if (!(ev.mask & IN_OPEN)) {
			pr_err("unexpected event wd %d mask %#x '%s'\n", ev.wd, ev.mask, name);
			return 1;
		}
	}
	if (seen_attrib != 1 || seen_delete != 1) {
		pr_err("unlink: %d IN_ATTRIB, %d IN_DELETE\n", seen_attrib, seen_delete);
		return 1;
	}
	if (watches(a, before, sizeof(before))) {
		pr_perror("fdinfo");
		return 1;
	}
	if (shared) {
		if (pipe(go)) {
			pr_perror("pipe");
			return 1;
		}
		child = fork();
		if (child < 0) {
			pr_perror("fork");
			return 1;
		}
		if (child == 0) {
			/* A's, not f's: the parent's close still ends f */
			if (hold >= 0)
				close(hold);
			if (map)
				munmap(map, 4096);
			close(go[1]);
			if (read(go[0], buf, 1) != 1)
				_exit(1);
			/* after restore: the same watches */
			if (watches(a, after, sizeof(after)) || strcmp(after, before))
				_exit(2);
			/* and the one instance: the parent's next watch is wd 4 */
			if (inotify_add_watch(a, "/", IN_DELETE_SELF) != 3)
				_exit(3);
			_exit(0);
		}
		close(go[0]);
	}

	test_daemon();
	test_waitsig();

	if (watches(a, after, sizeof(after)) == 0)
		test_check(!strcmp(after, before), "watches (wd:mask) were\n%s  and are\n%s", before, after);
	else
		test_check(0, "the inotify fd is gone");
	if (child > 0) {
		test_check(write(go[1], "g", 1) == 1, "telling the child: %m");
		test_check(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
			   "the child found A changed or not shared (status %#x)", status);
	}
	if (mapped) {
		test_check(!memcmp(map, "hello", 5), "the mapping of f does not hold hello");
		expect_none(a);
		munmap(map, 4096);
		expect(a, 2, IN_DELETE_SELF, "");
		expect(a, 2, IN_IGNORED, "");
		goto done;
	}
	if (fstat(hold, &st) == 0) {
		test_check(st.st_nlink == 0, "f has %lu links, wanted none", (unsigned long)st.st_nlink);
		test_check(watch_ino(a, 2) == st.st_ino, "wd 2 is on inode %lx, f is %lx", watch_ino(a, 2),
			   (unsigned long)st.st_ino);
	} else
		test_check(0, "fstat of f: %m");
	test_check(pread(hold, buf, 5, 0) == 5 && !memcmp(buf, "hello", 5), "f does not hold hello");
	expect_none(a);

	if (pwrite(hold, "!", 1, 5) != 1)
		pr_perror("write f");
	expect(a, 1, IN_MODIFY, "f");
	expect(a, 2, IN_MODIFY, "");
	expect_none(a);
	close(hold);
	expect(a, 2, IN_DELETE_SELF, "");
	expect(a, 2, IN_IGNORED, "");
done:
	expect_none(a);
	w = inotify_add_watch(a, ".", IN_CREATE);
	test_check(w == (shared ? 4 : 3), "a new watch got wd %d, wanted %d", w, shared ? 4 : 3);

	if (failed) {
		errno = 0;
		fail("inotify watch on an unlinked file was not restored");
		return 1;
	}
	pass();
	return 0;
}

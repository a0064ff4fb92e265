/*
 * fanotify: a group survives checkpoint/restore with its init flags and
 * every mark (inode marks with masks and ignored masks, a mount mark), and
 * the marks still work.
 *
 * In fanotify.dir (files f1, f2) and on a tmpfs mounted at fanotify.mnt:
 *   group (FAN_CLASS_NOTIF|FAN_NONBLOCK|FAN_CLOEXEC, O_RDONLY|O_LARGEFILE)
 *     f1            FAN_MODIFY|FAN_CLOSE_WRITE
 *     the directory FAN_OPEN|FAN_EVENT_ON_CHILD
 *     f2            ignored FAN_OPEN (FAN_MARK_IGNORED_SURV_MODIFY)
 *     the mount     FAN_OPEN (FAN_MARK_MOUNT)
 * Nothing is queued when the state is ready.
 *
 * After restore: the "fanotify" lines of /proc/self/fdinfo are as before
 * (a mount mark's mount id read as its mount point: a new mount namespace
 * gives the mount another id),
 * F_GETFL/F_GETFD too, nothing is queued; then writing f1, opening f2 and
 * opening a file on the tmpfs give, for this process, FAN_OPEN, FAN_MODIFY
 * and FAN_CLOSE_WRITE on f1, FAN_OPEN on the tmpfs file and nothing on f2.
 *
 *   --fsmark  also mark the whole tmpfs (FAN_MARK_FILESYSTEM): refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that fanotify groups and marks are restored";

static int fsmark;
TEST_OPTION(fsmark, bool, "also mark a whole filesystem (the dump refuses)", 0);

#define DIR_ "fanotify.dir"
#define MNT "fanotify.mnt"

static int failed;

/*
 * The mount point of mount `id` in this mount namespace: a mount made
 * again in a new mount namespace has another id (ids are the kernel's),
 * so a mount mark is compared by where it is.
 */
static void mount_point(int id, char *out, size_t size)
{
	char line[1024], point[512];
	FILE *f = fopen("/proc/self/mountinfo", "r");
	int mid;

	snprintf(out, size, "?");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%d %*d %*s %*s %511s", &mid, point) == 2 && mid == id) {
			snprintf(out, size, "%s", point);
			break;
		}
	fclose(f);
}

static int fdinfo_marks(int fd, char *out, size_t size)
{
	char path[64], line[512], point[512], rest[512];
	size_t len = 0;
	FILE *f;
	int mid;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		return -1;
	out[0] = '\0';
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "fanotify ", 9)) {
			if (sscanf(line, "fanotify mnt_id:%x %511[^\n]", &mid, rest) == 2) {
				mount_point(mid, point, sizeof(point));
				snprintf(line, sizeof(line), "fanotify mount:%.200s %.200s\n", point, rest);
			}
			if (len + strlen(line) + 1 > size)
				break;
			strcpy(out + len, line);
			len += strlen(line);
		}
	fclose(f);
	return 0;
}

static ino_t ino_of(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : st.st_ino;
}

static int touch(const char *path, int flags)
{
	int fd = open(path, flags | O_CREAT, 0644);

	if (fd < 0)
		return -1;
	if ((flags & O_ACCMODE) != O_RDONLY && write(fd, "x", 1) != 1) {
		close(fd);
		return -1;
	}
	return close(fd);
}

int main(int argc, char **argv)
{
	static char before[4096], after[4096];
	char buf[8192] __attribute__((aligned(8)));
	uint64_t m_f1 = 0, m_f2 = 0, m_mnt = 0;
	ino_t i_f1, i_f2, i_mnt;
	int g, fl, fdf, avail, n;

	test_init(argc, argv);

	if ((mkdir(DIR_, 0755) && errno != EEXIST) || (mkdir(MNT, 0755) && errno != EEXIST) ||
	    mount("fanotify", MNT, "tmpfs", 0, "size=1m")) {
		pr_perror("mkdir/mount");
		return 1;
	}
	if (touch(DIR_ "/f1", O_WRONLY) || touch(DIR_ "/f2", O_WRONLY) || touch(MNT "/m", O_WRONLY)) {
		pr_perror("creating files");
		goto out_umount;
	}
	g = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK | FAN_CLOEXEC, O_RDONLY | O_LARGEFILE);
	if (g < 0) {
		pr_perror("fanotify_init");
		goto out_umount;
	}
	if (fanotify_mark(g, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, DIR_ "/f1") ||
	    fanotify_mark(g, FAN_MARK_ADD, FAN_OPEN | FAN_EVENT_ON_CHILD, AT_FDCWD, DIR_) ||
	    fanotify_mark(g, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_OPEN,
			  AT_FDCWD, DIR_ "/f2") ||
	    fanotify_mark(g, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN, AT_FDCWD, MNT)) {
		pr_perror("fanotify_mark");
		goto out_umount;
	}
	if (fsmark && fanotify_mark(g, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_CLOSE_WRITE, AT_FDCWD, MNT)) {
		pr_perror("fanotify_mark (filesystem)");
		goto out_umount;
	}
	fl = fcntl(g, F_GETFL);
	fdf = fcntl(g, F_GETFD);
	if (fdinfo_marks(g, before, sizeof(before)) || ioctl(g, FIONREAD, &avail) || avail) {
		pr_perror("fdinfo or queue (%d bytes)", avail);
		goto out_umount;
	}

	test_daemon();
	test_waitsig();

	test_check(fcntl(g, F_GETFL) == fl && fcntl(g, F_GETFD) == fdf, "F_GETFL/F_GETFD changed");
	if (fdinfo_marks(g, after, sizeof(after)) == 0)
		test_check(!strcmp(after, before), "the marks were\n%s  and are\n%s", before, after);
	else
		test_check(0, "the group is gone");
	test_check(ioctl(g, FIONREAD, &avail) == 0 && avail == 0, "%d bytes queued after restore", avail);

	i_f1 = ino_of(DIR_ "/f1");
	i_f2 = ino_of(DIR_ "/f2");
	i_mnt = ino_of(MNT "/m");
	if (touch(DIR_ "/f1", O_WRONLY) || touch(DIR_ "/f2", O_RDONLY) || touch(MNT "/m", O_RDONLY))
		test_check(0, "opening the files failed");
	while ((n = read(g, buf, sizeof(buf))) > 0) {
		struct fanotify_event_metadata *e = (struct fanotify_event_metadata *)buf;

		for (; FAN_EVENT_OK(e, n); e = FAN_EVENT_NEXT(e, n)) {
			struct stat st;

			if (e->fd < 0 || fstat(e->fd, &st)) {
				test_check(0, "an event without a file");
				continue;
			}
			if (e->pid == getpid()) {
				if (st.st_ino == i_f1)
					m_f1 |= e->mask;
				else if (st.st_ino == i_f2)
					m_f2 |= e->mask;
				else if (st.st_ino == i_mnt)
					m_mnt |= e->mask;
			}
			close(e->fd);
		}
	}
	test_check(m_f1 == (FAN_OPEN | FAN_MODIFY | FAN_CLOSE_WRITE), "f1: events %#llx", (unsigned long long)m_f1);
	test_check(m_f2 == 0, "f2: events %#llx, wanted none (ignored)", (unsigned long long)m_f2);
	test_check(m_mnt == FAN_OPEN, "the tmpfs file: events %#llx", (unsigned long long)m_mnt);

	close(g);
	if (umount(MNT))
		test_check(0, "umount");
	if (failed) {
		errno = 0;
		fail("fanotify state was not restored");
		return 1;
	}
	pass();
	return 0;

out_umount:
	umount(MNT);
	return 1;
}

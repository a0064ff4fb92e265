/*
 * file: open files survive checkpoint/restore with their flags, offsets,
 * targets and contents.
 *
 *   rw       file.rw, O_RDWR, 3 pages of random data, offset moved to 5000
 *   rw dup   a dup() of rw at fd 100: must still share the offset with rw
 *   ro       file.rw again, O_RDONLY, its own offset (100)
 *   cloexec  file.rw again, O_RDONLY|O_CLOEXEC (FD_CLOEXEC set)
 *   append   file.app, O_WRONLY|O_APPEND, "before\n" written; "after\n" is
 *            written after restore and must land at the end
 *   dir      file.dir, O_RDONLY|O_DIRECTORY
 *   null     /dev/null, O_WRONLY
 *   zero     /dev/zero, O_RDONLY|O_NONBLOCK
 *
 * After restore, for every fd: F_GETFL and F_GETFD equal what they were
 * (and have the expected bits), the offset (lseek SEEK_CUR) is unchanged,
 * fstat() gives the device and inode of the path (the rdev for the
 * character devices), and the contents read back as written.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that regular files, directories and char devices are restored as open fds";

#define PS 4096
#define RW_FILE "file.rw"
#define APP_FILE "file.app"
#define DIR_NAME "file.dir"
#define DUP_FD 100

struct fdesc {
	const char *what, *path;
	int fd, open_flags;
	int flags_must, flags_mustnot; /* F_GETFL bits */
	int cloexec;		       /* expected FD_CLOEXEC */
	off_t offset;
	int getfl, getfd;	       /* recorded before the checkpoint */
	dev_t rdev;		       /* char devices */
};

static int failed;

int main(int argc, char **argv)
{
	struct fdesc fds[] = {
		{ "rw", RW_FILE, -1, O_RDWR | O_CREAT | O_TRUNC, O_RDWR, O_APPEND | O_NONBLOCK, 0, 5000 },
		{ "rw dup", RW_FILE, -1, 0, O_RDWR, O_APPEND, 0, 5000 },
		{ "ro", RW_FILE, -1, O_RDONLY, O_RDONLY, O_APPEND, 0, 100 },
		{ "cloexec", RW_FILE, -1, O_RDONLY | O_CLOEXEC, O_RDONLY, 0, 1, 0 },
		{ "append", APP_FILE, -1, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, O_WRONLY | O_APPEND, 0, 0, 7 },
		{ "dir", DIR_NAME, -1, O_RDONLY | O_DIRECTORY, O_RDONLY | O_DIRECTORY, 0, 0, 0 },
		{ "null", "/dev/null", -1, O_WRONLY, O_WRONLY, 0, 0, 0, 0, 0, makedev(1, 3) },
		{ "zero", "/dev/zero", -1, O_RDONLY | O_NONBLOCK, O_RDONLY | O_NONBLOCK, 0, 0, 0, 0, 0, makedev(1, 5) },
	};
	enum { RW, DUP, RO, CLOEXEC, APPEND, DIR, NUL, ZERO, NFDS };
	uint8_t data[3 * PS], buf[3 * PS];
	const char app_before[] = "before\n", app_after[] = "after\n";
	char app[64];
	size_t i;

	test_init(argc, argv);

	if (mkdir(DIR_NAME, 0755) && errno != EEXIST) {
		pr_perror("mkdir %s", DIR_NAME);
		return 1;
	}
	for (i = 0; i < NFDS; i++) {
		if (i == DUP)
			continue;
		fds[i].fd = open(fds[i].path, fds[i].open_flags, 0644);
		if (fds[i].fd < 0) {
			pr_perror("open %s", fds[i].path);
			return 1;
		}
		if (i == RW) {
			datagen2(data, sizeof(data), NULL);
			if (write_data(fds[RW].fd, data, sizeof(data)))
				return 1;
		}
	}
	fds[DUP].fd = dup2(fds[RW].fd, DUP_FD);
	if (fds[DUP].fd != DUP_FD) {
		pr_perror("dup2");
		return 1;
	}
	if (write_data(fds[APPEND].fd, (const unsigned char *)app_before, strlen(app_before)))
		return 1;
	for (i = 0; i < NFDS; i++) {
		if (i != DUP && lseek(fds[i].fd, fds[i].offset, SEEK_SET) != fds[i].offset && i < NUL) {
			pr_perror("lseek %s to %lld", fds[i].what, (long long)fds[i].offset);
			return 1;
		}
		fds[i].getfl = fcntl(fds[i].fd, F_GETFL);
		fds[i].getfd = fcntl(fds[i].fd, F_GETFD);
		if (fds[i].getfl < 0 || fds[i].getfd < 0) {
			pr_perror("fcntl %s", fds[i].what);
			return 1;
		}
	}
	/* /dev/null and /dev/zero report offset 0 whatever we do */
	fds[NUL].offset = fds[ZERO].offset = 0;

	test_daemon();
	test_waitsig();

	for (i = 0; i < NFDS; i++) {
		struct fdesc *f = &fds[i];
		int fl = fcntl(f->fd, F_GETFL), fdfl = fcntl(f->fd, F_GETFD);
		struct stat st_fd, st_path;
		off_t off;

		if (fl < 0 || fdfl < 0) {
			test_check(0, "%s: fd %d is not open after restore: %m", f->what, f->fd);
			continue;
		}
		test_check(fl == f->getfl, "%s: fd %d: F_GETFL %#o, was %#o", f->what, f->fd, fl, f->getfl);
		test_check((fl & O_ACCMODE) == (f->flags_must & O_ACCMODE), "%s: fd %d: access mode %#o, expected %#o",
		      f->what, f->fd, fl & O_ACCMODE, f->flags_must & O_ACCMODE);
		test_check((fl & f->flags_must & ~O_ACCMODE) == (f->flags_must & ~O_ACCMODE),
		      "%s: fd %d: F_GETFL %#o lacks %#o", f->what, f->fd, fl, f->flags_must & ~O_ACCMODE);
		test_check(!(fl & f->flags_mustnot), "%s: fd %d: F_GETFL %#o has %#o", f->what, f->fd, fl,
		      fl & f->flags_mustnot);
		test_check(fdfl == f->getfd, "%s: fd %d: F_GETFD %#x, was %#x", f->what, f->fd, fdfl, f->getfd);
		test_check(!!(fdfl & FD_CLOEXEC) == f->cloexec, "%s: fd %d: FD_CLOEXEC is %s", f->what, f->fd,
		      (fdfl & FD_CLOEXEC) ? "set" : "clear");

		off = lseek(f->fd, 0, SEEK_CUR);
		if (i != DIR)
			test_check(off == f->offset, "%s: fd %d: offset %lld, expected %lld", f->what, f->fd,
			      (long long)off, (long long)f->offset);

		if (fstat(f->fd, &st_fd) || stat(f->path, &st_path)) {
			test_check(0, "%s: fd %d: fstat/stat %s: %m", f->what, f->fd, f->path);
			continue;
		}
		test_check(st_fd.st_dev == st_path.st_dev && st_fd.st_ino == st_path.st_ino,
		      "%s: fd %d is %u:%u/%lu, %s is %u:%u/%lu", f->what, f->fd, major(st_fd.st_dev),
		      minor(st_fd.st_dev), (unsigned long)st_fd.st_ino, f->path, major(st_path.st_dev),
		      minor(st_path.st_dev), (unsigned long)st_path.st_ino);
		if (f->rdev)
			test_check(S_ISCHR(st_fd.st_mode) && st_fd.st_rdev == f->rdev,
			      "%s: fd %d is not the char device %u:%u", f->what, f->fd, major(f->rdev),
			      minor(f->rdev));
		if (i == DIR)
			test_check(S_ISDIR(st_fd.st_mode), "%s: fd %d is not a directory", f->what, f->fd);
	}

	/* rw and its dup share one open file description (one offset) */
	if (lseek(fds[RW].fd, 7000, SEEK_SET) == 7000)
		test_check(lseek(fds[DUP].fd, 0, SEEK_CUR) == 7000,
		      "rw dup: fd %d no longer shares the offset of fd %d", fds[DUP].fd, fds[RW].fd);
	/* ro has its own */
	test_check(lseek(fds[RO].fd, 0, SEEK_CUR) == 100, "ro: the offset moved with rw");

	/* contents: read from the current offsets and with pread */
	test_check(read(fds[RW].fd, buf, 100) == 100 && !memcmp(buf, data + 7000, 100), "rw: read at 7000 differs");
	test_check(read(fds[RO].fd, buf, 100) == 100 && !memcmp(buf, data + 100, 100), "ro: read at 100 differs");
	test_check(pread(fds[CLOEXEC].fd, buf, sizeof(buf), 0) == sizeof(buf) && !memcmp(buf, data, sizeof(data)),
	      "cloexec: the contents of %s differ", RW_FILE);
	test_check(write(fds[RW].fd, "x", 1) == 1 && pread(fds[RO].fd, buf, 1, 7100) == 1 && buf[0] == 'x',
	      "rw: a write at 7100 is not seen through ro");

	/* append: "after" goes to the end */
	test_check(write(fds[APPEND].fd, app_after, strlen(app_after)) == (ssize_t)strlen(app_after),
	      "append: write: %m");
	test_check(lseek(fds[APPEND].fd, 0, SEEK_CUR) == (off_t)(strlen(app_before) + strlen(app_after)),
	      "append: offset %lld after the write", (long long)lseek(fds[APPEND].fd, 0, SEEK_CUR));
	{
		int fd = open(APP_FILE, O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, app, sizeof(app) - 1) : -1;

		if (n >= 0)
			app[n] = '\0';
		test_check(n >= 0 && !strcmp(app, "before\nafter\n"), "append: %s holds \"%s\"", APP_FILE,
		      n >= 0 ? app : "?");
		if (fd >= 0)
			close(fd);
	}

	/* the devices */
	memset(buf, 0xff, 64);
	test_check(read(fds[ZERO].fd, buf, 64) == 64 && !buf[0] && !buf[63], "zero: read from /dev/zero");
	test_check(write(fds[NUL].fd, "x", 1) == 1, "null: write to /dev/null: %m");

	/* the directory fd still reaches the directory */
	test_check(!faccessat(fds[DIR].fd, ".", F_OK, 0), "dir: faccessat: %m");

	for (i = 0; i < NFDS; i++)
		close(fds[i].fd);
	unlink(RW_FILE);
	unlink(APP_FILE);
	rmdir(DIR_NAME);

	if (failed) {
		errno = 0;
		fail("file descriptors changed (see above)");
		return 1;
	}
	pass();
	return 0;
}

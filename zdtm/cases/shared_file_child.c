/*
 * shared_file_child: a file that a parent and its child map MAP_SHARED
 * and keep open stays one file after checkpoint/restore.
 *
 *   --kind=file   shared_file.data in the work directory
 *   --kind=shm    a POSIX shared memory object (shm_open), /dev/shm/NAME
 *   --unlink      unlink it (unlink or shm_unlink) after the fork, while
 *                 it is open and mapped: it lives on only in its inode
 *
 * The file has 8 pages: 0-3 and 6 written, 4, 5 and 7 holes (so only the
 * data is stored for an unlinked one); pages 0-3 are mapped. The parent keeps it open O_RDWR at offset
 * 1234 (the child shares that description), both map it MAP_SHARED
 * read-write, and the parent also maps it MAP_PRIVATE with page 0 written
 * (copied on write).
 *
 * After SIGTERM the parent checks the fd's /proc link and the mappings'
 * /proc/self/maps names ("PATH", or "PATH (deleted)" when unlinked), that
 * the fd, both its mappings and the child's mapping are one inode, the
 * link count (0 when unlinked), mode, owner, size, offset and contents.
 * Then a round: a token written through the parent's mapping must be seen
 * by the child through its mapping and the fd; the child's answer (through
 * its mapping, and pwrite on the shared fd) must be seen by the parent
 * through its mapping and the fd, and, when the file is still linked, by
 * a fresh open of its path (after msync): the mapping still writes into
 * the file. The file is removed at exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that a file mapped MAP_SHARED by a parent and a child stays one file";

static char *kind = "file";
TEST_OPTION(kind, string, "file (in the work directory) or shm (shm_open in /dev/shm)", 0);
static int unlink_it;
TEST_OPTION(unlink_it, bool, "unlink the file while it is open and mapped", 0);

#define PS 4096
#define PAGES 4
#define SIZE (PAGES * PS)
#define FILE_SIZE (2 * SIZE)
#define POS 1234

static int failed;
static int fd;
static uint8_t *shm, *priv;
static char path[PATH_MAX], shm_name[64];
static int unlinked;

static void cleanup(void)
{
	if (unlinked)
		return;
	if (shm_name[0])
		shm_unlink(shm_name);
	else
		unlink(path);
	unlinked = 1;
}

static void check_state(const char *when, pid_t child_pid)
{
	char want[PATH_MAX + 16], link[PATH_MAX + 16], p[64];
	struct test_map m;
	uint8_t buf[SIZE], page[PS];
	struct stat st, pst;
	ssize_t n;
	int i;

	snprintf(want, sizeof(want), "%s%s", path, unlink_it ? " (deleted)" : "");
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	n = readlink(p, link, sizeof(link) - 1);
	link[n < 0 ? 0 : n] = 0;
	test_check(!strcmp(link, want), "%s: the fd links to \"%s\", expected \"%s\"", when, link, want);
	if (fstat(fd, &st)) {
		test_check(0, "%s: fstat: %s", when, strerror(errno));
		return;
	}
	test_check(S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0600 && st.st_uid == getuid() &&
			   st.st_size == FILE_SIZE && st.st_nlink == (unlink_it ? 0 : 1),
		   "%s: mode %o uid %d size %ld nlink %ld", when, st.st_mode, st.st_uid, (long)st.st_size,
		   (long)st.st_nlink);
	if (!unlink_it)
		test_check(stat(path, &pst) == 0 && pst.st_ino == st.st_ino && pst.st_dev == st.st_dev,
			   "%s: the fd is not the file at %s", when, path);
	test_check(lseek(fd, 0, SEEK_CUR) == POS, "%s: offset %ld", when, (long)lseek(fd, 0, SEEK_CUR));
	test_check((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR, "%s: flags %#x", when, fcntl(fd, F_GETFL));
	/* shm_open sets FD_CLOEXEC, open(2) was not asked to */
	test_check(fcntl(fd, F_GETFD) == (shm_name[0] ? FD_CLOEXEC : 0), "%s: FD_CLOEXEC is %d", when,
		   fcntl(fd, F_GETFD));

	struct {
		pid_t pid;
		void *addr;
	} maps[] = { { getpid(), shm }, { getpid(), priv }, { child_pid, shm } };
	for (i = 0; i < 3; i++) {
		if (test_find_map(maps[i].pid, (unsigned long)maps[i].addr, &m)) {
			test_check(0, "%s: pid %d has no mapping at %p", when, maps[i].pid, maps[i].addr);
			continue;
		}
		test_check(!strcmp(m.name, want) && m.ino == st.st_ino, "%s: pid %d: mapping %p is %s (inode %lu)", when,
			   maps[i].pid, maps[i].addr, m.name, m.ino);
	}

	for (i = PAGES; i < 2 * PAGES; i++) {
		if (i == 6)
			zdtm_fill_seeded(page, PS, 16);
		else
			memset(page, 0, PS);
		test_check(pread(fd, buf, PS, i * PS) == PS && !memcmp(buf, page, PS), "%s: page %d through the fd",
			   when, i);
	}
	for (i = 0; i < PAGES; i++) {
		zdtm_fill_seeded(page, PS, 10 + i);
		test_check(pread(fd, buf, PS, i * PS) == PS && !memcmp(buf, page, PS), "%s: page %d through the fd",
			   when, i);
		test_check(!memcmp(shm + i * PS, page, PS), "%s: page %d through the shared mapping", when, i);
		if (i == 0)
			zdtm_fill_seeded(page, PS, 50);
		test_check(!memcmp(priv + i * PS, page, PS), "%s: page %d through the private mapping", when, i);
	}
}

static void __attribute__((noreturn)) child(void)
{
	uint8_t page[PS], buf[PS];
	int bad = 0;

	while (test_go())
		usleep(20000);
	zdtm_fill_seeded(page, PS, 100);
	if (memcmp(shm + PS, page, PS) || pread(fd, buf, PS, PS) != PS || memcmp(buf, page, PS)) {
		test_msg("FAILED: child: the parent's token is not in the file\n");
		bad = 1;
	}
	zdtm_fill_seeded(shm + 2 * PS, PS, 101);
	zdtm_fill_seeded(page, PS, 102);
	if (pwrite(fd, page, PS, 3 * PS) != PS) {
		test_msg("FAILED: child: pwrite: %s\n", strerror(errno));
		bad = 1;
	}
	_exit(bad);
}

int main(int argc, char **argv)
{
	uint8_t page[PS], buf[PS];
	int i, status, rfd;
	pid_t pid;

	test_init(argc, argv);

	if (!strcmp(kind, "shm")) {
		/* The pid alone is not unique: in the ns flavour every trial's
		 * test is pid 3, and /dev/shm is the host's. */
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		snprintf(shm_name, sizeof(shm_name), "/ckpt-zdtm-%d-%lx", getpid(),
			 (unsigned long)ts.tv_sec * 1000000000UL + (unsigned long)ts.tv_nsec);
		snprintf(path, sizeof(path), "/dev/shm%s", shm_name);
		fd = shm_open(shm_name, O_RDWR | O_CREAT | O_EXCL, 0600);
	} else if (!strcmp(kind, "file")) {
		char cwd[PATH_MAX - 32];

		if (!getcwd(cwd, sizeof(cwd))) {
			pr_perror("getcwd");
			return 1;
		}
		snprintf(path, sizeof(path), "%s/shared_file.data", cwd);
		fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	} else {
		pr_err("--kind must be file or shm\n");
		return 1;
	}
	if (fd < 0) {
		pr_perror("create %s", path);
		return 1;
	}
	for (i = 0; i < PAGES; i++) {
		zdtm_fill_seeded(page, PS, 10 + i);
		if (pwrite(fd, page, PS, i * PS) != PS) {
			pr_perror("pwrite");
			goto err;
		}
	}
	zdtm_fill_seeded(page, PS, 16);
	if (pwrite(fd, page, PS, 6 * PS) != PS || ftruncate(fd, FILE_SIZE)) {
		pr_perror("pwrite/ftruncate");
		goto err;
	}
	shm = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	priv = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (shm == MAP_FAILED || priv == MAP_FAILED || lseek(fd, POS, SEEK_SET) != POS) {
		pr_perror("mmap");
		goto err;
	}
	zdtm_fill_seeded(priv, PS, 50);

	pid = fork();
	if (pid < 0) {
		pr_perror("fork");
		goto err;
	}
	if (pid == 0)
		child();
	if (unlink_it)
		cleanup();
	check_state("before", pid);
	if (failed) {
		pr_err("the state is wrong before the checkpoint\n");
		kill(pid, SIGKILL);
		goto err;
	}

	test_daemon();
	test_waitsig();

	check_state("after", pid);

	/* the round with the child */
	zdtm_fill_seeded(shm + PS, PS, 100);
	kill(pid, SIGTERM);
	if (test_wait_exit(pid, &status, 15))
		test_check(0, "waitpid(child %d): %s", pid, strerror(errno));
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child ended with status %#x", status);
	zdtm_fill_seeded(page, PS, 101);
	test_check(!memcmp(shm + 2 * PS, page, PS), "the child's write through its mapping is not in ours");
	test_check(pread(fd, buf, PS, 2 * PS) == PS && !memcmp(buf, page, PS),
		   "the child's write through its mapping is not seen through the fd");
	zdtm_fill_seeded(page, PS, 102);
	test_check(!memcmp(shm + 3 * PS, page, PS), "the child's pwrite is not seen through our mapping");
	if (!unlink_it) {
		test_check(msync(shm, SIZE, MS_SYNC) == 0, "msync: %s", strerror(errno));
		rfd = open(path, O_RDONLY);
		zdtm_fill_seeded(page, PS, 100);
		test_check(rfd >= 0 && pread(rfd, buf, PS, PS) == PS && !memcmp(buf, page, PS),
			   "the parent's write through its mapping is not in %s", path);
		zdtm_fill_seeded(page, PS, 101);
		test_check(rfd >= 0 && pread(rfd, buf, PS, 2 * PS) == PS && !memcmp(buf, page, PS),
			   "the child's write through its mapping is not in %s", path);
		if (rfd >= 0)
			close(rfd);
	}
	cleanup();

	if (failed) {
		errno = 0;
		fail("the shared file is not shared as before");
		return 1;
	}
	pass();
	return 0;
err:
	cleanup();
	return 1;
}

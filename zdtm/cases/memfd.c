/*
 * memfd: memfd objects survive checkpoint/restore as the same objects,
 * reached through every fd and every mapping, in the parent and its child.
 *
 *   A  "ckpt-zdtm-A", created without MFD_ALLOW_SEALING (so sealed with
 *      F_SEAL_SEAL only), 64 pages + 100 bytes, sparse: pages 0, 1, 17
 *      and 63 and the 100-byte tail written, the rest holes; mode 0640.
 *      fd a1 (O_RDWR, offset 5000), fd a2 (a second description opened
 *      through /proc/self/fd, O_RDONLY, offset 100), a MAP_SHARED
 *      read-write mapping of all of it, and a MAP_PRIVATE mapping of its
 *      first 4 pages whose page 1 was written (copied on write).
 *   B  "ckpt-zdtm-B", sealed F_SEAL_WRITE|GROW|SHRINK|SEAL, then mapped
 *      MAP_SHARED read-only and MAP_PRIVATE read-write (page 1 written,
 *      copied on write), then its fd closed: only the mappings hold it;
 *      mprotect of the shared one to writable must fail (EACCES) as before.
 *   C  "ckpt-zdtm-C", mapped MAP_SHARED read-write and then sealed
 *      F_SEAL_FUTURE_WRITE: the mapping stays writable, pwrite and new
 *      writable shared mappings fail with EPERM.
 *
 * The child is forked with all of that. After SIGTERM the parent checks
 * names (/proc/self/fd links, /proc/self/maps lines and inodes), sizes,
 * modes, seals, offsets, flags and contents, that a write through the
 * mapping is seen through the fd and the other way round, and then runs
 * a round with the child: a token written by the parent through its
 * mapping must be seen by the child through its mapping and an fd; the
 * child's answer, written through its mappings of A and C and with
 * write(2) on the shared a1 (moving the shared offset), must be seen by
 * the parent.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that memfd objects stay one object through fds and mappings of two processes";

#define PS 4096
#define A_PAGES 64
#define A_SIZE (A_PAGES * PS + 100)
#define A_MAPLEN ((A_PAGES + 1) * PS)
#define B_SIZE (3 * PS)
#define C_SIZE (2 * PS)

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

static int failed;
static int a1, a2, cfd;
static uint8_t *ams, *amp, *bm, *bp, *cm;
static uint8_t expect_a[A_SIZE];

static const int a_pages[] = { 0, 1, 17, 63 };

static void build_expect(void)
{
	unsigned i;

	memset(expect_a, 0, sizeof(expect_a));
	for (i = 0; i < ARRAY_SIZE(a_pages); i++)
		zdtm_fill_seeded(expect_a + a_pages[i] * PS, PS, 100 + a_pages[i]);
	zdtm_fill_seeded(expect_a + A_PAGES * PS, 100, 999);
}

static void check_name(void *addr, int fd, const char *want)
{
	char link[256], path[64];
	struct test_map m;
	struct stat st;
	ssize_t n;

	if (fd >= 0) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, link, sizeof(link) - 1);
		link[n < 0 ? 0 : n] = 0;
		test_check(!strcmp(link, want), "fd %d links to \"%s\", expected \"%s\"", fd, link, want);
	}
	if (test_find_map(getpid(), (unsigned long)addr, &m)) {
		test_check(0, "no mapping at %p", addr);
		return;
	}
	test_check(!strcmp(m.name, want), "mapping %p is \"%s\", expected \"%s\"", addr, m.name, want);
	if (fd >= 0 && fstat(fd, &st) == 0)
		test_check(st.st_ino == m.ino, "mapping %p: inode %lu, fd %d: inode %lu", addr, m.ino, fd,
			   (unsigned long)st.st_ino);
}

static int seals(int fd)
{
	return fcntl(fd, F_GET_SEALS);
}

/* everything that must be as it was built, before and after */
static void check_state(const char *when)
{
	static uint8_t buf[A_SIZE];
	uint8_t page[PS];
	struct stat st;

	check_name(ams, a1, "/memfd:ckpt-zdtm-A (deleted)");
	check_name(amp, a2, "/memfd:ckpt-zdtm-A (deleted)");
	check_name(bm, -1, "/memfd:ckpt-zdtm-B (deleted)");
	check_name(bp, -1, "/memfd:ckpt-zdtm-B (deleted)");
	check_name(cm, cfd, "/memfd:ckpt-zdtm-C (deleted)");

	test_check(fstat(a1, &st) == 0 && st.st_size == A_SIZE && (st.st_mode & 07777) == 0640 &&
			   st.st_uid == getuid() && st.st_gid == getgid(),
		   "%s: A: size %ld mode %o uid %d gid %d", when, (long)st.st_size, st.st_mode & 07777, st.st_uid,
		   st.st_gid);
	test_check(seals(a1) == F_SEAL_SEAL, "%s: A: seals %#x, expected F_SEAL_SEAL", when, seals(a1));
	test_check(seals(cfd) == F_SEAL_FUTURE_WRITE, "%s: C: seals %#x", when, seals(cfd));
	test_check(lseek(a1, 0, SEEK_CUR) == 5000, "%s: a1 offset %ld", when, (long)lseek(a1, 0, SEEK_CUR));
	test_check(lseek(a2, 0, SEEK_CUR) == 100, "%s: a2 offset %ld", when, (long)lseek(a2, 0, SEEK_CUR));
	test_check((fcntl(a1, F_GETFL) & O_ACCMODE) == O_RDWR, "%s: a1 flags %#x", when, fcntl(a1, F_GETFL));
	test_check(fcntl(a1, F_GETFD) == 0 && fcntl(a2, F_GETFD) == FD_CLOEXEC && fcntl(cfd, F_GETFD) == FD_CLOEXEC,
		   "%s: FD_CLOEXEC: a1 %d, a2 %d, c %d", when, fcntl(a1, F_GETFD), fcntl(a2, F_GETFD), fcntl(cfd, F_GETFD));
	test_check((fcntl(a2, F_GETFL) & O_ACCMODE) == O_RDONLY, "%s: a2 flags %#x", when, fcntl(a2, F_GETFL));

	test_check(pread(a2, buf, A_SIZE, 0) == A_SIZE && !memcmp(buf, expect_a, A_SIZE), "%s: A read through a2",
		   when);
	test_check(!memcmp(ams, expect_a, A_SIZE), "%s: A read through its shared mapping", when);
	zdtm_fill_seeded(page, PS, 7);
	test_check(!memcmp(amp, expect_a, PS) && !memcmp(amp + PS, page, PS) &&
			   !memcmp(amp + 2 * PS, expect_a + 2 * PS, 2 * PS),
		   "%s: A's private mapping", when);

	zdtm_fill_seeded(page, PS, 200);
	test_check(!memcmp(bm, page, PS) && !memcmp(bm + 2 * PS, page, PS), "%s: B's contents", when);
	test_check(!memcmp(bp, page, PS) && !memcmp(bp + 2 * PS, page, PS), "%s: B's private mapping", when);
	zdtm_fill_seeded(page, PS, 201);
	test_check(!memcmp(bp + PS, page, PS), "%s: B's private page", when);
	test_check(mprotect(bm, B_SIZE, PROT_READ | PROT_WRITE) < 0 && errno == EACCES,
		   "%s: B (sealed) could be made writable", when);

	test_check(pwrite(cfd, "x", 1, 0) < 0 && errno == EPERM, "%s: C (future-write sealed) took a pwrite", when);
	test_check(mmap(NULL, C_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0) == MAP_FAILED && errno == EPERM,
		   "%s: C (future-write sealed) got a new writable mapping", when);
}

static void __attribute__((noreturn)) child(void)
{
	uint8_t page[PS], buf[PS];
	int bad = 0;

	while (test_go())
		usleep(20000);
	/* the parent's token, through our mapping and an fd */
	zdtm_fill_seeded(page, PS, 300);
	if (memcmp(ams + 7 * PS, page, PS) || pread(a2, buf, PS, 7 * PS) != PS || memcmp(buf, page, PS)) {
		test_msg("FAILED: child: the parent's token is not in A\n");
		bad = 1;
	}
	zdtm_fill_seeded(ams + 8 * PS, PS, 301);
	zdtm_fill_seeded(cm, PS, 302);
	if (write(a1, "Z", 1) != 1) {
		test_msg("FAILED: child: write on a1: %s\n", strerror(errno));
		bad = 1;
	}
	_exit(bad);
}

int main(int argc, char **argv)
{
	uint8_t page[PS], buf[PS];
	char path[64];
	unsigned i;
	int bfd, status;
	pid_t pid;

	test_init(argc, argv);
	build_expect();

	a1 = memfd_create("ckpt-zdtm-A", 0);
	if (a1 < 0 || ftruncate(a1, A_SIZE) || fchmod(a1, 0640)) {
		pr_perror("memfd A");
		return 1;
	}
	for (i = 0; i < ARRAY_SIZE(a_pages); i++)
		if (pwrite(a1, expect_a + a_pages[i] * PS, PS, a_pages[i] * PS) != PS) {
			pr_perror("pwrite A");
			return 1;
		}
	if (pwrite(a1, expect_a + A_PAGES * PS, 100, A_PAGES * PS) != 100 || lseek(a1, 5000, SEEK_SET) != 5000) {
		pr_perror("pwrite A tail");
		return 1;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", a1);
	a2 = open(path, O_RDONLY | O_CLOEXEC);
	if (a2 < 0 || lseek(a2, 100, SEEK_SET) != 100) {
		pr_perror("reopen A");
		return 1;
	}
	ams = mmap(NULL, A_MAPLEN, PROT_READ | PROT_WRITE, MAP_SHARED, a1, 0);
	amp = mmap(NULL, 4 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE, a1, 0);
	if (ams == MAP_FAILED || amp == MAP_FAILED) {
		pr_perror("mmap A");
		return 1;
	}
	zdtm_fill_seeded(amp + PS, PS, 7);

	bfd = memfd_create("ckpt-zdtm-B", MFD_ALLOW_SEALING);
	if (bfd < 0 || ftruncate(bfd, B_SIZE)) {
		pr_perror("memfd B");
		return 1;
	}
	zdtm_fill_seeded(page, PS, 200);
	if (pwrite(bfd, page, PS, 0) != PS || pwrite(bfd, page, PS, 2 * PS) != PS ||
	    fcntl(bfd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)) {
		pr_perror("fill/seal B");
		return 1;
	}
	bm = mmap(NULL, B_SIZE, PROT_READ, MAP_SHARED, bfd, 0);
	bp = mmap(NULL, B_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, bfd, 0);
	if (bm == MAP_FAILED || bp == MAP_FAILED) {
		pr_perror("mmap B");
		return 1;
	}
	zdtm_fill_seeded(bp + PS, PS, 201);
	close(bfd);

	cfd = memfd_create("ckpt-zdtm-C", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (cfd < 0 || ftruncate(cfd, C_SIZE)) {
		pr_perror("memfd C");
		return 1;
	}
	cm = mmap(NULL, C_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
	if (cm == MAP_FAILED || fcntl(cfd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE)) {
		pr_perror("mmap/seal C");
		return 1;
	}
	cm[PS] = 0x5a;

	check_state("before");
	if (failed) {
		pr_err("the state is wrong before the checkpoint\n");
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		pr_perror("fork");
		return 1;
	}
	if (pid == 0)
		child();

	test_daemon();
	test_waitsig();

	check_state("after");
	test_check(cm[PS] == 0x5a, "C's mapping lost its byte");

	/* one object: a write through the mapping is seen through the fd and back */
	zdtm_fill_seeded(ams + 5 * PS, PS, 400);
	zdtm_fill_seeded(page, PS, 400);
	test_check(pread(a2, buf, PS, 5 * PS) == PS && !memcmp(buf, page, PS), "a write through A's mapping is not seen through a2");
	zdtm_fill_seeded(page, PS, 401);
	test_check(pwrite(a1, page, PS, 6 * PS) == PS && !memcmp(ams + 6 * PS, page, PS),
		   "a pwrite on a1 is not seen through A's mapping");
	cm[0] = 1;
	test_check(cm[0] == 1, "C's mapping is not writable");

	/* the round with the child */
	zdtm_fill_seeded(ams + 7 * PS, PS, 300);
	kill(pid, SIGTERM);
	if (test_wait_exit(pid, &status, 15))
		test_check(0, "waitpid(child %d): %s", pid, strerror(errno));
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child ended with status %#x", status);
	zdtm_fill_seeded(page, PS, 301);
	test_check(!memcmp(ams + 8 * PS, page, PS), "the child's answer is not in A's mapping");
	test_check(pread(a1, buf, PS, 8 * PS) == PS && !memcmp(buf, page, PS), "the child's answer is not seen through a1");
	zdtm_fill_seeded(page, PS, 302);
	test_check(!memcmp(cm, page, PS), "the child's answer is not in C's mapping");
	test_check(lseek(a1, 0, SEEK_CUR) == 5001, "a1's offset is %ld after the child's write, expected 5001",
		   (long)lseek(a1, 0, SEEK_CUR));
	test_check(ams[5000] == 'Z', "the child's write(2) on a1 did not land at offset 5000");

	if (failed) {
		errno = 0;
		fail("memfd objects are not as they were");
		return 1;
	}
	pass();
	return 0;
}

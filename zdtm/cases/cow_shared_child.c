/*
 * cow_shared_child: private memory a parent filled before forking, and
 * that its children never wrote, is still shared copy-on-write after
 * checkpoint/restore (not one private copy per process).
 *
 *	root (the zdtm pid, process 0)
 *	 +- readers 1..4 (never write the region)
 *	 |   (reader 1 also forks grandchild 6, which never writes it either)
 *	 +- writer 5 (writes WRITER_PAGES pages of the region after the fork)
 *
 * A 1 MiB region, filled and then made read-only before the forks, must
 * come back with its contents and read-only in everyone.
 *
 * Reader 2 also drops ZAP_PAGES pages of its view of the region
 * (MADV_DONTNEED) after the fork: they must still read as zeros in it
 * after restore, and only in it.
 * Before forking, the root maps a 32 MiB private anonymous region (with a
 * PROT_NONE page on each side so that it is one VMA of its own) and a
 * 4 MiB piece of brk heap (sbrk), and fills both with a pattern.
 *
 * After SIGTERM the root reads /proc/PID/smaps of every process for the
 * region and requires, for each process: Rss at least 90% of the region
 * (the pages are there), Pss at most Rss/2 (they are shared), and
 * Private_Clean + Private_Dirty at most PRIV_SLACK_KB (plus the written
 * pages for the writer). A restore that copies the pages into every
 * process shows the whole region as Private_Dirty in each of them and
 * fails here. The heap's figures are only logged: a child's malloc may
 * move its brk, and then the heap is no longer the parent's range.
 * Then it sends SIGTERM to its children; everyone checks the contents of
 * the region and the heap piece (the writer its own pages too) and exits
 * 0 if all is well; reader 1 also reaps the grandchild.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that private memory inherited across fork and never written stays shared";

#define PS 4096UL
#define REGION_PAGES 8192UL /* 32 MiB */
#define HEAP_PAGES 1024UL /* 4 MiB */
#define WRITER_PAGES 16
#define NPROC 7
#define WRITER 5
#define GRANDCHILD 6
#define PRIV_SLACK_KB 1024UL
#define WAIT_SECS 30
#define ZAPPER 2
#define ZAP_FIRST 4000UL
#define ZAP_PAGES 3UL

#define RO_PAGES 256UL

static uint8_t *region, *heap, *ro;
static pid_t pids[NPROC];

static uint64_t word(uint64_t page, uint64_t w, uint64_t seed)
{
	return (page * 0x9E3779B97F4A7C15ULL) ^ (w + seed * 0x100000001B3ULL);
}

static void fill_page(uint8_t *p, uint64_t page, uint64_t seed)
{
	uint64_t *q = (uint64_t *)p;
	unsigned long w;

	for (w = 0; w < PS / 8; w++)
		q[w] = word(page, w, seed);
}

static int page_ok(const uint8_t *p, uint64_t page, uint64_t seed)
{
	const uint64_t *q = (const uint64_t *)p;
	unsigned long w;

	for (w = 0; w < PS / 8; w++)
		if (q[w] != word(page, w, seed))
			return 0;
	return 1;
}

static int written_by_writer(unsigned long page)
{
	int i;

	for (i = 0; i < WRITER_PAGES; i++)
		if (page == 17 + i * 509UL)
			return 1;
	return 0;
}

/* the read-only region is one r--p mapping */
static int ro_is_readonly(void)
{
	char line[512], perms[8];
	unsigned long s, e;
	int ok = 0;
	FILE *f = fopen("/proc/self/maps", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx %7s", &s, &e, perms) == 3 && s <= (unsigned long)ro &&
		    (unsigned long)ro < e) {
			ok = !strcmp(perms, "r--p") && e >= (unsigned long)ro + RO_PAGES * PS;
			break;
		}
	fclose(f);
	return ok;
}

/* contents as process idx must see them; 0 if all is well */
static int check_contents(int idx)
{
	unsigned long p;
	int bad = 0;

	for (p = 0; p < REGION_PAGES; p++) {
		uint64_t seed = (idx == WRITER && written_by_writer(p)) ? 2 : 1;

		if (idx == ZAPPER && p >= ZAP_FIRST && p < ZAP_FIRST + ZAP_PAGES) {
			unsigned long w;

			for (w = 0; w < PS / 8; w++)
				if (((uint64_t *)(region + p * PS))[w])
					break;
			if (w < PS / 8) {
				test_msg("FAILED: process %d: dropped region page %lu is not zero\n", idx, p);
				bad = 1;
				break;
			}
			continue;
		}
		if (!page_ok(region + p * PS, p, seed)) {
			test_msg("FAILED: process %d: region page %lu differs\n", idx, p);
			bad = 1;
			break;
		}
	}
	for (p = 0; p < RO_PAGES; p++)
		if (!page_ok(ro + p * PS, p, 4)) {
			test_msg("FAILED: process %d: read-only page %lu differs\n", idx, p);
			bad = 1;
			break;
		}
	if (!ro_is_readonly()) {
		test_msg("FAILED: process %d: the read-only region is not r--p\n", idx);
		bad = 1;
	}
	for (p = 0; p < HEAP_PAGES; p++)
		if (!page_ok(heap + p * PS, p, 3)) {
			test_msg("FAILED: process %d: heap page %lu differs\n", idx, p);
			bad = 1;
			break;
		}
	return bad;
}

struct mstat {
	unsigned long rss, pss, shared, priv; /* kB */
};

/* the smaps figures of the mapping that contains addr; 0 if found */
static int smaps_of(pid_t pid, const void *addr, struct mstat *m)
{
	char path[64], line[512];
	unsigned long a = (unsigned long)addr, v;
	int in = 0, found = -1;
	FILE *f;

	memset(m, 0, sizeof(*m));
	snprintf(path, sizeof(path), "/proc/%d/smaps", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		char k[64];

		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			if (in)
				break;
			in = s <= a && a < e;
			if (in)
				found = 0;
			continue;
		}
		if (!in || sscanf(line, "%63[^:]: %lu kB", k, &v) != 2)
			continue;
		if (!strcmp(k, "Rss"))
			m->rss = v;
		else if (!strcmp(k, "Pss"))
			m->pss = v;
		else if (!strcmp(k, "Shared_Clean") || !strcmp(k, "Shared_Dirty"))
			m->shared += v;
		else if (!strcmp(k, "Private_Clean") || !strcmp(k, "Private_Dirty"))
			m->priv += v;
	}
	fclose(f);
	return found;
}

/* log every process's figures; with check, also judge them; 0 if all is well */
static int check_sharing(const char *when, int check)
{
	unsigned long size_kb = REGION_PAGES * PS / 1024;
	unsigned long total_rss = 0, total_pss = 0;
	int i, bad = 0;

	for (i = 0; i < NPROC; i++) {
		struct mstat r, h;
		unsigned long slack = PRIV_SLACK_KB + (i == WRITER ? WRITER_PAGES * PS / 1024 : 0);

		if (smaps_of(pids[i], region, &r)) {
			test_msg("FAILED: %s: process %d (pid %d): no region in smaps\n", when, i, pids[i]);
			bad = 1;
			continue;
		}
		smaps_of(pids[i], heap, &h);
		total_rss += r.rss;
		total_pss += r.pss;
		test_msg("%s: process %d (pid %d): region Rss %lu kB Pss %lu kB shared %lu kB private %lu kB; "
			 "heap Rss %lu kB Pss %lu kB private %lu kB\n",
			 when, i, pids[i], r.rss, r.pss, r.shared, r.priv, h.rss, h.pss, h.priv);
		if (!check)
			continue;
		if (r.rss < size_kb * 9 / 10 || r.pss > r.rss / 2 || r.priv > slack) {
			test_msg("FAILED: %s: process %d (pid %d): the region is not shared (Rss %lu kB, Pss %lu kB, "
				 "private %lu kB; want Rss >= %lu, Pss <= Rss/2, private <= %lu)\n",
				 when, i, pids[i], r.rss, r.pss, r.priv, size_kb * 9 / 10, slack);
			bad = 1;
		}
	}
	test_msg("%s: region in all %d processes: Rss %lu kB, Pss %lu kB\n", when, NPROC, total_rss, total_pss);
	return bad;
}

/* one write (atomic in a pipe): the children report concurrently */
static int report(int wfd, int idx)
{
	int msg[2] = { idx, (int)getpid() };

	pids[idx] = getpid();
	return write(wfd, msg, sizeof(msg)) == sizeof(msg) ? 0 : -1;
}

static void __attribute__((noreturn)) leaf(int idx, int wfd)
{
	int i;

	if (idx == WRITER)
		for (i = 0; i < WRITER_PAGES; i++)
			fill_page(region + (17 + i * 509UL) * PS, 17 + i * 509UL, 2);
	if (idx == ZAPPER && madvise(region + ZAP_FIRST * PS, ZAP_PAGES * PS, MADV_DONTNEED))
		_exit(1);
	if (report(wfd, idx))
		_exit(1);
	close(wfd);
	test_waitsig();
	_exit(check_contents(idx) ? 1 : 0);
}

static void __attribute__((noreturn)) reader1(int wfd)
{
	int status, ret;
	pid_t gc = fork();

	if (gc < 0) {
		pr_perror("fork grandchild");
		_exit(1);
	}
	if (gc == 0)
		leaf(GRANDCHILD, wfd);
	if (report(wfd, 1))
		_exit(1);
	close(wfd);
	test_waitsig();
	ret = check_contents(1) ? 1 : 0;
	if (test_wait_exit(gc, &status, WAIT_SECS) || !WIFEXITED(status) || WEXITSTATUS(status)) {
		test_msg("FAILED: the grandchild (pid %d) did not exit 0\n", gc);
		ret = 2;
	}
	_exit(ret);
}

int main(int argc, char **argv)
{
	int pfd[2], i, n, status, failed = 0;
	unsigned long p;
	uint8_t *area;

	test_init(argc, argv);

	area = mmap(NULL, (REGION_PAGES + 2) * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED) {
		pr_perror("mmap");
		return 1;
	}
	if (mprotect(area, PS, PROT_NONE) || mprotect(area + (REGION_PAGES + 1) * PS, PS, PROT_NONE)) {
		pr_perror("mprotect");
		return 1;
	}
	region = area + PS;
	heap = sbrk(HEAP_PAGES * PS + PS);
	if (heap == (void *)-1) {
		pr_perror("sbrk");
		return 1;
	}
	heap = (uint8_t *)(((unsigned long)heap + PS - 1) & ~(PS - 1));
	for (p = 0; p < REGION_PAGES; p++)
		fill_page(region + p * PS, p, 1);
	for (p = 0; p < HEAP_PAGES; p++)
		fill_page(heap + p * PS, p, 3);
	ro = mmap(NULL, RO_PAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ro == MAP_FAILED) {
		pr_perror("mmap");
		return 1;
	}
	for (p = 0; p < RO_PAGES; p++)
		fill_page(ro + p * PS, p, 4);
	if (mprotect(ro, RO_PAGES * PS, PROT_READ)) {
		pr_perror("mprotect");
		return 1;
	}
	if (pipe(pfd)) {
		pr_perror("pipe");
		return 1;
	}
	pids[0] = getpid();
	for (i = 1; i <= WRITER; i++) {
		pid_t pid = fork();

		if (pid < 0) {
			pr_perror("fork child %d", i);
			return 1;
		}
		if (pid == 0) {
			close(pfd[0]);
			if (i == 1)
				reader1(pfd[1]);
			leaf(i, pfd[1]);
		}
	}
	close(pfd[1]);
	for (n = 1; n < NPROC; n++) {
		int msg[2];

		if (read_data(pfd[0], (unsigned char *)msg, sizeof(msg)) || msg[0] < 1 || msg[0] >= NPROC) {
			pr_err("a child did not report (%d of %d)\n", n - 1, NPROC - 1);
			return 1;
		}
		pids[msg[0]] = msg[1];
	}
	close(pfd[0]);
	if (check_sharing("before the dump", 1)) {
		pr_err("the region is not shared before the dump\n");
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (check_sharing("after restore", 1))
		failed = 1;
	if (check_contents(0))
		failed = 1;
	for (i = 1; i <= WRITER; i++)
		if (kill(pids[i], SIGTERM)) {
			test_msg("FAILED: kill(process %d, pid %d): %s\n", i, pids[i], strerror(errno));
			failed = 1;
		}
	if (kill(pids[GRANDCHILD], SIGTERM)) {
		test_msg("FAILED: kill(grandchild, pid %d): %s\n", pids[GRANDCHILD], strerror(errno));
		failed = 1;
	}
	for (i = 1; i <= WRITER; i++) {
		if (test_wait_exit(pids[i], &status, WAIT_SECS)) {
			test_msg("FAILED: waitpid(process %d, pid %d): %s\n", i, pids[i], strerror(errno));
			failed = 1;
		} else if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			test_msg("FAILED: process %d (pid %d) ended with status %#x\n", i, pids[i], status);
			failed = 1;
		}
	}
	if (failed) {
		errno = 0;
		fail("private memory inherited across fork is not shared (or not intact) after restore");
		return 1;
	}
	pass();
	return 0;
}

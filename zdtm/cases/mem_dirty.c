/*
 * mem_dirty: memory that is being written all the time, across an
 * incremental dump, is restored as it was at the last dump.
 *
 * --mb=N MiB (default 16) of private anonymous memory, and a loop that
 * runs until SIGTERM: pass k rewrites every page i with (7 * i + k) % 64
 * == 0 (one page in 64 per pass, 2 ms apart) with a pattern made
 * from (i, k). The number of completed passes is all it takes to know
 * which pass wrote each page last, so after the restore every page is
 * checked in full against the pass that must have written it: a page
 * taken from a parent image though it was written since (or the reverse)
 * shows an older or a newer pass. Pages no pass reached yet
 * hold the initial pattern.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that memory written continuously survives a dump after a pre-dump";

static unsigned int mb = 16;
TEST_OPTION(mb, uint, "MiB of anonymous memory (default 16)", 0);

#define PS 4096UL
#define STRIDE 64

static void fill(uint8_t *page, size_t i, uint64_t pass)
{
	/* pass 0 is the initial fill; pass k >= 1 is the k-th rewrite */
	zdtm_fill_seeded(page, PS, (i << 32) ^ (pass * 0x9e3779b97f4a7c15ULL));
	memcpy(page, &pass, sizeof(pass));
}

/* The last pass (1-based) among 1..done that wrote page i, 0 if none. */
static uint64_t last_pass(size_t i, uint64_t done)
{
	uint64_t k;

	/* pass k (1-based) writes page i when (7 * i + k) % STRIDE == 0 */
	for (k = done; k >= 1 && k + STRIDE > done; k--)
		if ((7 * i + k) % STRIDE == 0)
			return k;
	return 0;
}

int main(int argc, char **argv)
{
	uint8_t expect[PS];
	volatile uint64_t done = 0;
	size_t len, pages, i, bad = 0;
	uint8_t *mem;

	test_init(argc, argv);
	if (mb == 0 || mb > 4096) {
		pr_err("--mb=%u is out of range\n", mb);
		return 1;
	}
	len = (size_t)mb << 20;
	pages = len / PS;
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		pr_perror("mmap %zu bytes", len);
		return 1;
	}
	for (i = 0; i < pages; i++)
		fill(mem + i * PS, i, 0);
	test_msg("%u MiB at %p\n", mb, mem);

	test_daemon();
	while (test_go()) {
		uint64_t k = done + 1;

		for (i = 0; i < pages; i++)
			if ((7 * i + k) % STRIDE == 0)
				fill(mem + i * PS, i, k);
		done = k;
		usleep(2000);
	}

	for (i = 0; i < pages; i++) {
		uint64_t want = last_pass(i, done);

		fill(expect, i, want);
		if (memcmp(mem + i * PS, expect, PS)) {
			uint64_t got;

			memcpy(&got, mem + i * PS, sizeof(got));
			if (bad++ < 10)
				test_msg("page %zu at %p: written by pass %llu, expected pass %llu\n", i,
					 mem + i * PS, (unsigned long long)got, (unsigned long long)want);
		}
	}
	if (bad) {
		errno = 0;
		fail("%zu of %zu pages differ after %llu passes", bad, pages, (unsigned long long)done);
		return 1;
	}
	test_msg("%llu passes\n", (unsigned long long)done);
	pass();
	return 0;
}

/*
 * mem: a large anonymous mapping full of random data survives
 * checkpoint/restore.
 *
 * --mb=N MiB (default 48) are mapped privately. Of every 64 pages, 62 are
 * filled with pseudo-random data from a per-page seed, one is written with
 * zeros (present but zero) and one is never touched (must read as zero).
 * A CRC-32 of the whole area is taken before the checkpoint. After restore
 * every page is regenerated from its seed and compared, and the CRC is
 * recomputed; mismatching pages are reported by index and address.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "zdtmtst.h"

const char *test_doc = "Check that tens of MiB of random anonymous memory are restored";

static unsigned int mb = 48;
TEST_OPTION(mb, uint, "MiB of anonymous memory to fill (default 48)", 0);

#define PS 4096UL

enum { PAGE_RANDOM, PAGE_ZEROED, PAGE_UNTOUCHED };

static int page_kind(size_t i)
{
	switch (i % 64) {
	case 62:
		return PAGE_ZEROED;
	case 63:
		return PAGE_UNTOUCHED;
	default:
		return PAGE_RANDOM;
	}
}

int main(int argc, char **argv)
{
	uint8_t expect[PS], zero[PS];
	uint64_t seed;
	uint32_t crc0, crc1;
	size_t len, pages, i, bad = 0, first_bad = 0;
	uint8_t *mem;

	test_init(argc, argv);

	if (mb == 0 || mb > 16384) {
		pr_err("--mb=%u is out of range\n", mb);
		return 1;
	}
	len = (size_t)mb << 20;
	pages = len / PS;
	seed = ((uint64_t)lrand48() << 31) ^ (uint64_t)lrand48();

	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		pr_perror("mmap %zu bytes", len);
		return 1;
	}
	for (i = 0; i < pages; i++) {
		switch (page_kind(i)) {
		case PAGE_RANDOM:
			zdtm_fill_seeded(mem + i * PS, PS, seed + i);
			break;
		case PAGE_ZEROED:
			memset(mem + i * PS, 0, PS);
			break;
		}
	}
	crc0 = zdtm_crc32(~0u, mem, len);
	test_msg("%u MiB at %p, seed %#llx, crc %08x\n", mb, mem, (unsigned long long)seed, crc0);

	test_daemon();
	test_waitsig();

	memset(zero, 0, sizeof(zero));
	for (i = 0; i < pages; i++) {
		const uint8_t *want = zero;

		if (page_kind(i) == PAGE_RANDOM) {
			zdtm_fill_seeded(expect, PS, seed + i);
			want = expect;
		}
		if (memcmp(mem + i * PS, want, PS)) {
			if (!bad++)
				first_bad = i;
			if (bad <= 10)
				test_msg("page %zu at %p (%s) differs\n", i, mem + i * PS,
					 page_kind(i) == PAGE_RANDOM ? "random" :
					 page_kind(i) == PAGE_ZEROED ? "written with zeros" : "never touched");
		}
	}
	crc1 = zdtm_crc32(~0u, mem, len);

	if (bad || crc0 != crc1) {
		errno = 0;
		fail("%zu of %zu pages differ (first: page %zu at %p); crc %08x, was %08x", bad, pages, first_bad,
		     mem + first_bad * PS, crc1, crc0);
		return 1;
	}
	pass();
	return 0;
}

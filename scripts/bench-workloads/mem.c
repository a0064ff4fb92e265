/*
 * Workload: an anonymous private mapping of SIZE MiB, filled then idle.
 *
 *   mem random MIB [SEED]   every byte pseudo-random (incompressible, no
 *                           zero pages): what an engine must copy;
 *   mem zero MIB            every page written once with zeros, so each is
 *                           a real allocated page whose content is zero
 *                           (not the shared zero page a read fault maps).
 *
 * Ready line: "ready pid=N bytes=N sum=HEX fill_s=SECONDS". On SIGUSR1 the
 * whole mapping is checksummed again and compared with the sum taken at
 * fill time: "ok sum=HEX" or "bad sum=HEX expected=HEX".
 */
#include "bench_lib.c"

#include <time.h>

static uint64_t *mem;
static size_t nwords;
static volatile uint64_t expected_sum;

/* FNV-1a over 64-bit words: order-sensitive, so moved pages show too. */
static uint64_t checksum(const uint64_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

static void verify(struct bench_buf *b)
{
	uint64_t s = checksum(mem, nwords);
	if (s == expected_sum) {
		bench_put(b, "ok sum=");
		bench_put_hex(b, s);
	} else {
		bench_put(b, "bad sum=");
		bench_put_hex(b, s);
		bench_put(b, " expected=");
		bench_put_hex(b, expected_sum);
	}
	bench_put(b, " bytes=");
	bench_put_dec(b, (uint64_t)nwords * 8);
}

int main(int argc, char **argv)
{
	bench_init();
	if (argc < 3)
		bench_die("usage: %s random|zero MIB [SEED]", argv[0]);
	int random_fill = !strcmp(argv[1], "random");
	if (!random_fill && strcmp(argv[1], "zero"))
		bench_die("unknown mode %s (random or zero)", argv[1]);
	size_t bytes = (size_t)strtoull(argv[2], NULL, 0) << 20;
	uint64_t x = argc > 3 ? strtoull(argv[3], NULL, 0) : 0x9e3779b97f4a7c15ULL;
	if (!bytes)
		bench_die("size must be at least 1 MiB");

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		bench_die("mmap %zu bytes: %s", bytes, strerror(errno));
	nwords = bytes / 8;
	if (random_fill) {
		/* xorshift64*: fast, and no page comes out all zero. */
		if (!x)
			x = 1;
		for (size_t i = 0; i < nwords; i++) {
			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
			mem[i] = x * 0x2545f4914f6cdd1dULL;
		}
	} else {
		volatile uint64_t *v = mem;
		for (size_t i = 0; i < nwords; i += 4096 / 8)
			v[i] = 0; /* a write fault: allocates a zeroed page */
	}
	expected_sum = checksum(mem, nwords);
	clock_gettime(CLOCK_MONOTONIC, &t1);

	bench_set_verify(verify);
	bench_ready("pid=%d bytes=%zu sum=%016llx fill_s=%.3f", (int)getpid(), bytes,
		    (unsigned long long)expected_sum,
		    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	bench_pause_forever();
}

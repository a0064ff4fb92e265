/*
 * Workload: a small idle process (a few pages of heap, otherwise only what
 * a dynamically linked C program has).
 *
 * Ready line: "ready pid=N sum=HEX". On SIGUSR1 it checks that its small
 * heap buffer still holds the pattern written at start: "ok sum=HEX" or
 * "bad sum=HEX expected=HEX".
 */
#include "bench_lib.c"

#define SMALL_BYTES (16 * 1024)

static unsigned char *small;
static volatile uint64_t expected_sum;

static uint64_t checksum(void)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < SMALL_BYTES; i++)
		h = (h ^ small[i]) * 0x100000001b3ULL;
	return h;
}

static void verify(struct bench_buf *b)
{
	uint64_t s = checksum();
	bench_put(b, s == expected_sum ? "ok sum=" : "bad sum=");
	bench_put_hex(b, s);
	if (s != expected_sum) {
		bench_put(b, " expected=");
		bench_put_hex(b, expected_sum);
	}
}

int main(void)
{
	bench_init();
	small = malloc(SMALL_BYTES);
	if (!small)
		bench_die("malloc: %s", strerror(errno));
	for (size_t i = 0; i < SMALL_BYTES; i++)
		small[i] = (unsigned char)(i * 131 + 7);
	expected_sum = checksum();
	bench_set_verify(verify);
	bench_ready("pid=%d sum=%016llx", (int)getpid(), (unsigned long long)expected_sum);
	bench_pause_forever();
}

/*
 * The demo workload of scripts/demo: a counter that ticks five times a
 * second into a log file, holding 64 MiB of pseudo-random data whose
 * checksum it verifies when it gets SIGTERM. After a checkpoint and a
 * restore the counter goes on from where it was, and the data is intact.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MB 64

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t sum(const uint64_t *p, size_t n)
{
	uint64_t s = 0;
	for (size_t i = 0; i < n; i++)
		s = s * 31 + p[i];
	return s;
}

int main(int argc, char **argv)
{
	size_t n = (size_t)MB << 17; /* u64 words */
	uint64_t x = 88172645463325252ull, before;
	uint64_t *data;
	FILE *log;
	long tick = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s LOGFILE\n", argv[0]);
		return 2;
	}
	log = fopen(argv[1], "a");
	if (!log)
		return 1;
	setvbuf(log, NULL, _IOLBF, 0);
	data = mmap(NULL, n * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (data == MAP_FAILED)
		return 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		data[i] = x;
	}
	before = sum(data, n);
	signal(SIGTERM, on_term);
	fprintf(log, "pid %d: %d MiB of data, checksum %016llx\n", getpid(), MB, (unsigned long long)before);
	while (!stop) {
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		fprintf(log, "tick %ld\n", ++tick);
	}
	fprintf(log, "pid %d: SIGTERM after %ld ticks: data %s\n", getpid(), tick,
		sum(data, n) == before ? "intact" : "CORRUPTED");
	return 0;
}

/*
 * Helper for scripts/bench (not a workload): the physical limit of the
 * image filesystem for BYTES of data, timed in C so no interpreter
 * overhead counts.
 *
 *   physlimit DIR BYTES [CHUNK]
 *
 * Fills a BYTES buffer with pseudo-random data (untimed; the buffer is
 * resident, like a dumped process's memory), then times, each on a fresh
 * file DIR/physlimit.PID written with CHUNK-byte write() calls (default
 * 1 MiB):
 *   write        open(O_CREAT|O_TRUNC) + writes + close
 *   write_fsync  the same with fsync() before close (what an engine that
 *                fsyncs its images pays)
 *   read_fresh   open + read() the file into a new, never-touched anonymous
 *                mapping + close: the pages are allocated while copying, as
 *                when a restore fills a new process's memory
 *   read_warm    the same into the resident buffer (copy cost only)
 * and prints one "NAME SECONDS" line each. The file is removed at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static char path[4096];

static void die(const char *what)
{
	fprintf(stderr, "physlimit: %s: %s\n", what, strerror(errno));
	unlink(path);
	exit(1);
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double write_file(const char *buf, size_t bytes, size_t chunk, int do_fsync)
{
	unlink(path);
	double t0 = now();
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die("open for writing");
	for (size_t off = 0; off < bytes;) {
		size_t n = bytes - off < chunk ? bytes - off : chunk;
		ssize_t w = write(fd, buf + off, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("write");
		off += (size_t)w;
	}
	if (do_fsync && fsync(fd))
		die("fsync");
	if (close(fd))
		die("close");
	return now() - t0;
}

static double read_file(char *buf, size_t bytes, size_t chunk)
{
	double t0 = now();
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open for reading");
	for (size_t off = 0; off < bytes;) {
		size_t n = bytes - off < chunk ? bytes - off : chunk;
		ssize_t r = read(fd, buf + off, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			die("read");
		off += (size_t)r;
	}
	close(fd);
	return now() - t0;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s DIR BYTES [CHUNK]\n", argv[0]);
		return 2;
	}
	size_t bytes = strtoull(argv[2], NULL, 0);
	size_t chunk = argc > 3 ? strtoull(argv[3], NULL, 0) : 1 << 20;
	if (!bytes || !chunk) {
		fprintf(stderr, "physlimit: BYTES and CHUNK must be positive\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/physlimit.%d", argv[1], (int)getpid());

	uint64_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		die("mmap");
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < bytes / 8; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		buf[i] = x * 0x2545f4914f6cdd1dULL;
	}

	double w = write_file((char *)buf, bytes, chunk, 0);
	double wf = write_file((char *)buf, bytes, chunk, 1);

	char *fresh = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fresh == MAP_FAILED)
		die("mmap");
	double rf = read_file(fresh, bytes, chunk);
	if (memcmp(fresh, buf, bytes)) {
		errno = EIO;
		die("read back different bytes");
	}
	munmap(fresh, bytes);
	double rw = read_file((char *)buf, bytes, chunk);
	unlink(path);

	printf("write %.6f\nwrite_fsync %.6f\nread_fresh %.6f\nread_warm %.6f\n", w, wf, rf, rw);
	return 0;
}

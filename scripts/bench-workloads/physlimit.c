/*
 * Helper for scripts/bench (not a workload): the physical limit of the
 * image filesystem for BYTES of data, timed in C so no interpreter
 * overhead counts.
 *
 *   physlimit DIR BYTES [CHUNK]
 *
 * Fills a BYTES buffer with pseudo-random data (untimed; the buffer is
 * resident, like a dumped process's memory) and writes one untimed file to
 * warm up, then times, with CHUNK-byte write()/read() calls (default 1 MiB)
 * on the file DIR/physlimit.PID:
 *   write        open(O_CREAT|O_TRUNC) a new file + writes + close: the
 *                filesystem allocates its pages, as for a new image file
 *   write_fsync  the same with fsync() before close (what an engine that
 *                fsyncs its images pays)
 *   overwrite    writes over the existing file, whose pages are allocated
 *                already: the copy alone
 *   read_warm    read into the resident buffer: the copy alone
 *   read_fresh   read into a new, never-touched anonymous mapping, right
 *                after unmapping the (touched) buffer, as a restore fills a
 *                new process's memory right after the dump freed the old
 *                one: copy plus page allocation
 * Each of write and write_fsync follows the removal of a BYTES file, so
 * both find the same state of free memory. Prints one "NAME SECONDS" line
 * each; the file is removed at the end.
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

static double write_file(const char *buf, size_t bytes, size_t chunk, int do_fsync, int overwrite)
{
	if (!overwrite)
		unlink(path);
	double t0 = now();
	int fd = open(path, O_WRONLY | O_CREAT | (overwrite ? 0 : O_TRUNC) | O_CLOEXEC, 0600);
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

static uint64_t checksum(const uint64_t *p, size_t bytes)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < bytes / 8; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
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

	uint64_t sum = checksum(buf, bytes);

	write_file((char *)buf, bytes, chunk, 0, 0); /* warm-up, untimed */
	double w = write_file((char *)buf, bytes, chunk, 0, 0);
	double wf = write_file((char *)buf, bytes, chunk, 1, 0);
	double ow = write_file((char *)buf, bytes, chunk, 0, 1);
	double rw = read_file((char *)buf, bytes, chunk);

	munmap(buf, bytes);
	char *fresh = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fresh == MAP_FAILED)
		die("mmap");
	double rf = read_file(fresh, bytes, chunk);
	unlink(path);
	if (checksum((uint64_t *)fresh, bytes) != sum) {
		errno = EIO;
		die("read back different bytes");
	}

	printf("write %.6f\nwrite_fsync %.6f\noverwrite %.6f\nread_warm %.6f\nread_fresh %.6f\n", w, wf, ow, rw, rf);
	return 0;
}

/*
 * Prototype for issue 15's one-copy dump: ways to get 1 GiB of a stopped
 * child's memory into a new tmpfs file, timed.
 *
 *   gcc -O2 -o /tmp/onecopy scripts/proto/onecopy.c -lpthread
 *   /tmp/onecopy DIR MIB [chunk=KIB] MODE [MODE...]
 *
 * The child fills MIB MiB with xorshift bytes and waits (blocked in read,
 * as still as a frozen task); each MODE copies all of it into a new file
 * DIR/proto.PID and prints its wall and CPU time. chunk=KIB sets the
 * batch of the modes that follow (default 2048).
 *
 * MODE:
 *   limit      write() 1 MiB at a time from our own resident buffer
 *              (physlimit's "write new file")
 *   limit2     the same from two threads, pwrite of every other chunk
 *   a1         process_vm_readv a chunk -> buffer, write(), one thread
 *   a2         the same, reader and writer threads, 3 buffers (the
 *              engine before branch onecopy)
 *   b-fault    ftruncate, MAP_SHARED, process_vm_readv straight into it
 *   b-pop      the same, MADV_POPULATE_WRITE per chunk first
 *   b-pop2     populate on a second thread running ahead (2 chunks)
 *   b-falloc   fallocate per chunk, then process_vm_readv into the mapping
 *   c          the child vmsplices 1 MiB at a time into a pipe (as a remote
 *              call would), we splice into the file
 *   b-par      two threads, each populates and copies every other chunk
 *              of the mapping; b-parf the same without populating
 *   d          two threads, each process_vm_readv -> its own buffer ->
 *              pwrite of every other chunk (the engine after onecopy)
 * Every mode checks each page for zero and sums it (a stand-in for the
 * hash) from wherever the copy left it hot (buffer or mapping); c reads
 * the file back through a mapping to do so.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static size_t CHUNK = 2u << 20;
static size_t bytes;
static char *child_mem;
static pid_t child;
static char path[4096];
static int cmd_pipe[2], data_pipe[2];
static volatile uint64_t sink_sum;

static void die(const char *w)
{
	fprintf(stderr, "proto: %s: %s\n", w, strerror(errno));
	if (child > 0)
		kill(child, SIGKILL);
	exit(1);
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* zero check + a sum per page, as the engine's zero check and hash */
static size_t scan(const char *p, size_t n)
{
	size_t nonzero = 0;
	uint64_t s = 0;
	for (size_t off = 0; off < n; off += 4096) {
		const uint64_t *w = (const uint64_t *)(p + off);
		uint64_t o = 0;
		for (int i = 0; i < 512; i++)
			o |= w[i];
		if (o) {
			nonzero++;
			for (int i = 0; i < 512; i++)
				s += w[i] * 31 + i;
		}
	}
	sink_sum += s;
	return nonzero;
}

static void readv_chunk(char *dst, size_t off, size_t n)
{
	struct iovec l = { dst, n }, r = { child_mem + off, n };
	ssize_t got = process_vm_readv(child, &l, 1, &r, 1, 0);
	if (got != (ssize_t)n)
		die("process_vm_readv");
}

static int new_file(void)
{
	unlink(path);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		die("open");
	return fd;
}

static void wr(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			die("write");
		p += w;
		n -= w;
	}
}

static double mode_limit(void)
{
	char *buf = malloc(bytes);
	memset(buf, 1, bytes);
	for (size_t off = 0; off < bytes; off += CHUNK)
		readv_chunk(buf + off, off, CHUNK);
	double t0 = now();
	int fd = new_file();
	for (size_t off = 0; off < bytes; off += 1 << 20)
		wr(fd, buf + off, 1 << 20);
	close(fd);
	double t = now() - t0;
	free(buf);
	return t;
}

static char *l2_buf;
static int l2_fd;
static void *l2_worker(void *arg)
{
	size_t first = (size_t)arg;
	for (size_t off = first * CHUNK; off < bytes; off += 2 * CHUNK)
		if (pwrite(l2_fd, l2_buf + off, CHUNK, off) != (ssize_t)CHUNK)
			die("pwrite");
	return NULL;
}

static double mode_limit2(void)
{
	l2_buf = malloc(bytes);
	memset(l2_buf, 1, bytes);
	for (size_t off = 0; off < bytes; off += CHUNK)
		readv_chunk(l2_buf + off, off, CHUNK);
	double t0 = now();
	l2_fd = new_file();
	pthread_t a, b;
	pthread_create(&a, NULL, l2_worker, (void *)0);
	pthread_create(&b, NULL, l2_worker, (void *)1);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	close(l2_fd);
	double t = now() - t0;
	free(l2_buf);
	return t;
}

static double mode_a1(void)
{
	char *buf = aligned_alloc(4096, CHUNK);
	memset(buf, 1, CHUNK);
	double t0 = now();
	int fd = new_file();
	for (size_t off = 0; off < bytes; off += CHUNK) {
		readv_chunk(buf, off, CHUNK);
		scan(buf, CHUNK);
		wr(fd, buf, CHUNK);
	}
	close(fd);
	double t = now() - t0;
	free(buf);
	return t;
}

/* a2: reader/writer with 3 buffers */
static char *bufs[3];
static int to_writer[2], to_reader[2];
static int a2_fd;

static void *a2_writer(void *arg)
{
	(void)arg;
	int i;
	while (read(to_writer[0], &i, sizeof i) == sizeof i) {
		if (i < 0)
			break;
		wr(a2_fd, bufs[i], CHUNK);
		if (write(to_reader[1], &i, sizeof i) != sizeof i)
			die("pipe");
	}
	return NULL;
}

static double mode_a2(void)
{
	for (int i = 0; i < 3; i++) {
		bufs[i] = aligned_alloc(4096, CHUNK);
		memset(bufs[i], 1, CHUNK);
	}
	if (pipe(to_writer) || pipe(to_reader))
		die("pipe");
	double t0 = now();
	a2_fd = new_file();
	pthread_t th;
	pthread_create(&th, NULL, a2_writer, NULL);
	for (int i = 0; i < 3; i++)
		if (write(to_reader[1], &i, sizeof i) != sizeof i)
			die("pipe");
	for (size_t off = 0; off < bytes; off += CHUNK) {
		int i;
		if (read(to_reader[0], &i, sizeof i) != sizeof i)
			die("pipe");
		readv_chunk(bufs[i], off, CHUNK);
		scan(bufs[i], CHUNK);
		if (write(to_writer[1], &i, sizeof i) != sizeof i)
			die("pipe");
	}
	int stop = -1;
	if (write(to_writer[1], &stop, sizeof stop) != sizeof stop)
		die("pipe");
	pthread_join(th, NULL);
	close(a2_fd);
	double t = now() - t0;
	for (int i = 0; i < 3; i++)
		free(bufs[i]);
	close(to_writer[0]);
	close(to_writer[1]);
	close(to_reader[0]);
	close(to_reader[1]);
	return t;
}

/* b: into a MAP_SHARED mapping of the file */
static char *b_map;

/* A new file of `bytes`, mapped shared into b_map (modes b and b-par). */
static int map_new_file(void)
{
	int fd = new_file();
	if (ftruncate(fd, bytes))
		die("ftruncate");
	b_map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (b_map == MAP_FAILED)
		die("mmap");
	return fd;
}

static volatile size_t b_populated;
static volatile size_t b_consumed;

static void *b_populator(void *arg)
{
	(void)arg;
	for (size_t off = 0; off < bytes; off += CHUNK) {
		while (off >= b_consumed + 2 * CHUNK)
			sched_yield();
		if (madvise(b_map + off, CHUNK, MADV_POPULATE_WRITE))
			die("madvise populate");
		__atomic_store_n(&b_populated, off + CHUNK, __ATOMIC_RELEASE);
	}
	return NULL;
}

static double mode_b(int how)
{
	double t0 = now();
	int fd = map_new_file();
	pthread_t th;
	b_populated = 0;
	b_consumed = 0;
	if (how == 2)
		pthread_create(&th, NULL, b_populator, NULL);
	for (size_t off = 0; off < bytes; off += CHUNK) {
		if (how == 1 && madvise(b_map + off, CHUNK, MADV_POPULATE_WRITE))
			die("madvise populate");
		if (how == 3 && fallocate(fd, 0, off, CHUNK))
			die("fallocate");
		if (how == 2)
			while (__atomic_load_n(&b_populated, __ATOMIC_ACQUIRE) < off + CHUNK)
				sched_yield();
		readv_chunk(b_map + off, off, CHUNK);
		scan(b_map + off, CHUNK);
		b_consumed = off + CHUNK;
	}
	if (how == 2)
		pthread_join(th, NULL);
	munmap(b_map, bytes);
	close(fd);
	return now() - t0;
}

/* b-par: two threads, each populates and copies every other chunk into the mapping */
static int bp_how;
static void *bpar_worker(void *arg)
{
	size_t first = (size_t)arg;
	for (size_t off = first * CHUNK; off < bytes; off += 2 * CHUNK) {
		if (bp_how && madvise(b_map + off, CHUNK, MADV_POPULATE_WRITE))
			die("madvise populate");
		readv_chunk(b_map + off, off, CHUNK);
		scan(b_map + off, CHUNK);
	}
	return NULL;
}

static double mode_bpar(int how)
{
	double t0 = now();
	int fd = map_new_file();
	bp_how = how;
	pthread_t a, b;
	pthread_create(&a, NULL, bpar_worker, (void *)0);
	pthread_create(&b, NULL, bpar_worker, (void *)1);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	double t1 = now();
	munmap(b_map, bytes);
	close(fd);
	fprintf(stderr, "  (b-par: munmap+close %.3f s)\n", now() - t1);
	return now() - t0;
}

/* c: the child vmsplices, we splice */
static void child_vmsplice_loop(void)
{
	size_t off;
	while (read(cmd_pipe[0], &off, sizeof off) == sizeof off) {
		size_t n = 1 << 20;
		struct iovec v = { child_mem + off, n };
		while (v.iov_len) {
			ssize_t r = vmsplice(data_pipe[1], &v, 1, 0);
			if (r <= 0)
				_exit(3);
			v.iov_base = (char *)v.iov_base + r;
			v.iov_len -= r;
		}
	}
	_exit(0);
}

static double mode_c(void)
{
	double t0 = now();
	int fd = new_file();
	for (size_t off = 0; off < bytes; off += 1 << 20) {
		if (write(cmd_pipe[1], &off, sizeof off) != sizeof off)
			die("cmd");
		size_t left = 1 << 20;
		while (left) {
			ssize_t r = splice(data_pipe[0], NULL, fd, NULL, left, SPLICE_F_MOVE);
			if (r <= 0)
				die("splice");
			left -= r;
		}
	}
	double tc = now() - t0;
	char *m = mmap(NULL, bytes, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
	for (size_t off = 0; off < bytes; off += CHUNK)
		scan(m + off, CHUNK);
	munmap(m, bytes);
	close(fd);
	double t = now() - t0;
	fprintf(stderr, "  (c: copy %.3f s, scan from the file %.3f s)\n", tc, t - tc);
	return t;
}

/* d: two threads, each process_vm_readv + pwrite of every other chunk */
static int d_fd;
static void *d_worker(void *arg)
{
	size_t first = (size_t)arg;
	char *buf = aligned_alloc(4096, CHUNK);
	memset(buf, 1, CHUNK);
	for (size_t off = first * CHUNK; off < bytes; off += 2 * CHUNK) {
		readv_chunk(buf, off, CHUNK);
		scan(buf, CHUNK);
		size_t done = 0;
		while (done < CHUNK) {
			ssize_t w = pwrite(d_fd, buf + done, CHUNK - done, off + done);
			if (w <= 0)
				die("pwrite");
			done += w;
		}
	}
	free(buf);
	return NULL;
}

static double mode_d(void)
{
	double t0 = now();
	d_fd = new_file();
	pthread_t a, b;
	pthread_create(&a, NULL, d_worker, (void *)0);
	pthread_create(&b, NULL, d_worker, (void *)1);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	close(d_fd);
	return now() - t0;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: proto DIR MIB MODE...\n");
		return 2;
	}
	bytes = strtoull(argv[2], NULL, 0) << 20;
	snprintf(path, sizeof path, "%s/proto.%d", argv[1], getpid());
	child_mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (child_mem == MAP_FAILED)
		die("mmap");
	if (pipe(cmd_pipe) || pipe(data_pipe))
		die("pipe");
	if (fcntl(data_pipe[0], F_SETPIPE_SZ, 1 << 20) < 0)
		die("F_SETPIPE_SZ");
	int ready[2];
	if (pipe(ready))
		die("pipe");
	child = fork();
	if (child == 0) {
		uint64_t *w = (uint64_t *)child_mem, x = 0x9e3779b97f4a7c15ULL;
		for (size_t i = 0; i < bytes / 8; i++) {
			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
			w[i] = x * 0x2545f4914f6cdd1dULL;
		}
		if (write(ready[1], "r", 1) != 1)
			_exit(2);
		child_vmsplice_loop();
	}
	/* our own copy of the mapping is untouched: no memory of ours */
	munmap(child_mem, bytes);
	char c;
	if (read(ready[0], &c, 1) != 1)
		die("child");
	for (int i = 3; i < argc; i++) {
		const char *m = argv[i];
		double t;
		if (!strncmp(m, "chunk=", 6)) {
			CHUNK = strtoull(m + 6, NULL, 0) << 10;
			printf("chunk %zu KiB\n", CHUNK >> 10);
			continue;
		}
		struct rusage r0, r1;
		getrusage(RUSAGE_SELF, &r0);
		if (!strcmp(m, "limit"))
			t = mode_limit();
		else if (!strcmp(m, "limit2"))
			t = mode_limit2();
		else if (!strcmp(m, "a1"))
			t = mode_a1();
		else if (!strcmp(m, "a2"))
			t = mode_a2();
		else if (!strcmp(m, "b-fault"))
			t = mode_b(0);
		else if (!strcmp(m, "b-pop"))
			t = mode_b(1);
		else if (!strcmp(m, "b-pop2"))
			t = mode_b(2);
		else if (!strcmp(m, "b-falloc"))
			t = mode_b(3);
		else if (!strcmp(m, "b-par"))
			t = mode_bpar(1);
		else if (!strcmp(m, "b-parf"))
			t = mode_bpar(0);
		else if (!strcmp(m, "c"))
			t = mode_c();
		else if (!strcmp(m, "d"))
			t = mode_d();
		else {
			fprintf(stderr, "unknown mode %s\n", m);
			continue;
		}
		unlink(path);
		getrusage(RUSAGE_SELF, &r1);
		double us = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6;
		double sy = (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
		printf("%-9s %.3f  cpu %.3f (user %.3f sys %.3f)\n", m, t, us + sy, us, sy);
		fflush(stdout);
	}
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	return 0;
}

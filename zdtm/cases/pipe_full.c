/*
 * pipe_full: pipes filled to capacity in O_NONBLOCK mode, with sizes set by
 * F_SETPIPE_SZ, keep all their data and their size.
 *
 *   big    1 MiB, filled with 1000-byte writes until EAGAIN (the pages
 *          are not full: each holds four writes)
 *   small  16 KiB, filled with 1-byte writes until EAGAIN
 *   one    one page, filled with 5000-byte writes (short writes) until EAGAIN
 *   empty  1 MiB, nothing in it: its size is all there is to keep
 *
 * Before the dump every pipe's size (F_GETPIPE_SZ) and byte count (FIONREAD)
 * are noted. After SIGTERM: both ends keep O_NONBLOCK, the sizes and counts
 * are the same, the data reads back in order, the pipe is empty then
 * (EAGAIN), and it takes as much data again as its size.
 *
 * --kind=child: a child holds both ends of every pipe too (the pipes are
 * made by the engine and shared), and exits on SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that full non-blocking pipes with set sizes keep their data and size";

static char *kind;
TEST_OPTION(kind, string, "child: the pipes are shared with a child", 0);

struct p {
	const char *name;
	int size, chunk;
	int fds[2];
	int got_size, bytes;
	uint8_t *data;
};

static struct p pipes[] = {
	{ "big", 1 << 20, 1000 },
	{ "small", 16 << 10, 1 },
	{ "one", 4096, 5000 },
	{ "empty", 1 << 20, 0 },
};
#define NPIPES (int)(sizeof(pipes) / sizeof(pipes[0]))

static int queued(int fd)
{
	int n = -1;

	if (ioctl(fd, FIONREAD, &n))
		return -1;
	return n;
}

static int failed;

static int fill(struct p *p, int seed)
{
	uint8_t *chunk = malloc(p->chunk + 1);
	int total = 0;

	if (pipe2(p->fds, O_NONBLOCK)) {
		pr_perror("pipe2 %s", p->name);
		return -1;
	}
	if (fcntl(p->fds[1], F_SETPIPE_SZ, p->size) < 0) {
		pr_perror("F_SETPIPE_SZ %s %d", p->name, p->size);
		return -1;
	}
	p->got_size = fcntl(p->fds[1], F_GETPIPE_SZ);
	p->data = malloc(p->got_size + p->chunk);
	if (!chunk || !p->data)
		return -1;
	while (p->chunk) {
		ssize_t n;

		zdtm_fill_seeded(chunk, p->chunk, seed++);
		n = write(p->fds[1], chunk, p->chunk);
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0 || total + n > p->got_size) {
			pr_perror("write %s after %d bytes", p->name, total);
			return -1;
		}
		memcpy(p->data + total, chunk, n);
		total += n;
	}
	free(chunk);
	p->bytes = total;
	if (queued(p->fds[0]) != total) {
		pr_err("%s: %d queued, %d written\n", p->name, queued(p->fds[0]), total);
		return -1;
	}
	test_msg("%s: size %d, %d bytes queued\n", p->name, p->got_size, total);
	return 0;
}

static void check(struct p *p)
{
	uint8_t *buf = malloc(p->got_size + 1), *junk;
	int got = 0, i, n;

	for (i = 0; i < 2; i++)
		test_check(fcntl(p->fds[i], F_GETFL) & O_NONBLOCK, "%s: end %d lost O_NONBLOCK", p->name, i);
	test_check(fcntl(p->fds[1], F_GETPIPE_SZ) == p->got_size, "%s: size %d, expected %d", p->name,
		   fcntl(p->fds[1], F_GETPIPE_SZ), p->got_size);
	test_check(queued(p->fds[0]) == p->bytes, "%s: %d bytes queued, expected %d", p->name, queued(p->fds[0]),
		   p->bytes);
	while (buf && got <= p->got_size) {
		ssize_t r = read(p->fds[0], buf + got, p->got_size + 1 - got);

		if (r <= 0)
			break;
		got += r;
	}
	test_check(got == p->bytes && !memcmp(buf, p->data, got), "%s: read %d bytes back, expected %d%s", p->name,
		   got, p->bytes, got == p->bytes ? ", with wrong contents" : "");
	n = read(p->fds[0], buf, 1);
	test_check(n < 0 && errno == EAGAIN, "%s: read after the data gave %d (errno %d), expected EAGAIN", p->name,
		   n, errno);
	/* as much as its size again, in whole pages */
	junk = calloc(1, p->got_size);
	n = junk ? write(p->fds[1], junk, p->got_size) : -1;
	test_check(n == p->got_size, "%s: the empty pipe took %d bytes, expected %d", p->name, n, p->got_size);
	free(junk);
	free(buf);
}

int main(int argc, char **argv)
{
	pid_t pid = -1;
	int i, status;

	test_init(argc, argv);

	for (i = 0; i < NPIPES; i++)
		if (fill(&pipes[i], 1000 * (i + 1)))
			return 1;

	if (kind && !strcmp(kind, "child")) {
		pid = fork();
		if (pid < 0) {
			pr_perror("fork");
			return 1;
		}
		if (pid == 0) {
			test_waitsig();
			_exit(0);
		}
	}

	test_daemon();
	test_waitsig();

	for (i = 0; i < NPIPES; i++)
		check(&pipes[i]);

	if (pid > 0) {
		kill(pid, SIGTERM);
		if (test_wait_exit(pid, &status, 15))
			test_msg("FAILED: waitpid(child %d): %s\n", pid, strerror(errno)), failed = 1;
	}

	if (failed) {
		errno = 0;
		fail("full pipes were not restored with their data and size");
		return 1;
	}
	pass();
	return 0;
}

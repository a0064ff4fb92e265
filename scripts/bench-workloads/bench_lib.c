/*
 * The protocol between scripts/bench and its workload programs. Each
 * workload does `#include "bench_lib.c"` (one translation unit, no header).
 *
 * Environment given by the bench:
 *   BENCH_READY_FD  a pipe's write end. The program writes one line
 *                   "ready KEY=VALUE ..." (or "error: ...") and closes it.
 *                   The bench waits for end-of-file, so every process of
 *                   the workload must close it (a multi-process workload
 *                   closes it in every child); EOF is the readiness signal,
 *                   and no pipe is left open to trouble the dump.
 *   BENCH_RESULT    a path. On SIGUSR1 (sent after a restore) the program
 *                   checks itself and writes "ok KEY=VALUE ..." or
 *                   "bad REASON" there (written to PATH.tmp, then renamed,
 *                   so the bench never reads half a line). The check runs
 *                   inside the signal handler with async-signal-safe calls
 *                   only, so no signal can be lost between a flag test and
 *                   pause(); if the engine failed to restore the handler,
 *                   SIGUSR1 kills the program and no result appears.
 *
 * stdin, stdout and stderr are /dev/null; errors before readiness go to
 * the ready pipe.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Not every workload uses every helper. */
#pragma GCC diagnostic ignored "-Wunused-function"

static int bench_ready_fd = -1;
static char bench_result_path[4096];
static char bench_result_tmp[4096 + 8];

static void bench_write_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

static void bench_vline(const char *prefix, const char *fmt, va_list ap)
{
	char line[1024];
	int n = snprintf(line, sizeof(line), "%s", prefix);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	bench_write_all(bench_ready_fd >= 0 ? bench_ready_fd : 2, line, (size_t)n);
}

/* Report a failure before readiness and exit. */
static void bench_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bench_vline("error: ", fmt, ap);
	va_end(ap);
	exit(2);
}

static void bench_init(void)
{
	const char *fd = getenv("BENCH_READY_FD");
	const char *res = getenv("BENCH_RESULT");
	if (!fd || !res)
		bench_die("BENCH_READY_FD and BENCH_RESULT must be set (run me from scripts/bench)");
	bench_ready_fd = atoi(fd);
	if (fcntl(bench_ready_fd, F_GETFD) < 0) {
		bench_ready_fd = -1;
		bench_die("BENCH_READY_FD=%s is not an open descriptor", fd);
	}
	if (strlen(res) >= sizeof(bench_result_path))
		bench_die("BENCH_RESULT is too long");
	strcpy(bench_result_path, res);
	snprintf(bench_result_tmp, sizeof(bench_result_tmp), "%s.tmp", res);
}

/* Say "ready ..." and close the pipe: the bench starts dumping at EOF. */
static void bench_ready(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bench_vline("ready ", fmt, ap);
	va_end(ap);
	close(bench_ready_fd);
	bench_ready_fd = -1;
}

/* Async-signal-safe result building (no stdio in the handler). */
struct bench_buf {
	char s[512];
	size_t n;
};

static void bench_put(struct bench_buf *b, const char *s)
{
	while (*s && b->n < sizeof(b->s) - 2)
		b->s[b->n++] = *s++;
}

static void bench_put_hex(struct bench_buf *b, uint64_t v)
{
	char t[17];
	for (int i = 15; i >= 0; i--, v >>= 4)
		t[i] = "0123456789abcdef"[v & 15];
	t[16] = 0;
	bench_put(b, t);
}

static void bench_put_dec(struct bench_buf *b, uint64_t v)
{
	char t[21];
	int i = 20;
	t[i] = 0;
	do {
		t[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	bench_put(b, t + i);
}

static void bench_write_result(struct bench_buf *b)
{
	b->s[b->n++] = '\n';
	int fd = open(bench_result_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	bench_write_all(fd, b->s, b->n);
	close(fd);
	rename(bench_result_tmp, bench_result_path);
}

static void (*bench_verify_fn)(struct bench_buf *);

static void bench_on_usr1(int sig)
{
	(void)sig;
	int saved = errno;
	struct bench_buf b = {.n = 0};
	bench_verify_fn(&b);
	bench_write_result(&b);
	errno = saved;
}

/*
 * Install the SIGUSR1 handler (before bench_ready): it runs verify(), which
 * appends "ok ..." or "bad ..." to the buffer, and writes the result file.
 */
static void bench_set_verify(void (*verify)(struct bench_buf *))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	bench_verify_fn = verify;
	sa.sa_handler = bench_on_usr1;
	sigfillset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGUSR1, &sa, NULL))
		bench_die("sigaction: %s", strerror(errno));
}

/* Sleep until killed; signals are handled meanwhile. */
static void bench_pause_forever(void)
{
	for (;;)
		pause();
}

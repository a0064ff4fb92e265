/* msg.c - the log of a zdtm program: setup and message helpers. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

int test_log_init(const char *fname, const char *suffix)
{
	char path[PATH_MAX];
	int fd;

	if (snprintf(path, sizeof(path), "%s%s", fname, suffix) >= (int)sizeof(path)) {
		fprintf(stderr, "Log file name %s%s is too long\n", fname, suffix);
		return -1;
	}

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "Can't create the log %s: %s\n", path, strerror(errno));
		return -1;
	}

	/* dup2 clears FD_CLOEXEC: the log stays stdout/stderr across exec */
	if (dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0) {
		fprintf(stderr, "Can't make %s stdout/stderr: %s\n", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (fd > STDERR_FILENO)
		close(fd);

	setvbuf(stdout, NULL, _IONBF, 0);
	setvbuf(stderr, NULL, _IONBF, 0);
	return 0;
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		buf += n;
		len -= n;
	}
}

static size_t clamp(int n, size_t size)
{
	if (n < 0)
		return 0;
	if ((size_t)n >= size)
		return size - 1;
	return n;
}

void test_msg(const char *format, ...)
{
	char buf[TEST_MSG_BUFFER_SIZE];
	int saved_errno = errno;
	struct timeval tv;
	struct tm tm;
	size_t off = 0;
	va_list args;

	gettimeofday(&tv, NULL);
	if (localtime_r(&tv.tv_sec, &tm))
		off = strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
	off += clamp(snprintf(buf + off, sizeof(buf) - off, ".%03ld: %5d: ",
			      (long)(tv.tv_usec / 1000), (int)getpid()), sizeof(buf) - off);

	errno = saved_errno; /* for %m */
	va_start(args, format);
	off += clamp(vsnprintf(buf + off, sizeof(buf) - off, format, args), sizeof(buf) - off);
	va_end(args);

	write_all(STDERR_FILENO, buf, off);
	errno = saved_errno;
}

void test_verdict(const char *format, ...)
{
	char buf[TEST_MSG_BUFFER_SIZE];
	int saved_errno = errno;
	size_t off;
	va_list args;

	va_start(args, format);
	off = clamp(vsnprintf(buf, sizeof(buf), format, args), sizeof(buf));
	va_end(args);

	/* a verdict is one whole line even when the message was truncated */
	if (off && buf[off - 1] != '\n') {
		if (off == sizeof(buf) - 1)
			off--;
		buf[off++] = '\n';
	}
	write_all(STDERR_FILENO, buf, off);
	errno = saved_errno;
}

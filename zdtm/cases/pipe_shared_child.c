/*
 * pipe_shared_child: pipes between a parent and its child, with data in
 * flight, survive checkpoint/restore.
 *
 *   down   parent -> child; its size is raised to 256 KiB (F_SETPIPE_SZ)
 *          and the parent writes 70000 bytes (more than a default pipe
 *          holds) that the child does not read before the dump
 *   up     child -> parent; the child writes 3000 bytes that the parent does
 *          not read before the dump
 *   both   a pipe whose write end both hold (the same open file: inherited
 *          through fork) and whose read end only the parent holds; each
 *          writes one 64-byte record into it before the dump (the parent
 *          before the fork)
 * Every process closes the ends it does not use before the dump.
 *
 * After SIGTERM:
 *  - the parent checks F_GETPIPE_SZ of down, the bytes queued in up and
 *    both (FIONREAD), reads the 3000 bytes of up and checks them;
 *  - it sends SIGTERM to the child, which checks F_GETPIPE_SZ and reads the
 *    70000 bytes of down and checks them, then echoes: it reads a 100-byte
 *    message from down and writes it back, reversed, into up; then it
 *    writes a second record into both, closes everything and exits 0 if all
 *    was well;
 *  - the parent sends the message, checks the echo, then reads both to
 *    EOF: its own record, the child's first record, and the child's record
 *    written after restore, then EOF (once the parent closed its own write
 *    end and the child exited: the write end really is one shared file).
 *
 * --sabotage=WHAT (debug): data (the child expects other data in down),
 * size (the parent shrinks down), extra (the child writes one more record
 * into both).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that pipes between a parent and a child keep their data in flight";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (data, size, extra)", 0);

static int sabotaged(const char *what)
{
	return sabotage && !strcmp(sabotage, what);
}

#define DOWN_SIZE (256 * 1024)
#define DOWN_BYTES 70000
#define UP_BYTES 3000
#define MSG_BYTES 100
#define REC_BYTES 64
#define WAIT_SECS 15

static uint8_t down_data[DOWN_BYTES], up_data[UP_BYTES];

static void record(uint8_t *rec, int n)
{
	zdtm_fill_seeded(rec, REC_BYTES, 5000 + n);
}

static int queued(int fd)
{
	int n = -1;

	if (ioctl(fd, FIONREAD, &n))
		return -1;
	return n;
}

/* a read that gives up after WAIT_SECS: the data may never come */
static int read_timed(int fd, uint8_t *buf, int len)
{
	int i, got = 0;

	if (set_nonblock(fd, 1))
		return -1;
	for (i = 0; got < len && i < WAIT_SECS * 100; i++) {
		ssize_t n = read(fd, buf + got, len - got);

		if (n > 0) {
			got += n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			break;
		usleep(10000);
	}
	set_nonblock(fd, 0);
	return got;
}

static int failed;

static void __attribute__((noreturn)) child(int down_r, int up_w, int both_w)
{
	uint8_t buf[DOWN_BYTES], msg[MSG_BYTES], rev[MSG_BYTES], rec[REC_BYTES];
	int n, i;

	zdtm_fill_seeded(up_data, UP_BYTES, 2);
	record(rec, 2);
	if (write_data(both_w, rec, REC_BYTES) || write_data(up_w, up_data, UP_BYTES))
		_exit(1);
	/* the parent waits for the bytes in up: all set up by then */
	test_waitsig();

	test_check(fcntl(down_r, F_GETPIPE_SZ) == DOWN_SIZE, "child: down holds %d bytes, expected %d",
	      fcntl(down_r, F_GETPIPE_SZ), DOWN_SIZE);
	if (sabotaged("data"))
		down_data[DOWN_BYTES / 2] ^= 1;
	n = read_timed(down_r, buf, DOWN_BYTES);
	test_check(n >= DOWN_BYTES && !memcmp(buf, down_data, DOWN_BYTES),
	      "child: read %d of the %d bytes in flight in down%s", n, DOWN_BYTES,
	      n >= DOWN_BYTES ? ", with wrong contents" : "");

	/* the echo, after restore */
	n = read_timed(down_r, msg, MSG_BYTES);
	test_check(n == MSG_BYTES, "child: read %d bytes of the message", n);
	for (i = 0; i < MSG_BYTES; i++)
		rev[i] = msg[MSG_BYTES - 1 - i];
	if (write_data(up_w, rev, MSG_BYTES))
		failed = 1;
	record(rec, 3);
	if (write_data(both_w, rec, REC_BYTES))
		failed = 1;
	if (sabotaged("extra") && write_data(both_w, rec, REC_BYTES))
		failed = 1;
	close(down_r);
	close(up_w);
	close(both_w);
	_exit(failed);
}

int main(int argc, char **argv)
{
	int down[2], up[2], both[2], status, n, i;
	uint8_t buf[UP_BYTES], msg[MSG_BYTES], recs[4 * REC_BYTES], rec[REC_BYTES];
	pid_t pid;

	test_init(argc, argv);

	if (pipe(down) || pipe(up) || pipe(both)) {
		pr_perror("pipe");
		return 1;
	}
	if (fcntl(down[1], F_SETPIPE_SZ, DOWN_SIZE) < 0) {
		pr_perror("F_SETPIPE_SZ %d", DOWN_SIZE);
		return 1;
	}
	zdtm_fill_seeded(down_data, DOWN_BYTES, 1);
	/* the parent's record first, so that the order in both is known */
	record(rec, 1);
	if (write_data(both[1], rec, REC_BYTES))
		return 1;

	pid = fork();
	if (pid < 0) {
		pr_perror("fork");
		return 1;
	}
	if (pid == 0) {
		close(down[1]);
		close(up[0]);
		close(both[0]);
		child(down[0], up[1], both[1]);
	}
	close(down[0]);
	close(up[1]);

	zdtm_fill_seeded(up_data, UP_BYTES, 2);
	if (write_data(down[1], down_data, DOWN_BYTES))
		return 1;
	/* the child has written everything once its bytes are all in up */
	for (i = 0; queued(up[0]) < UP_BYTES || queued(both[0]) < 2 * REC_BYTES; i++) {
		if (i == WAIT_SECS * 100) {
			pr_err("the child did not write its data (%d bytes in up)\n", queued(up[0]));
			kill(pid, SIGKILL);
			return 1;
		}
		usleep(10000);
	}
	test_msg("in flight: %d bytes down, %d up, %d in both\n", DOWN_BYTES, queued(up[0]), queued(both[0]));

	test_daemon();
	test_waitsig();

	if (sabotaged("size"))
		fcntl(down[1], F_SETPIPE_SZ, 128 * 1024);
	test_check(fcntl(down[1], F_GETPIPE_SZ) == DOWN_SIZE, "parent: down holds %d bytes, expected %d",
	      fcntl(down[1], F_GETPIPE_SZ), DOWN_SIZE);
	test_check(queued(up[0]) == UP_BYTES && queued(both[0]) == 2 * REC_BYTES,
	      "parent: %d bytes in up and %d in both, expected %d and %d", queued(up[0]), queued(both[0]), UP_BYTES,
	      2 * REC_BYTES);
	n = read_timed(up[0], buf, UP_BYTES);
	test_check(n == UP_BYTES && !memcmp(buf, up_data, UP_BYTES), "parent: read %d of the %d bytes in flight in up%s",
	      n, UP_BYTES, n == UP_BYTES ? ", with wrong contents" : "");

	if (kill(pid, SIGTERM))
		test_msg("FAILED: kill(child %d): %s\n", pid, strerror(errno)), failed = 1;
	zdtm_fill_seeded(msg, MSG_BYTES, 3);
	if (write_data(down[1], msg, MSG_BYTES))
		failed = 1;
	n = read_timed(up[0], buf, MSG_BYTES);
	test_check(n == MSG_BYTES, "parent: the echo is %d bytes, expected %d", n, MSG_BYTES);
	for (i = 0; i < n && i < MSG_BYTES; i++)
		if (buf[i] != msg[MSG_BYTES - 1 - i]) {
			test_msg("FAILED: parent: the echo differs at byte %d\n", i);
			failed = 1;
			break;
		}

	if (test_wait_exit(pid, &status, WAIT_SECS))
		test_msg("FAILED: waitpid(child %d): %s\n", pid, strerror(errno)), failed = 1;
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child ended with status %#x", status);

	close(both[1]);
	n = read_timed(both[0], recs, sizeof(recs));
	test_check(n == 3 * REC_BYTES, "parent: %d bytes in both until EOF, expected %d", n, 3 * REC_BYTES);
	if (n == 3 * REC_BYTES) {
		for (i = 0; i < 3; i++) {
			record(rec, i + 1);
			test_check(!memcmp(recs + i * REC_BYTES, rec, REC_BYTES), "parent: record %d of both is wrong",
			      i + 1);
		}
	}

	if (failed) {
		errno = 0;
		fail("pipes between the processes were not restored correctly");
		return 1;
	}
	pass();
	return 0;
}

/*
 * timens: a tree in a time namespace of its own keeps its clock offsets.
 *
 * Before the test task exists, the launcher makes a time namespace for
 * its children with CLOCK_MONOTONIC 1000 days and CLOCK_BOOTTIME 2000 days
 * ahead, so the test task, the tree's root, is born inside it.
 *
 * After SIGTERM the task checks that it is still in that namespace (not
 * the launcher's), that both clocks still read at least their offsets
 * ahead and never went back from what they read before the dump.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

const char *test_doc = "Check that time namespace offsets survive";

#define DAY 86400LL
#define MONO_OFF (1000 * DAY)
#define BOOT_OFF (2000 * DAY)

static long long secs(clockid_t c)
{
	struct timespec ts;

	if (clock_gettime(c, &ts))
		return -1;
	return ts.tv_sec;
}

static ino_t time_ns(void)
{
	struct stat st;

	if (stat("/proc/self/ns/time", &st))
		return 0;
	return st.st_ino;
}

int main(int argc, char **argv)
{
	char buf[128];
	long long mono, boot, m2, b2;
	ino_t outer = time_ns(), inner;
	int fd, n;

	/* the launcher: its children are born in the new namespace */
	if (unshare(CLONE_NEWTIME)) {
		fprintf(stderr, "unshare(CLONE_NEWTIME): %s\n", strerror(errno));
		return 1;
	}
	n = snprintf(buf, sizeof(buf), "monotonic %lld 0\nboottime %lld 0\n", MONO_OFF, BOOT_OFF);
	fd = open("/proc/self/timens_offsets", O_WRONLY);
	if (fd < 0 || write(fd, buf, n) != n) {
		fprintf(stderr, "timens_offsets: %s\n", strerror(errno));
		return 1;
	}
	close(fd);

	test_init(argc, argv);
	inner = time_ns();
	mono = secs(CLOCK_MONOTONIC);
	boot = secs(CLOCK_BOOTTIME);
	if (inner == 0 || inner == outer || mono < MONO_OFF || boot < BOOT_OFF) {
		errno = 0;
		fail("not in the new time namespace at start (mono %lld, boot %lld)", mono, boot);
		return 1;
	}

	test_daemon();
	test_waitsig();

	m2 = secs(CLOCK_MONOTONIC);
	b2 = secs(CLOCK_BOOTTIME);
	if (time_ns() == outer) {
		errno = 0;
		fail("in the launcher's time namespace after restore");
		return 1;
	}
	if (m2 < mono || b2 < boot || m2 < MONO_OFF || b2 < BOOT_OFF) {
		errno = 0;
		fail("clocks went back: monotonic %lld -> %lld, boottime %lld -> %lld", mono, m2, boot, b2);
		return 1;
	}
	pass();
	return 0;
}

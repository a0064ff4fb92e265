/*
 * sleep: a sleep in progress during checkpoint/restore completes normally.
 *
 * After test_daemon() the test sleeps until SIGTERM instead of calling
 * test_waitsig(): first one nanosleep() of --seconds (default 3, so that a
 * checkpoint taken right after the start lands in it), then sleeps of one
 * second, alternating between relative nanosleep() (the kernel restarts it
 * with restart_syscall, -ERESTART_RESTARTBLOCK) and absolute
 * clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) (-ERESTARTNOHAND).
 *
 * Every sleep must either complete, returning 0 no earlier than requested
 * by CLOCK_MONOTONIC, or be interrupted (EINTR) by the SIGTERM of the
 * runner. EINTR while no SIGTERM was received, an early or failed return
 * are failures.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "zdtmtst.h"

const char *test_doc = "Check that nanosleep()s in progress survive checkpoint/restore";

static unsigned int seconds = 3;
TEST_OPTION(seconds, uint, "length of the first sleep, in seconds (default 3)", 0);

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	int completed = 0, interrupted = 0, failures = 0, n;

	test_init(argc, argv);
	test_daemon();

	for (n = 0; test_go(); n++) {
		int64_t len_ns = n == 0 ? (int64_t)seconds * 1000000000 : 1000000000;
		int64_t start = now_ns(), end, deadline = start + len_ns;
		int absolute = n % 2 == 0 && n > 0, ret;

		if (absolute) {
			struct timespec dl = { deadline / 1000000000, deadline % 1000000000 };

			/* returns the error number instead of setting errno */
			ret = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &dl, NULL);
		} else {
			struct timespec req = { len_ns / 1000000000, len_ns % 1000000000 }, rem;

			ret = nanosleep(&req, &rem) ? errno : 0;
		}
		end = now_ns();

		if (ret == 0) {
			completed++;
			if (end < deadline) {
				test_msg("sleep %d (%s, %lld ns) returned %lld ns early\n", n,
					 absolute ? "absolute" : "relative", (long long)len_ns,
					 (long long)(deadline - end));
				failures++;
			}
		} else if (ret == EINTR) {
			if (test_go()) {
				test_msg("sleep %d (%s) was interrupted (EINTR) without SIGTERM after %lld ns\n", n,
					 absolute ? "absolute" : "relative", (long long)(end - start));
				failures++;
			} else {
				interrupted++;
			}
		} else {
			test_msg("sleep %d (%s) failed: %s\n", n, absolute ? "absolute" : "relative",
				 strerror(ret));
			failures++;
		}
	}

	test_msg("%d sleeps completed, %d interrupted by SIGTERM, %d failed\n", completed, interrupted, failures);
	if (failures) {
		errno = 0;
		fail("%d of %d sleeps went wrong (see above)", failures, n);
		return 1;
	}
	pass();
	return 0;
}

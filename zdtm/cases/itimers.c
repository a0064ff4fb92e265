/*
 * itimers: ITIMER_REAL, ITIMER_VIRTUAL and ITIMER_PROF survive
 * checkpoint/restore: same interval, a remaining value that went on from
 * where it was (not reset), and they keep firing.
 *
 *   timer            first expiry       interval   signal
 *   ITIMER_REAL      2.5 s (wall)       200 ms     SIGALRM
 *   ITIMER_VIRTUAL   1.0 s (user CPU)   50 ms      SIGVTALRM
 *   ITIMER_PROF      1.2 s (CPU)        70 ms      SIGPROF
 *
 * The test idles until SIGTERM, so the CPU timers (almost) do not advance
 * before the check; ITIMER_REAL may or may not have expired by then,
 * depending on how long checkpoint/restore took.
 *
 * After restore (right after SIGTERM, getitimer):
 *  - every interval is exactly the one set;
 *  - ITIMER_REAL: armed; if it has not fired yet, its value is at most the
 *    value before the checkpoint (+5 ms for rounding) and at least that
 *    value minus the wall time elapsed since (-5 ms): a timer reset to its
 *    interval or to a fresh value fails; if it has fired, the value is at
 *    most one interval (+5 ms);
 *  - ITIMER_VIRTUAL/PROF: the value is at most the value before + 50 ms
 *    (the kernel rounds a CPU itimer set to a tick: every setitimer, so
 *    every restore, may add one) and at least the value before - 300 ms
 *    (CPU time the process may be charged while it idles, is dumped and
 *    restored: generous, a loaded VM must not make it flaky; the values are
 *    1 s and more, so a reset to the interval still fails);
 * then they must fire:
 *  - SIGALRM: the first one no earlier than the remaining value said, then
 *    at least 4 more, the k-th no earlier than that + k intervals (so never
 *    faster than the interval; handlers may run late on a loaded machine,
 *    so the gaps between two handlers are not checked); waits at most the
 *    remaining value + 4 intervals + 5 s;
 *  - SIGVTALRM and SIGPROF: the test spins until each has fired 4 times,
 *    for at most twice the remaining values + 2 s of CPU and 25 s of wall
 *    time. (When the first one came is only logged: these timers count
 *    tick-sampled user/system time, which runs well ahead of the precise
 *    CPU clock when the CPU is shared: 14% ahead was seen on a loaded
 *    2-core VM without any checkpoint. The values are checked above.)
 *
 * --sabotage=WHAT (debug): real (ITIMER_REAL reset to its interval), virt
 * (ITIMER_VIRTUAL reset to its interval), prof-off (ITIMER_PROF disarmed),
 * interval (ITIMER_VIRTUAL interval changed).
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "zdtmtst.h"

const char *test_doc = "Check that interval timers (setitimer) are restored and keep firing";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (real, virt, prof-off, interval)", 0);

#define MS 1000000LL
#define US 1000LL
#define NALRM 64

struct itm {
	int which, sig;
	const char *name;
	int64_t value, interval; /* ns, as set */
	int64_t v_before;	 /* ns, getitimer before the checkpoint */
};

static struct itm tm[3] = {
	{ ITIMER_REAL, SIGALRM, "ITIMER_REAL", 2500 * MS, 200 * MS, 0 },
	{ ITIMER_VIRTUAL, SIGVTALRM, "ITIMER_VIRTUAL", 1000 * MS, 50 * MS, 0 },
	{ ITIMER_PROF, SIGPROF, "ITIMER_PROF", 1200 * MS, 70 * MS, 0 },
};

static volatile int count[3];
static volatile int64_t first_cpu[3];
static int64_t alrm_t[NALRM];
static volatile int watch_cpu; /* record the CPU time of the first signal */

static int failed;

static int64_t clk(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t tv_ns(struct timeval tv)
{
	return (int64_t)tv.tv_sec * 1000000000 + tv.tv_usec * US;
}

static struct timeval ns_tv(int64_t ns)
{
	struct timeval tv = { ns / 1000000000, (ns % 1000000000) / US };

	return tv;
}

static void handler(int sig)
{
	int saved = errno, i;

	for (i = 0; i < 3; i++)
		if (tm[i].sig == sig) {
			if (i == 0 && count[0] < NALRM)
				alrm_t[count[0]] = clk(CLOCK_MONOTONIC);
			if (watch_cpu && count[i] == 0)
				first_cpu[i] = clk(CLOCK_PROCESS_CPUTIME_ID);
			count[i]++;
		}
	errno = saved;
}

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void do_sabotage(void)
{
	struct itimerval v;

	test_msg("sabotage: %s\n", sabotage);
	if (!strcmp(sabotage, "real")) {
		v.it_value = v.it_interval = ns_tv(tm[0].interval);
		setitimer(ITIMER_REAL, &v, NULL);
	} else if (!strcmp(sabotage, "virt")) {
		v.it_value = v.it_interval = ns_tv(tm[1].interval);
		setitimer(ITIMER_VIRTUAL, &v, NULL);
	} else if (!strcmp(sabotage, "prof-off")) {
		memset(&v, 0, sizeof(v));
		setitimer(ITIMER_PROF, &v, NULL);
	} else if (!strcmp(sabotage, "interval")) {
		getitimer(ITIMER_VIRTUAL, &v);
		v.it_interval = ns_tv(60 * MS);
		setitimer(ITIMER_VIRTUAL, &v, NULL);
	} else {
		test_check(0, "unknown --sabotage=%s", sabotage);
	}
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = handler, .sa_flags = SA_RESTART };
	int64_t t_before, t_after, v_after[3], elapsed;
	int fired_before[3], i;

	test_init(argc, argv);

	sigemptyset(&sa.sa_mask);
	for (i = 0; i < 3; i++)
		if (sigaction(tm[i].sig, &sa, NULL)) {
			pr_perror("sigaction");
			return 1;
		}
	for (i = 0; i < 3; i++) {
		struct itimerval v = { ns_tv(tm[i].interval), ns_tv(tm[i].value) };

		if (setitimer(tm[i].which, &v, NULL)) {
			pr_perror("setitimer(%s)", tm[i].name);
			return 1;
		}
	}
	t_before = clk(CLOCK_MONOTONIC);
	for (i = 0; i < 3; i++) {
		struct itimerval v;

		getitimer(tm[i].which, &v);
		tm[i].v_before = tv_ns(v.it_value);
	}
	test_msg("remaining before: REAL %lld ms, VIRTUAL %lld ms, PROF %lld ms\n",
		 (long long)(tm[0].v_before / MS), (long long)(tm[1].v_before / MS), (long long)(tm[2].v_before / MS));

	test_daemon();
	test_waitsig();

	if (sabotage)
		do_sabotage();

	/* the values, right away */
	t_after = clk(CLOCK_MONOTONIC);
	elapsed = t_after - t_before;
	for (i = 0; i < 3; i++) {
		struct itimerval v;

		fired_before[i] = count[i];
		if (getitimer(tm[i].which, &v)) {
			test_check(0, "getitimer(%s): %m", tm[i].name);
			v_after[i] = 0;
			continue;
		}
		v_after[i] = tv_ns(v.it_value);
		test_msg("%s: remaining %lld us, interval %lld us, fired %d times so far\n", tm[i].name,
			 (long long)(v_after[i] / US), (long long)(tv_ns(v.it_interval) / US), count[i]);
		test_check(tv_ns(v.it_interval) == tm[i].interval, "%s: interval %lld us, expected %lld us", tm[i].name,
		      (long long)(tv_ns(v.it_interval) / US), (long long)(tm[i].interval / US));
		test_check(v_after[i] > 0, "%s is disarmed", tm[i].name);
	}

	/* ITIMER_REAL */
	if (fired_before[0] == 0) {
		test_check(v_after[0] <= tm[0].v_before + 5 * MS,
		      "ITIMER_REAL: remaining %lld ms, more than the %lld ms before the checkpoint (reset?)",
		      (long long)(v_after[0] / MS), (long long)(tm[0].v_before / MS));
		test_check(v_after[0] >= tm[0].v_before - elapsed - 5 * MS,
		      "ITIMER_REAL: remaining %lld ms, but it was %lld ms only %lld ms ago (reset to the interval?)",
		      (long long)(v_after[0] / MS), (long long)(tm[0].v_before / MS), (long long)(elapsed / MS));
	} else {
		test_check(v_after[0] <= tm[0].interval + 5 * MS,
		      "ITIMER_REAL: fired already, but %lld ms remain (interval %lld ms)", (long long)(v_after[0] / MS),
		      (long long)(tm[0].interval / MS));
	}
	/* ITIMER_VIRTUAL, ITIMER_PROF: the test did not use CPU */
	for (i = 1; i < 3; i++) {
		test_check(fired_before[i] == 0, "%s fired %d times while the test was idle", tm[i].name, fired_before[i]);
		test_check(v_after[i] <= tm[i].v_before + 50 * MS && v_after[i] >= tm[i].v_before - 300 * MS,
		      "%s: remaining %lld ms, %lld ms before the checkpoint (expected -300..+50 ms)", tm[i].name,
		      (long long)(v_after[i] / MS), (long long)(tm[i].v_before / MS));
	}

	/* SIGALRM keeps coming */
	if (v_after[0] > 0) {
		int64_t deadline = t_after + v_after[0] + 4 * tm[0].interval + 5000 * MS;
		int start = fired_before[0];

		while (count[0] < start + 5 && count[0] < NALRM && clk(CLOCK_MONOTONIC) < deadline)
			msleep(10);
		test_check(count[0] >= start + 5, "ITIMER_REAL: %d signals in %lld ms after the check, expected 5",
		      count[0] - start, (long long)((clk(CLOCK_MONOTONIC) - t_after) / MS));
		if (count[0] > start) {
			test_check(alrm_t[start] >= t_after + v_after[0] - 5 * MS,
			      "ITIMER_REAL: fired %lld ms after the check, %lld ms remained",
			      (long long)((alrm_t[start] - t_after) / MS), (long long)(v_after[0] / MS));
			/*
			 * Never faster than the interval: the k-th signal no earlier
			 * than the first expiry + k intervals (handlers may run late,
			 * so the gaps between two of them may be shorter).
			 */
			for (i = start + 1; i < count[0] && i < NALRM; i++)
				test_check(alrm_t[i] >= t_after + v_after[0] + (i - start) * tm[0].interval - 5 * MS,
				      "ITIMER_REAL: signal %d came %lld ms after the check; with %lld ms remaining and "
				      "an interval of %lld ms, not before %lld ms", i - start,
				      (long long)((alrm_t[i] - t_after) / MS), (long long)(v_after[0] / MS),
				      (long long)(tm[0].interval / MS),
				      (long long)((v_after[0] + (i - start) * tm[0].interval) / MS));
		}
	}

	/* SIGVTALRM and SIGPROF need CPU time */
	if (v_after[1] > 0 || v_after[2] > 0) {
		int64_t cpu0, wall0 = clk(CLOCK_MONOTONIC), budget;
		volatile uint64_t x = 1;

		int64_t v_spin[3] = { 0, 0, 0 };

		/* the wait above used a little CPU: the remaining values now */
		for (i = 1; i < 3; i++) {
			struct itimerval v;

			if (getitimer(tm[i].which, &v) == 0)
				v_spin[i] = tv_ns(v.it_value);
		}
		count[1] = count[2] = 0;
		budget = 2 * (v_spin[1] > v_spin[2] ? v_spin[1] : v_spin[2]) + 2000 * MS;
		watch_cpu = 1;
		cpu0 = clk(CLOCK_PROCESS_CPUTIME_ID);
		while ((count[1] < 4 || count[2] < 4) && clk(CLOCK_PROCESS_CPUTIME_ID) - cpu0 < budget &&
		       clk(CLOCK_MONOTONIC) - wall0 < 25000 * MS) {
			int k;

			for (k = 0; k < 100000; k++)
				x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		}
		watch_cpu = 0;
		test_msg("spun %lld ms of CPU in %lld ms: SIGVTALRM %d, SIGPROF %d\n",
			 (long long)((clk(CLOCK_PROCESS_CPUTIME_ID) - cpu0) / MS),
			 (long long)((clk(CLOCK_MONOTONIC) - wall0) / MS), count[1], count[2]);
		for (i = 1; i < 3; i++) {
			if (v_after[i] <= 0)
				continue;
			test_check(count[i] >= 4, "%s: %d signals while spinning, expected 4", tm[i].name, count[i]);
			if (count[i] > 0)
				test_msg("%s: the first signal came after %lld ms of CPU, %lld ms remained\n",
					 tm[i].name, (long long)((first_cpu[i] - cpu0) / MS),
					 (long long)(v_spin[i] / MS));
		}
	}

	if (failed) {
		errno = 0;
		fail("interval timers changed (see above)");
		return 1;
	}
	pass();
	return 0;
}

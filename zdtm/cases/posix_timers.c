/*
 * posix_timers: POSIX timers (timer_create) survive checkpoint/restore with
 * their IDs, clocks, notification, values, overruns, and keep firing.
 *
 *   timer  clock                     notify              value / interval
 *   A      CLOCK_REALTIME            SIGRTMIN+1, value   100 ms / 100 ms
 *   B      CLOCK_MONOTONIC           SIGRTMIN+2, value   60 s one-shot
 *   C      CLOCK_BOOTTIME            SIGEV_NONE          120 s / 7 s
 *   D      CLOCK_PROCESS_CPUTIME_ID  SIGRTMIN+4, value   0.8 s CPU / 50 ms
 *   E      CLOCK_THREAD_CPUTIME_ID   SIGEV_THREAD_ID to the thread,
 *                                    SIGRTMIN+5, value   0.9 s CPU / 60 ms
 *   F      CLOCK_REALTIME            SIGRTMIN+6, value   TIMER_ABSTIME, 6 s
 *                                                        after the start
 *   G      CLOCK_MONOTONIC           SIGRTMIN+7 (blocked) 10 ms / 10 ms
 *   H      CLOCK_MONOTONIC           SIGRTMIN+8          never armed
 * Timers are created and deleted in between, so the IDs have gaps.
 * G's signal is blocked: before the checkpoint one G signal is taken with
 * sigtimedwait (its si_overrun is what timer_getoverrun() reports), and the
 * next one is left pending.
 *
 * After restore:
 *  - /proc/self/timers is unchanged (IDs, signals and values, notification,
 *    clocks) and timer_gettime works on every ID;
 *  - every interval is exactly the one set; H is still disarmed;
 *  - B and C (one-shot / long first value): remaining at most the value
 *    before (+5 ms) and at least that minus the time elapsed on their clock
 *    (-5 ms);
 *  - A: remaining at most one interval; it fires 5 more times within 3 s;
 *  - D and E: remaining within -300..+50 ms of the value before (the test
 *    idles; the CPU time charged to it by dump/restore, and the rounding of
 *    CPU timers to ticks, must not make it flaky); the test then spins until
 *    each has fired 4 times, the first not before the remaining CPU time
 *    (asked again right before the spin; -30 ms) was used (at most 2x the
 *    values + 2 s of CPU, 25 s of wall);
 *  - F (absolute): if it has not fired, timer_gettime() says it expires at
 *    the absolute time it was set for (within 25 ms, read with the clock
 *    in one go: a timer restored relative to the restore is off by the
 *    downtime, which is longer than that); it fires no earlier
 *    than that time (-5 ms) and no later than 2 s after it (a deadline that
 *    falls into a dump/restore can only be met once the process runs again:
 *    2 s covers a slow restore on a loaded machine);
 *  - G: timer_getoverrun() still reports the overrun of the last delivered
 *    signal; its signal is pending; 60 ms later sigtimedwait() returns it
 *    with SI_TIMER, G's ID and value, and si_overrun >= 3 (the timer kept
 *    running while its signal was pending);
 *  - every delivered signal carried SI_TIMER, its timer's ID and value.
 *
 * --sabotage=WHAT (debug): id, abs, overrun, cpu, interval.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>

#include "zdtmtst.h"

const char *test_doc = "Check that POSIX timers are restored with their IDs, settings and overruns";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (id, abs, overrun, cpu, interval)", 0);

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

#define MS 1000000LL
#define SEC 1000000000LL

enum { A, B, C, D, E, F, G, H, NT };

struct ptimer {
	const char *name;
	clockid_t clock;
	int notify, sig;
	int64_t value, interval;
	int abs;
	uint64_t sival;
	timer_t t;
	int id;
	int64_t v_before, c_before; /* remaining and the clock, before the checkpoint */
};

static struct ptimer pt[NT] = {
	[A] = { "A (REALTIME periodic)", CLOCK_REALTIME, SIGEV_SIGNAL, 1, 100 * MS, 100 * MS, 0, 0xa1a1a1a1a1a1a1a1ULL },
	[B] = { "B (MONOTONIC one-shot)", CLOCK_MONOTONIC, SIGEV_SIGNAL, 2, 60 * SEC, 0, 0, 0xb2b2b2b2b2b2b2b2ULL },
	[C] = { "C (BOOTTIME, SIGEV_NONE)", CLOCK_BOOTTIME, SIGEV_NONE, 0, 120 * SEC, 7 * SEC, 0, 0 },
	[D] = { "D (PROCESS_CPUTIME)", CLOCK_PROCESS_CPUTIME_ID, SIGEV_SIGNAL, 4, 800 * MS, 50 * MS, 0,
		0xd4d4d4d4d4d4d4d4ULL },
	[E] = { "E (THREAD_CPUTIME, SIGEV_THREAD_ID)", CLOCK_THREAD_CPUTIME_ID, SIGEV_SIGNAL | SIGEV_THREAD_ID, 5,
		900 * MS, 60 * MS, 0, 0xe5e5e5e5e5e5e5e5ULL },
	[F] = { "F (REALTIME, TIMER_ABSTIME)", CLOCK_REALTIME, SIGEV_SIGNAL, 6, 6 * SEC, 0, 1, 0xf6f6f6f6f6f6f6f6ULL },
	[G] = { "G (MONOTONIC, blocked signal)", CLOCK_MONOTONIC, SIGEV_SIGNAL, 7, 10 * MS, 10 * MS, 0,
		0x0707070707070707ULL },
	[H] = { "H (never armed)", CLOCK_MONOTONIC, SIGEV_SIGNAL, 8, 0, 0, 0, 0x0808080808080808ULL },
};

/* what the handler saw, by timer */
static volatile int count[NT], bad[NT];
static volatile int64_t first_cpu[NT], fired_rt[NT];
static volatile int watch_cpu;
static int64_t abs_target; /* F, CLOCK_REALTIME */

static int failed;

static int64_t clk(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static struct timespec ns_ts(int64_t ns)
{
	struct timespec ts = { ns / SEC, ns % SEC };

	return ts;
}

static int64_t ts_ns(struct timespec ts)
{
	return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static void handler(int sig, siginfo_t *si, void *uc)
{
	int saved = errno, i;

	(void)uc;
	for (i = 0; i < NT; i++) {
		if (pt[i].notify == SIGEV_NONE || SIGRTMIN + pt[i].sig != sig)
			continue;
		if (si->si_code != SI_TIMER || si->si_timerid != pt[i].id ||
		    (uint64_t)(uintptr_t)si->si_value.sival_ptr != pt[i].sival)
			bad[i]++;
		if (watch_cpu && count[i] == 0)
			first_cpu[i] = clk(CLOCK_PROCESS_CPUTIME_ID);
		if (count[i] == 0)
			fired_rt[i] = clk(CLOCK_REALTIME);
		count[i]++;
	}
	errno = saved;
}

/* Sleep the whole time even when a timer's signal interrupts the sleep. */
static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int read_timers(char *buf, size_t size)
{
	FILE *f = fopen("/proc/self/timers", "r");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, size - 1, f);
	fclose(f);
	buf[n] = '\0';
	return 0;
}

static int create(struct ptimer *p)
{
	struct sigevent sev;

	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = p->notify;
	sev.sigev_signo = p->notify == SIGEV_NONE ? 0 : SIGRTMIN + p->sig;
	sev.sigev_value.sival_ptr = (void *)(uintptr_t)p->sival;
	if (p->notify & SIGEV_THREAD_ID)
		sev.sigev_notify_thread_id = syscall(SYS_gettid);
	if (timer_create(p->clock, &sev, &p->t)) {
		pr_perror("timer_create(%s)", p->name);
		return -1;
	}
	p->id = (int)(intptr_t)p->t;
	return 0;
}

static int dummy(clockid_t clock)
{
	struct sigevent sev = { .sigev_notify = SIGEV_NONE };
	timer_t t;

	if (timer_create(clock, &sev, &t)) {
		pr_perror("timer_create");
		return -1;
	}
	return (int)(intptr_t)t;
}

/* remaining time and the timer's clock, read close together */
static int gettime(struct ptimer *p, struct itimerspec *its, int64_t *c)
{
	int i;

	for (i = 0; i < 20; i++) {
		int64_t c0 = clk(p->clock == CLOCK_THREAD_CPUTIME_ID || p->clock == CLOCK_PROCESS_CPUTIME_ID ?
					 CLOCK_MONOTONIC : p->clock), c1;

		if (timer_gettime(p->t, its))
			return -1;
		c1 = clk(p->clock == CLOCK_THREAD_CPUTIME_ID || p->clock == CLOCK_PROCESS_CPUTIME_ID ?
				 CLOCK_MONOTONIC : p->clock);
		*c = c1;
		if (c1 - c0 < 2 * MS)
			break;
	}
	return 0;
}

static void do_sabotage(void)
{
	struct itimerspec its;

	test_msg("sabotage: %s\n", sabotage);
	if (!strcmp(sabotage, "id")) {
		timer_gettime(pt[B].t, &its);
		timer_delete(pt[B].t);
		create(&pt[B]);
		timer_settime(pt[B].t, 0, &its, NULL);
	} else if (!strcmp(sabotage, "abs")) {
		/* as if restored relative: 1 s late */
		its.it_interval = ns_ts(0);
		its.it_value = ns_ts(abs_target + SEC);
		timer_settime(pt[F].t, TIMER_ABSTIME, &its, NULL);
	} else if (!strcmp(sabotage, "overrun")) {
		sigset_t s;
		siginfo_t si;
		struct timespec zero = { 0, 0 };

		sigemptyset(&s);
		sigaddset(&s, SIGRTMIN + pt[G].sig);
		sigtimedwait(&s, &si, &zero);
	} else if (!strcmp(sabotage, "cpu")) {
		its.it_interval = its.it_value = ns_ts(pt[D].interval);
		timer_settime(pt[D].t, 0, &its, NULL);
	} else if (!strcmp(sabotage, "interval")) {
		timer_gettime(pt[A].t, &its);
		its.it_interval = ns_ts(90 * MS);
		timer_settime(pt[A].t, 0, &its, NULL);
	} else {
		test_check(0, "unknown --sabotage=%s", sabotage);
	}
}

static int g_overrun_before;
static char timers_before[16384], timers_after[16384];

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_sigaction = handler, .sa_flags = SA_SIGINFO | SA_RESTART };
	struct timespec zero = { 0, 0 };
	int64_t now[NT], v_after[NT], t_after;
	int dummies[4], fired_before[NT], i;
	sigset_t gset, pend;
	siginfo_t si;

	test_init(argc, argv);

	sigemptyset(&sa.sa_mask);
	for (i = 0; i < NT; i++)
		if (pt[i].notify != SIGEV_NONE && sigaction(SIGRTMIN + pt[i].sig, &sa, NULL)) {
			pr_perror("sigaction");
			return 1;
		}
	sigemptyset(&gset);
	sigaddset(&gset, SIGRTMIN + pt[G].sig);
	sigprocmask(SIG_BLOCK, &gset, NULL);

	/* IDs with gaps */
	if (create(&pt[A]) || (dummies[0] = dummy(CLOCK_MONOTONIC)) < 0 || create(&pt[B]) ||
	    (dummies[1] = dummy(CLOCK_REALTIME)) < 0 || (dummies[2] = dummy(CLOCK_BOOTTIME)) < 0 || create(&pt[C]) ||
	    create(&pt[D]) || (dummies[3] = dummy(CLOCK_MONOTONIC)) < 0 || create(&pt[E]) || create(&pt[F]) ||
	    create(&pt[G]) || create(&pt[H]))
		return 1;
	for (i = 0; i < 4; i++)
		timer_delete((timer_t)(intptr_t)dummies[i]);

	for (i = 0; i < NT; i++) {
		struct itimerspec its = { ns_ts(pt[i].interval), ns_ts(pt[i].value) };

		if (i == H)
			continue;
		if (pt[i].abs) {
			abs_target = clk(pt[i].clock) + pt[i].value;
			its.it_value = ns_ts(abs_target);
		}
		if (timer_settime(pt[i].t, pt[i].abs ? TIMER_ABSTIME : 0, &its, NULL)) {
			pr_perror("timer_settime(%s)", pt[i].name);
			return 1;
		}
	}

	/* G: take one signal (overrun known), leave the next one pending */
	msleep(60);
	if (sigtimedwait(&gset, &si, &zero) != SIGRTMIN + pt[G].sig) {
		pr_perror("G's signal did not come");
		return 1;
	}
	g_overrun_before = timer_getoverrun(pt[G].t);
	if (g_overrun_before != si.si_overrun || g_overrun_before < 1) {
		pr_err("G: si_overrun %d, timer_getoverrun %d\n", si.si_overrun, g_overrun_before);
		return 1;
	}
	msleep(30);
	sigpending(&pend);
	if (!sigismember(&pend, SIGRTMIN + pt[G].sig)) {
		pr_err("G's signal is not pending\n");
		return 1;
	}

	for (i = 0; i < NT; i++) {
		struct itimerspec its;

		if (gettime(&pt[i], &its, &pt[i].c_before)) {
			pr_perror("timer_gettime(%s)", pt[i].name);
			return 1;
		}
		pt[i].v_before = ts_ns(its.it_value);
	}
	if (read_timers(timers_before, sizeof(timers_before))) {
		pr_perror("/proc/self/timers");
		return 1;
	}
	test_msg("timer IDs: A %d B %d C %d D %d E %d F %d G %d H %d (deleted %d %d %d %d); G overrun %d\n", pt[A].id,
		 pt[B].id, pt[C].id, pt[D].id, pt[E].id, pt[F].id, pt[G].id, pt[H].id, dummies[0], dummies[1],
		 dummies[2], dummies[3], g_overrun_before);

	test_daemon();
	test_waitsig();

	if (sabotage)
		do_sabotage();

	/* the settings, right away */
	t_after = clk(CLOCK_MONOTONIC);
	for (i = 0; i < NT; i++) {
		struct itimerspec its;

		fired_before[i] = count[i];
		v_after[i] = 0;
		if (gettime(&pt[i], &its, &now[i])) {
			test_check(0, "timer_gettime(%s, ID %d): %m", pt[i].name, pt[i].id);
			continue;
		}
		v_after[i] = ts_ns(its.it_value);
		test_msg("%s: remaining %lld us (was %lld us), interval %lld us, fired %d\n", pt[i].name,
			 (long long)(v_after[i] / 1000), (long long)(pt[i].v_before / 1000),
			 (long long)(ts_ns(its.it_interval) / 1000), count[i]);
		test_check(ts_ns(its.it_interval) == pt[i].interval, "%s: interval %lld ns, expected %lld ns", pt[i].name,
		      (long long)ts_ns(its.it_interval), (long long)pt[i].interval);
		if (i != H && i != F)
			test_check(v_after[i] > 0, "%s is disarmed", pt[i].name);
	}
	test_check(count[G] == 0, "G's blocked signal was delivered");
	if (read_timers(timers_after, sizeof(timers_after)) || strcmp(timers_before, timers_after)) {
		test_check(0, "/proc/self/timers changed");
		test_msg("before:\n%s", timers_before);
		test_msg("after:\n%s", timers_after);
	}

	/* B, C: long values */
	for (i = B; i <= C; i++) {
		int64_t elapsed = now[i] - pt[i].c_before;

		test_check(v_after[i] <= pt[i].v_before + 5 * MS && v_after[i] >= pt[i].v_before - elapsed - 5 * MS,
		      "%s: remaining %lld ms; it was %lld ms %lld ms ago", pt[i].name, (long long)(v_after[i] / MS),
		      (long long)(pt[i].v_before / MS), (long long)(elapsed / MS));
	}
	test_check(count[B] == 0, "B fired early");
	/* H */
	test_check(v_after[H] == 0 && count[H] == 0, "H (never armed) is armed or fired");
	/* A */
	test_check(v_after[A] <= pt[A].interval + 5 * MS, "A: remaining %lld ms, more than its interval",
	      (long long)(v_after[A] / MS));
	/* D, E: the test was idle */
	for (i = D; i <= E; i++) {
		test_check(fired_before[i] == 0, "%s fired while the test was idle", pt[i].name);
		test_check(v_after[i] <= pt[i].v_before + 50 * MS && v_after[i] >= pt[i].v_before - 300 * MS,
		      "%s: remaining %lld ms, %lld ms before the checkpoint (expected -300..+50 ms)", pt[i].name,
		      (long long)(v_after[i] / MS), (long long)(pt[i].v_before / MS));
	}
	/* F: absolute */
	if (fired_before[F] == 0) {
		int64_t due = now[F] + v_after[F];

		test_check(v_after[F] > 0, "F has not fired, but is disarmed");
		test_check(due - abs_target <= 25 * MS && abs_target - due <= 25 * MS,
		      "F (TIMER_ABSTIME) now expires %+lld ms off its absolute time", (long long)((due - abs_target) / MS));
	}

	/* G: overrun */
	test_check(timer_getoverrun(pt[G].t) == g_overrun_before, "G: timer_getoverrun() %d, was %d",
	      timer_getoverrun(pt[G].t), g_overrun_before);
	sigpending(&pend);
	test_check(sigismember(&pend, SIGRTMIN + pt[G].sig), "G's signal is no longer pending");
	msleep(60);
	memset(&si, 0, sizeof(si));
	if (sigtimedwait(&gset, &si, &zero) != SIGRTMIN + pt[G].sig) {
		test_check(0, "G's signal did not come: %m");
	} else {
		test_check(si.si_code == SI_TIMER && si.si_timerid == pt[G].id &&
			      (uint64_t)(uintptr_t)si.si_value.sival_ptr == pt[G].sival && si.si_overrun >= 3,
		      "G: si_code %d si_timerid %d si_value %p si_overrun %d; expected %d %d %#llx >= 3", si.si_code,
		      si.si_timerid, si.si_value.sival_ptr, si.si_overrun, SI_TIMER, pt[G].id,
		      (unsigned long long)pt[G].sival);
		test_check(timer_getoverrun(pt[G].t) == si.si_overrun, "G: timer_getoverrun() %d, si_overrun %d",
		      timer_getoverrun(pt[G].t), si.si_overrun);
	}

	/* A keeps firing */
	{
		int start = count[A];
		int64_t end = clk(CLOCK_MONOTONIC) + 3 * SEC;

		while (count[A] < start + 5 && clk(CLOCK_MONOTONIC) < end)
			msleep(10);
		test_check(count[A] >= start + 5, "A: %d signals in 3 s, expected 5", count[A] - start);
	}

	/* F fires at its time */
	{
		int64_t end = clk(CLOCK_MONOTONIC) + (abs_target - clk(CLOCK_REALTIME)) + 3 * SEC;

		while (count[F] == 0 && clk(CLOCK_MONOTONIC) < end)
			msleep(5);
		test_check(count[F] == 1, "F fired %d times, expected once", count[F]);
		if (count[F])
			test_check(fired_rt[F] >= abs_target - 5 * MS && fired_rt[F] <= abs_target + 2 * SEC,
			      "F (TIMER_ABSTIME) fired %+lld ms off its absolute time",
			      (long long)((fired_rt[F] - abs_target) / MS));
	}

	/* D and E need CPU time */
	{
		int64_t cpu0, wall0 = clk(CLOCK_MONOTONIC), budget;
		volatile uint64_t x = 1;

		int64_t v_spin[NT] = { 0 };

		/* the waits above used a little CPU: the remaining values now */
		for (i = D; i <= E; i++) {
			struct itimerspec its;

			if (timer_gettime(pt[i].t, &its) == 0)
				v_spin[i] = ts_ns(its.it_value);
		}
		count[D] = count[E] = 0;
		budget = 2 * (v_spin[D] > v_spin[E] ? v_spin[D] : v_spin[E]) + 2 * SEC;
		watch_cpu = 1;
		cpu0 = clk(CLOCK_PROCESS_CPUTIME_ID);
		while ((count[D] < 4 || count[E] < 4) && clk(CLOCK_PROCESS_CPUTIME_ID) - cpu0 < budget &&
		       clk(CLOCK_MONOTONIC) - wall0 < 25 * SEC) {
			int k;

			for (k = 0; k < 100000; k++)
				x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		}
		watch_cpu = 0;
		test_msg("spun %lld ms of CPU in %lld ms: D %d, E %d signals\n",
			 (long long)((clk(CLOCK_PROCESS_CPUTIME_ID) - cpu0) / MS),
			 (long long)((clk(CLOCK_MONOTONIC) - wall0) / MS), count[D], count[E]);
		for (i = D; i <= E; i++) {
			test_check(count[i] >= 4, "%s: %d signals while spinning, expected 4", pt[i].name, count[i]);
			if (count[i])
				test_check(first_cpu[i] - cpu0 >= v_spin[i] - 30 * MS,
				      "%s: the first signal came after %lld ms of CPU, %lld ms remained", pt[i].name,
				      (long long)((first_cpu[i] - cpu0) / MS), (long long)(v_spin[i] / MS));
		}
	}

	for (i = 0; i < NT; i++)
		test_check(bad[i] == 0, "%s: %d signals with a wrong si_code, si_timerid or si_value", pt[i].name, bad[i]);
	(void)t_after;

	if (failed) {
		errno = 0;
		fail("POSIX timers changed (see above)");
		return 1;
	}
	pass();
	return 0;
}

/*
 * timerfd: timerfds survive checkpoint/restore with their clocks, flags,
 * settings and unread expirations.
 *
 *   fd  clock            setting                                 flags
 *   t1  MONOTONIC        relative one-shot, 60 s                 NONBLOCK|CLOEXEC
 *   t2  REALTIME         TFD_TIMER_ABSTIME one-shot, start + 6 s NONBLOCK
 *   t3  BOOTTIME         20 ms, then every 30 s: fired once, unread  NONBLOCK
 *   t4  MONOTONIC        one-shot 10 ms: fired, unread           (blocking)
 *   t5  BOOTTIME         every 100 ms, unread for 350 ms         NONBLOCK
 *   t6  REALTIME         ABSTIME|TFD_TIMER_CANCEL_ON_SET, +1 h   NONBLOCK
 *   t7  MONOTONIC        never armed                             CLOEXEC
 *   t8  REALTIME         relative 45 s, then every 2 s           NONBLOCK
 *   t9  MONOTONIC        ABSTIME start + 50 s, then every 3 s    NONBLOCK
 *   t10 BOOTTIME_ALARM   relative 60 s                           NONBLOCK
 *   t11 REALTIME_ALARM   ABSTIME start + 1 h                     NONBLOCK
 *   t12 MONOTONIC        every 10 ms, never read before the check,
 *                        so expired-and-unread at the checkpoint   NONBLOCK
 * The alarm clocks need CAP_WAKE_ALARM: without it (not root) t10 and t11
 * are left out, with a message.
 *
 * After restore, for every fd: open at the same number, anon_inode:[timerfd],
 * F_GETFL and F_GETFD unchanged, and in /proc/self/fdinfo the clockid,
 * "settime flags" and it_interval unchanged; timerfd_gettime() gives the
 * same interval and
 *  - relative timers (t1, t3, t8, t10): a remaining value at most the one
 *    before (+5 ms) and at least that minus the time elapsed on their clock
 *    (-5 ms): not reset;
 *  - absolute timers (t2, t6, t9, t11): the same absolute expiry, within
 *    25 ms (remaining value and clock read in one go; a timer restored
 *    relative to the restore is off by the downtime, which is longer); t2, unless it has fired before the check, must then fire no
 *    earlier than its time (-5 ms) and no later than 2 s after it (the
 *    deadline may fall into a dump/restore);
 *  - t5, t12 (periodic): armed, next expiry within one interval;
 *  - unread expirations: t3 and t4 read exactly 1 (then nothing); t5 reads
 *    at least the expirations that had happened before the checkpoint and
 *    at most what the wall time since it was armed allows, then keeps
 *    counting (at least 2 in the next 350 ms); t12 likewise (at least 10);
 *    t1, t6..t11 read nothing; t7 stays disarmed.
 * With --settime (root; not used by the runner: it steps the system clock,
 * if only by microseconds), CLOCK_REALTIME is set to its own value at the
 * end and t6 must then fail to read with ECANCELED.
 *
 * --sabotage=WHAT (debug): ticks, settime, flags, abs, interval, nonblock.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>

#include "zdtmtst.h"

const char *test_doc = "Check that timerfds are restored with their settings and unread ticks";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (ticks, settime, flags, abs, interval, nonblock)",
	    0);
static int settime;
TEST_OPTION(settime, bool, "set CLOCK_REALTIME to itself at the end to check TFD_TIMER_CANCEL_ON_SET (root)", 0);

#define MS 1000000LL
#define SEC 1000000000LL

enum kind { REL, ABS, NONE };

struct tfd {
	const char *name;
	clockid_t clock;
	enum kind kind;
	int64_t value, interval; /* REL: relative value; ABS: offset from now */
	int tfd_flags;		 /* TFD_NONBLOCK, TFD_CLOEXEC */
	int settime_flags;	 /* TFD_TIMER_* beyond ABSTIME */
	int alarm;
	/* state */
	int fd, skip;
	int64_t target;		/* ABS: absolute expiry */
	int64_t armed;		/* the clock when armed */
	int64_t v_before, c_before;
	int getfl, getfd;
	char info[256];		/* fdinfo: clockid, settime flags, it_interval */
};

enum { T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, NT };

static struct tfd t[NT] = {
	[T1] = { "t1 MONOTONIC rel", CLOCK_MONOTONIC, REL, 60 * SEC, 0, TFD_NONBLOCK | TFD_CLOEXEC, 0, 0 },
	[T2] = { "t2 REALTIME abs", CLOCK_REALTIME, ABS, 6 * SEC, 0, TFD_NONBLOCK, 0, 0 },
	[T3] = { "t3 BOOTTIME fired", CLOCK_BOOTTIME, REL, 20 * MS, 30 * SEC, TFD_NONBLOCK, 0, 0 },
	[T4] = { "t4 MONOTONIC fired", CLOCK_MONOTONIC, REL, 10 * MS, 0, 0, 0, 0 },
	[T5] = { "t5 BOOTTIME periodic", CLOCK_BOOTTIME, REL, 100 * MS, 100 * MS, TFD_NONBLOCK, 0, 0 },
	[T6] = { "t6 REALTIME cancel-on-set", CLOCK_REALTIME, ABS, 3600 * SEC, 0, TFD_NONBLOCK,
		 TFD_TIMER_CANCEL_ON_SET, 0 },
	[T7] = { "t7 MONOTONIC disarmed", CLOCK_MONOTONIC, NONE, 0, 0, TFD_CLOEXEC, 0, 0 },
	[T8] = { "t8 REALTIME rel periodic", CLOCK_REALTIME, REL, 45 * SEC, 2 * SEC, TFD_NONBLOCK, 0, 0 },
	[T9] = { "t9 MONOTONIC abs periodic", CLOCK_MONOTONIC, ABS, 50 * SEC, 3 * SEC, TFD_NONBLOCK, 0, 0 },
	[T10] = { "t10 BOOTTIME_ALARM rel", CLOCK_BOOTTIME_ALARM, REL, 60 * SEC, 0, TFD_NONBLOCK, 0, 1 },
	[T11] = { "t11 REALTIME_ALARM abs", CLOCK_REALTIME_ALARM, ABS, 3600 * SEC, 0, TFD_NONBLOCK, 0, 1 },
	[T12] = { "t12 MONOTONIC 10 ms unread", CLOCK_MONOTONIC, REL, 10 * MS, 10 * MS, TFD_NONBLOCK, 0, 0 },
};

static int failed;

static clockid_t base_clock(clockid_t c)
{
	if (c == CLOCK_REALTIME_ALARM)
		return CLOCK_REALTIME;
	if (c == CLOCK_BOOTTIME_ALARM)
		return CLOCK_BOOTTIME;
	return c;
}

static int64_t clk(clockid_t c)
{
	struct timespec ts;

	clock_gettime(base_clock(c), &ts);
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

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* the fdinfo lines that must not change */
static int fdinfo(int fd, char *out, size_t size)
{
	char path[64], line[256];
	size_t len = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		return -1;
	out[0] = '\0';
	while (fgets(line, sizeof(line), f)) {
		size_t l = strlen(line);

		if (strncmp(line, "clockid:", 8) && strncmp(line, "settime flags:", 14) &&
		    strncmp(line, "it_interval:", 12))
			continue;
		if (len + l >= size)
			break;
		memcpy(out + len, line, l + 1);
		len += l;
	}
	fclose(f);
	return len ? 0 : -1;
}

/* remaining value and the clock, read close together */
static int gettime(struct tfd *x, struct itimerspec *its, int64_t *c)
{
	int i;

	for (i = 0; i < 20; i++) {
		int64_t c0 = clk(x->clock);

		if (timerfd_gettime(x->fd, its))
			return -1;
		*c = clk(x->clock);
		if (*c - c0 < 2 * MS)
			break;
	}
	return 0;
}

static int readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* the expirations, or -errno; 0 when not readable */
static int64_t ticks(struct tfd *x)
{
	uint64_t n;

	if (!readable(x->fd))
		return 0;
	if (read(x->fd, &n, sizeof(n)) != sizeof(n))
		return -errno;
	return n;
}

static int arm(struct tfd *x)
{
	struct itimerspec its = { ns_ts(x->interval), ns_ts(x->value) };
	int flags = x->settime_flags;

	x->armed = clk(x->clock);
	if (x->kind == ABS) {
		x->target = x->armed + x->value;
		its.it_value = ns_ts(x->target);
		flags |= TFD_TIMER_ABSTIME;
	}
	return timerfd_settime(x->fd, flags, &its, NULL);
}

static void do_sabotage(void)
{
	struct itimerspec its;

	test_msg("sabotage: %s\n", sabotage);
	if (!strcmp(sabotage, "ticks")) {
		ticks(&t[T4]);
	} else if (!strcmp(sabotage, "settime")) {
		arm(&t[T1]);
	} else if (!strcmp(sabotage, "flags")) {
		t[T6].settime_flags = 0;
		t[T6].value = t[T6].target - clk(t[T6].clock);
		arm(&t[T6]);
	} else if (!strcmp(sabotage, "abs")) {
		timerfd_gettime(t[T2].fd, &its);
		its.it_value = ns_ts(ts_ns(its.it_value) + SEC);
		timerfd_settime(t[T2].fd, 0, &its, NULL);
	} else if (!strcmp(sabotage, "interval")) {
		timerfd_gettime(t[T8].fd, &its);
		its.it_interval = ns_ts(SEC);
		timerfd_settime(t[T8].fd, 0, &its, NULL);
	} else if (!strcmp(sabotage, "nonblock")) {
		fcntl(t[T1].fd, F_SETFL, 0);
	} else {
		test_check(0, "unknown --sabotage=%s", sabotage);
	}
}

int main(int argc, char **argv)
{
	int64_t t5_before, t12_before, n;
	int i, t2_fired = 0;

	test_init(argc, argv);

	for (i = 0; i < NT; i++) {
		struct tfd *x = &t[i];

		x->fd = timerfd_create(x->clock, x->tfd_flags);
		if (x->fd < 0 && x->alarm && (errno == EPERM || errno == EINVAL || errno == ENODEV)) {
			test_msg("%s: skipped: timerfd_create: %m\n", x->name);
			x->skip = 1;
			continue;
		}
		if (x->fd < 0) {
			pr_perror("timerfd_create(%s)", x->name);
			return 1;
		}
		if (x->kind != NONE && arm(x)) {
			pr_perror("timerfd_settime(%s)", x->name);
			return 1;
		}
	}

	/* t3 and t4 fire once, t5 a few times */
	msleep(350);
	if (!readable(t[T3].fd) || !readable(t[T4].fd) || !readable(t[T5].fd)) {
		pr_err("t3, t4 or t5 did not fire\n");
		return 1;
	}
	t5_before = (clk(t[T5].clock) - t[T5].armed) / t[T5].interval;

	for (i = 0; i < NT; i++) {
		struct tfd *x = &t[i];
		struct itimerspec its;

		if (x->skip)
			continue;
		if (gettime(x, &its, &x->c_before) || fdinfo(x->fd, x->info, sizeof(x->info))) {
			pr_perror("%s: timerfd_gettime or fdinfo", x->name);
			return 1;
		}
		x->v_before = ts_ns(its.it_value);
		x->getfl = fcntl(x->fd, F_GETFL);
		x->getfd = fcntl(x->fd, F_GETFD);
	}
	/*
	 * timerfd_gettime() above re-armed the periodic timers; t12 expires
	 * again now and stays expired and unread (its timer not re-armed until
	 * someone reads or asks) through the checkpoint.
	 */
	msleep(50);
	t12_before = (clk(t[T12].clock) - t[T12].armed) / t[T12].interval;
	test_msg("armed; t5 has fired %lld times, t12 %lld times\n", (long long)t5_before, (long long)t12_before);

	test_daemon();
	test_waitsig();

	if (sabotage)
		do_sabotage();

	for (i = 0; i < NT; i++) {
		struct tfd *x = &t[i];
		char path[64], link[64] = "", info[256];
		struct itimerspec its;
		int64_t now, v;
		ssize_t l;

		if (x->skip)
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", x->fd);
		l = readlink(path, link, sizeof(link) - 1);
		if (l < 0) {
			test_check(0, "%s: fd %d is not open", x->name, x->fd);
			continue;
		}
		link[l] = '\0';
		test_check(!strcmp(link, "anon_inode:[timerfd]"), "%s: fd %d is %s", x->name, x->fd, link);
		test_check(fcntl(x->fd, F_GETFL) == x->getfl, "%s: F_GETFL %#x, was %#x", x->name, fcntl(x->fd, F_GETFL),
		      x->getfl);
		test_check(fcntl(x->fd, F_GETFD) == x->getfd, "%s: F_GETFD %#x, was %#x", x->name, fcntl(x->fd, F_GETFD),
		      x->getfd);
		if (fdinfo(x->fd, info, sizeof(info)) || strcmp(info, x->info))
			test_check(0, "%s: fdinfo is\n%swas\n%s", x->name, info, x->info);
		if (gettime(x, &its, &now)) {
			test_check(0, "%s: timerfd_gettime: %m", x->name);
			continue;
		}
		v = ts_ns(its.it_value);
		test_check(ts_ns(its.it_interval) == x->interval, "%s: interval %lld ns, expected %lld", x->name,
		      (long long)ts_ns(its.it_interval), (long long)x->interval);
		switch (i) {
		case T1: case T3: case T8: case T10:
			test_check(v <= x->v_before + 5 * MS && v >= x->v_before - (now - x->c_before) - 5 * MS,
			      "%s: remaining %lld ms; it was %lld ms %lld ms ago", x->name, (long long)(v / MS),
			      (long long)(x->v_before / MS), (long long)((now - x->c_before) / MS));
			break;
		case T2: case T6: case T9: case T11:
			if (v) {
				int64_t off = now + v - x->target;

				test_check(off <= 25 * MS && off >= -25 * MS,
				      "%s: expires %+lld ms off its absolute time", x->name, (long long)(off / MS));
			} else {
				/* t2 may have fired already (when is not known) */
				test_check(i == T2 && now >= x->target, "%s is disarmed", x->name);
				t2_fired = i == T2;
			}
			break;
		case T4: case T7:
			test_check(v == 0, "%s: armed (%lld ns)", x->name, (long long)v);
			break;
		case T5: case T12:
			/* periodic: always armed, the next expiry within one interval */
			test_check(v > 0 && v <= x->interval + 5 * MS, "%s: remaining %lld ms, interval %lld ms", x->name,
			      (long long)(v / MS), (long long)(x->interval / MS));
			break;
		}
	}

	/* unread expirations */
	n = ticks(&t[T3]);
	test_check(n == 1, "t3: %lld expirations read, expected 1", (long long)n);
	n = ticks(&t[T4]);
	test_check(n == 1, "t4: %lld expirations read, expected 1", (long long)n);
	test_check(!readable(t[T3].fd) && !readable(t[T4].fd), "t3 or t4 is still readable");
	n = ticks(&t[T5]);
	{
		int64_t most = (clk(t[T5].clock) - t[T5].armed) / t[T5].interval + 1;

		test_check(n >= t5_before && n <= most, "t5: %lld expirations read, expected %lld..%lld", (long long)n,
		      (long long)t5_before, (long long)most);
	}
	n = ticks(&t[T12]);
	{
		int64_t most = (clk(t[T12].clock) - t[T12].armed) / t[T12].interval + 1;

		test_check(n >= t12_before && n <= most, "t12: %lld expirations read, expected %lld..%lld", (long long)n,
		      (long long)t12_before, (long long)most);
	}
	for (i = 0; i < NT; i++)
		if (!t[i].skip && (i == T1 || (i >= T6 && i != T12)))
			test_check(!readable(t[i].fd), "%s is readable", t[i].name);

	/* t5 keeps counting */
	msleep(350);
	n = ticks(&t[T5]);
	test_check(n >= 2, "t5: %lld expirations in the 350 ms after reading, expected at least 2", (long long)n);
	n = ticks(&t[T12]);
	test_check(n >= 10, "t12: %lld expirations in the 350 ms after reading, expected at least 10", (long long)n);

	/* t2 fires at its absolute time */
	{
		int64_t end = clk(CLOCK_MONOTONIC) + (t[T2].target - clk(CLOCK_REALTIME)) + 3 * SEC, when;

		while (!readable(t[T2].fd) && clk(CLOCK_MONOTONIC) < end)
			msleep(5);
		when = clk(CLOCK_REALTIME);
		n = ticks(&t[T2]);
		test_check(n == 1, "t2: %lld expirations, expected 1", (long long)n);
		if (!t2_fired)
			test_check(when >= t[T2].target - 5 * MS && when <= t[T2].target + 2 * SEC,
			      "t2 (absolute) fired %+lld ms off its time (as seen by polling every 5 ms)",
			      (long long)((when - t[T2].target) / MS));
	}

	if (settime) {
		struct timespec ts;
		uint64_t x;

		clock_gettime(CLOCK_REALTIME, &ts);
		if (clock_settime(CLOCK_REALTIME, &ts)) {
			test_check(0, "clock_settime: %m");
		} else {
			errno = 0;
			test_check(read(t[T6].fd, &x, sizeof(x)) < 0 && errno == ECANCELED,
			      "t6 (TFD_TIMER_CANCEL_ON_SET): read after clock_settime: %m, expected ECANCELED");
		}
	}

	if (failed) {
		errno = 0;
		fail("timerfds changed (see above)");
		return 1;
	}
	pass();
	return 0;
}

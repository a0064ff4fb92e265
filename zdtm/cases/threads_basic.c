/*
 * threads_basic: a multi-threaded process survives checkpoint/restore with
 * every thread's identity, blocking call, TLS, signal mask, name and FPU
 * state.
 *
 * Thirteen threads besides the main one (which waits for SIGTERM):
 *   tb-cond        pthread_cond_wait                     (futex, no timeout)
 *   tb-condtimed   pthread_cond_timedwait, REALTIME +600 s (futex, timeout)
 *   tb-condclock   pthread_cond_clockwait, MONOTONIC +600 s
 *   tb-nanosleep   nanosleep(600 s)
 *   tb-clockabs    clock_nanosleep(MONOTONIC, TIMER_ABSTIME, +600 s)
 *   tb-poll        poll(NULL, 0, 600 s)
 *   tb-futex       FUTEX_WAIT, no timeout
 *   tb-futextimed  FUTEX_WAIT_BITSET, absolute MONOTONIC +600 s
 *   tb-sigwait     sigwaitinfo({SIGUSR2})
 *   tb-sigsuspend  sigsuspend() with a mask other than its own
 *   tb-mutex       pthread_mutex_lock of a mutex the main thread holds
 *   tb-pimutex     the same with a PTHREAD_PRIO_INHERIT mutex (FUTEX_LOCK_PI:
 *                  the futex word holds the main thread's TID)
 *   tb-vector      spins with patterns in ymm8-ymm15 (xmm8-xmm15 without
 *                  AVX), compared with memory on every iteration
 * (pipes and epoll are not used: those fds are not dumpable yet). Every
 * thread has its own __thread values, signal mask (all block SIGTERM),
 * name (pthread_setname_np) and MXCSR (rounding mode, FZ, DAZ).
 *
 * Before test_daemon() every blocking thread is seen sleeping (S) in its
 * system call (/proc/self/task/TID/syscall). After restore, the main thread
 * checks, before waking anyone:
 *  - /proc/self/task lists exactly the same TIDs;
 *  - for every thread: the name (comm), SigBlk (for tb-sigwait and
 *    tb-sigsuspend the temporary mask of the wait), state S and the system
 *    call (or restart_syscall, how the kernel restarts timed sleeps; within
 *    2 s), its __thread value (read through its address);
 *  - tb-vector still counts iterations and has seen no difference.
 * Then it wakes them all (condition broadcast, SIGUSR1 to the sleepers and
 * to tb-sigsuspend, FUTEX_WAKE, SIGUSR2 to tb-sigwait, mutex unlocks, a stop
 * flag) and each thread checks: gettid() unchanged, __thread values, its
 * signal mask (pthread_sigmask), its name (pthread_getname_np), MXCSR, and
 * that its call ended only because it was woken: no EINTR before the wake
 * (sigwaitinfo excepted: the kernel makes it fail with EINTR whenever the
 * thread is stopped, even by SIGSTOP, so it is retried and counted), no
 * timeout, no early completion. Every thread must be joined within 10 s.
 *
 * --sabotage=WHAT (debug): name, mask, vec, tls, eintr, tid.
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <linux/futex.h>

#include "zdtmtst.h"

const char *test_doc = "Check that threads in various blocking states are restored with TIDs, TLS, masks, names";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (name, mask, vec, tls, eintr, tid)", 0);

#define SEC 1000000000LL
#define LONG_WAIT 600
#define BIT(s) (1ULL << ((s)-1))

enum {
	COND, CONDTIMED, CONDCLOCK, NANOSLEEP, CLOCKABS, POLL, FUTEX, FUTEXTIMED, SIGWAIT, SIGSUSPEND, MUTEX, PIMUTEX,
	VECTOR, NTH
};

struct th {
	const char *name;
	int sys[3];		/* allowed system calls while it waits; 0: none (spins) */
	pthread_t pt;
	pid_t tid;
	uint64_t mask;		/* its own signal mask */
	uint64_t wait_mask;	/* SigBlk while it waits */
	uint32_t mxcsr;
	volatile uint64_t *tls_ptr;
	uint64_t tls_expect;
	volatile int ready;
	int failed;
	int eintr_retries;
	char why[512];
};

static struct th th[NTH] = {
	[COND] = { "tb-cond", { SYS_futex } },
	[CONDTIMED] = { "tb-condtimed", { SYS_futex, SYS_restart_syscall } },
	[CONDCLOCK] = { "tb-condclock", { SYS_futex, SYS_restart_syscall } },
	[NANOSLEEP] = { "tb-nanosleep", { SYS_clock_nanosleep, SYS_nanosleep, SYS_restart_syscall } },
	[CLOCKABS] = { "tb-clockabs", { SYS_clock_nanosleep, SYS_restart_syscall } },
	[POLL] = { "tb-poll", { SYS_poll, SYS_ppoll, SYS_restart_syscall } },
	[FUTEX] = { "tb-futex", { SYS_futex } },
	[FUTEXTIMED] = { "tb-futextimed", { SYS_futex, SYS_restart_syscall } },
	[SIGWAIT] = { "tb-sigwait", { SYS_rt_sigtimedwait } },
	[SIGSUSPEND] = { "tb-sigsuspend", { SYS_rt_sigsuspend } },
	[MUTEX] = { "tb-mutex", { SYS_futex } },
	[PIMUTEX] = { "tb-pimutex", { SYS_futex } },
	[VECTOR] = { "tb-vector", { 0 } },
};

static __thread volatile uint64_t tls_val;
static __thread uint8_t tls_buf[256];
static __thread volatile int tls_woken;
static __thread int tls_idx = -1;

static pthread_mutex_t cmutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static pthread_cond_t cond_mono;
static int go;
static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t pi;
static int32_t fword;
static uint64_t seed;

/* tb-vector */
static uint8_t pattern[8][32] __attribute__((aligned(32)));
static volatile int vstop;
static volatile uint64_t viters, vbad;
static int have_avx;

static int failed;

/* a failure seen by a thread: kept for the main thread to report */
static void thfail(struct th *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void thfail(struct th *t, const char *fmt, ...)
{
	size_t l = strlen(t->why);
	va_list ap;

	t->failed = 1;
	if (l + 4 >= sizeof(t->why))
		return;
	if (l)
		t->why[l++] = ';', t->why[l++] = ' ';
	va_start(ap, fmt);
	vsnprintf(t->why + l, sizeof(t->why) - l, fmt, ap);
	va_end(ap);
}

static pid_t gettid_(void)
{
	return syscall(SYS_gettid);
}

static uint32_t get_mxcsr(void)
{
	uint32_t v;

	asm volatile("stmxcsr %0" : "=m"(v));
	return v;
}

static void set_mxcsr(uint32_t v)
{
	asm volatile("ldmxcsr %0" : : "m"(v));
}

static void sigset_from(sigset_t *s, uint64_t m)
{
	int i;

	sigemptyset(s);
	for (i = 1; i <= 64; i++)
		if ((m & BIT(i)) && i != 32 && i != 33)
			sigaddset(s, i);
}

static uint64_t cur_mask(void)
{
	uint64_t m = 0;

	syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &m, 8);
	return m;
}

static void tls_fill(int i)
{
	size_t k;

	tls_val = th[i].tls_expect;
	for (k = 0; k < sizeof(tls_buf); k++)
		tls_buf[k] = (uint8_t)(seed >> (k % 8)) ^ (uint8_t)(i * 37 + k);
}

static int tls_ok(int i)
{
	size_t k;

	if (tls_val != th[i].tls_expect)
		return 0;
	for (k = 0; k < sizeof(tls_buf); k++)
		if (tls_buf[k] != ((uint8_t)(seed >> (k % 8)) ^ (uint8_t)(i * 37 + k)))
			return 0;
	return 1;
}

static void prologue(int i)
{
	struct th *t = &th[i];
	sigset_t s;

	tls_idx = i;
	t->tid = gettid_();
	pthread_setname_np(pthread_self(), t->name);
	sigset_from(&s, t->mask);
	pthread_sigmask(SIG_SETMASK, &s, NULL);
	set_mxcsr(t->mxcsr);
	tls_fill(i);
	t->tls_ptr = &tls_val;
	__atomic_store_n(&t->ready, 1, __ATOMIC_SEQ_CST);
}

static void epilogue(int i)
{
	struct th *t = &th[i];
	char name[32] = "";
	uint64_t m = cur_mask();

	if (gettid_() != t->tid)
		thfail(t, "gettid() %d, was %d", gettid_(), t->tid);
	if (!tls_ok(i))
		thfail(t, "__thread values changed (%#llx, expected %#llx)", (unsigned long long)tls_val,
		       (unsigned long long)t->tls_expect);
	if (m != t->mask)
		thfail(t, "signal mask %#llx, expected %#llx", (unsigned long long)m, (unsigned long long)t->mask);
	pthread_getname_np(pthread_self(), name, sizeof(name));
	if (strcmp(name, t->name))
		thfail(t, "name '%s'", name);
	if (get_mxcsr() != t->mxcsr)
		thfail(t, "MXCSR %#x, expected %#x", get_mxcsr(), t->mxcsr);
}

static struct timespec abs_in(clockid_t c, int sec)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	ts.tv_sec += sec;
	return ts;
}

static void *thread(void *arg)
{
	int i = (int)(intptr_t)arg, r;
	struct th *t = &th[i];

	prologue(i);
	switch (i) {
	case COND:
	case CONDTIMED:
	case CONDCLOCK: {
		struct timespec dl = abs_in(i == CONDCLOCK ? CLOCK_MONOTONIC : CLOCK_REALTIME, LONG_WAIT);

		pthread_mutex_lock(&cmutex);
		while (!go) {
			if (i == COND)
				r = pthread_cond_wait(&cond, &cmutex);
			else if (i == CONDTIMED)
				r = pthread_cond_timedwait(&cond, &cmutex, &dl);
			else
				r = pthread_cond_clockwait(&cond_mono, &cmutex, CLOCK_MONOTONIC, &dl);
			if (r) {
				thfail(t, "the condition wait failed: %s", strerror(r));
				break;
			}
		}
		pthread_mutex_unlock(&cmutex);
		break;
	}
	case NANOSLEEP:
	case CLOCKABS:
	case POLL:
		while (!tls_woken) {
			if (i == NANOSLEEP) {
				struct timespec req = { LONG_WAIT, 0 };

				r = nanosleep(&req, NULL) ? errno : 0;
			} else if (i == CLOCKABS) {
				struct timespec dl = abs_in(CLOCK_MONOTONIC, LONG_WAIT);

				r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &dl, NULL);
			} else {
				r = poll(NULL, 0, LONG_WAIT * 1000);
				r = r < 0 ? errno : r == 0 ? ETIMEDOUT : EIO;
			}
			if (r == EINTR && tls_woken)
				break;
			thfail(t, "the sleep ended before the wake: %s", r ? strerror(r) : "completed");
			break;
		}
		break;
	case FUTEX:
	case FUTEXTIMED:
		while (!__atomic_load_n(&fword, __ATOMIC_SEQ_CST)) {
			if (i == FUTEX) {
				r = syscall(SYS_futex, &fword, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
			} else {
				struct timespec dl = abs_in(CLOCK_MONOTONIC, LONG_WAIT);

				r = syscall(SYS_futex, &fword, FUTEX_WAIT_BITSET_PRIVATE, 0, &dl, NULL,
					    FUTEX_BITSET_MATCH_ANY);
			}
			if (r && errno != EAGAIN) {
				thfail(t, "FUTEX_WAIT failed: %m");
				break;
			}
		}
		break;
	case SIGWAIT: {
		sigset_t s;
		siginfo_t si;

		sigemptyset(&s);
		sigaddset(&s, SIGUSR2);
		for (;;) {
			r = sigwaitinfo(&s, &si);
			if (r < 0 && errno == EINTR) {
				t->eintr_retries++;
				continue;
			}
			if (r != SIGUSR2 || (si.si_code != SI_TKILL && si.si_code != SI_USER) || si.si_pid != getpid())
				thfail(t, "sigwaitinfo returned %d (si_code %d si_pid %d): %m", r, si.si_code,
				       si.si_pid);
			break;
		}
		break;
	}
	case SIGSUSPEND: {
		sigset_t s;

		sigset_from(&s, t->wait_mask);
		r = sigsuspend(&s);
		if (!(r < 0 && errno == EINTR && tls_woken))
			thfail(t, "sigsuspend ended before the wake: %m");
		break;
	}
	case MUTEX:
	case PIMUTEX:
		r = pthread_mutex_lock(i == MUTEX ? &held : &pi);
		if (r)
			thfail(t, "pthread_mutex_lock: %s", strerror(r));
		else
			pthread_mutex_unlock(i == MUTEX ? &held : &pi);
		break;
	case VECTOR:
		if (have_avx)
			asm volatile("vmovdqa 0(%[p]), %%ymm8\n\t"
				     "vmovdqa 32(%[p]), %%ymm9\n\t"
				     "vmovdqa 64(%[p]), %%ymm10\n\t"
				     "vmovdqa 96(%[p]), %%ymm11\n\t"
				     "vmovdqa 128(%[p]), %%ymm12\n\t"
				     "vmovdqa 160(%[p]), %%ymm13\n\t"
				     "vmovdqa 192(%[p]), %%ymm14\n\t"
				     "vmovdqa 224(%[p]), %%ymm15\n\t"
				     "1:\n\t"
#define CMPY(reg, off)                                   \
	"vpcmpeqb " #off "(%[p]), %%" #reg ", %%ymm0\n\t" \
	"vpmovmskb %%ymm0, %%eax\n\t"                     \
	"cmp $-1, %%eax\n\t"                              \
	"jne 3f\n\t"
				     CMPY(ymm8, 0) CMPY(ymm9, 32) CMPY(ymm10, 64) CMPY(ymm11, 96)
				     CMPY(ymm12, 128) CMPY(ymm13, 160) CMPY(ymm14, 192) CMPY(ymm15, 224)
				     "2:\n\t"
				     "lock incq (%[it])\n\t"
				     "cmpl $0, (%[stop])\n\t"
				     "je 1b\n\t"
				     "jmp 4f\n\t"
				     "3:\n\t"
				     "lock incq (%[bad])\n\t"
				     "vmovdqa 0(%[p]), %%ymm8\n\t"
				     "vmovdqa 32(%[p]), %%ymm9\n\t"
				     "vmovdqa 64(%[p]), %%ymm10\n\t"
				     "vmovdqa 96(%[p]), %%ymm11\n\t"
				     "vmovdqa 128(%[p]), %%ymm12\n\t"
				     "vmovdqa 160(%[p]), %%ymm13\n\t"
				     "vmovdqa 192(%[p]), %%ymm14\n\t"
				     "vmovdqa 224(%[p]), %%ymm15\n\t"
				     "jmp 2b\n\t"
				     "4:\n\t"
				     "vzeroupper\n\t"
				     :
				     : [p] "r"(pattern), [stop] "r"(&vstop), [it] "r"(&viters), [bad] "r"(&vbad)
				     : "rax", "cc", "memory", "xmm0", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
				       "xmm13", "xmm14", "xmm15");
		else
			asm volatile("movdqa 0(%[p]), %%xmm8\n\t"
				     "movdqa 32(%[p]), %%xmm9\n\t"
				     "movdqa 64(%[p]), %%xmm10\n\t"
				     "movdqa 96(%[p]), %%xmm11\n\t"
				     "movdqa 128(%[p]), %%xmm12\n\t"
				     "movdqa 160(%[p]), %%xmm13\n\t"
				     "movdqa 192(%[p]), %%xmm14\n\t"
				     "movdqa 224(%[p]), %%xmm15\n\t"
				     "1:\n\t"
#define CMPX(reg, off)                         \
	"movdqa %%" #reg ", %%xmm0\n\t"         \
	"pcmpeqb " #off "(%[p]), %%xmm0\n\t"    \
	"pmovmskb %%xmm0, %%eax\n\t"            \
	"cmp $0xffff, %%eax\n\t"                \
	"jne 3f\n\t"
				     CMPX(xmm8, 0) CMPX(xmm9, 32) CMPX(xmm10, 64) CMPX(xmm11, 96)
				     CMPX(xmm12, 128) CMPX(xmm13, 160) CMPX(xmm14, 192) CMPX(xmm15, 224)
				     "2:\n\t"
				     "lock incq (%[it])\n\t"
				     "cmpl $0, (%[stop])\n\t"
				     "je 1b\n\t"
				     "jmp 4f\n\t"
				     "3:\n\t"
				     "lock incq (%[bad])\n\t"
				     "movdqa 0(%[p]), %%xmm8\n\t"
				     "movdqa 32(%[p]), %%xmm9\n\t"
				     "movdqa 64(%[p]), %%xmm10\n\t"
				     "movdqa 96(%[p]), %%xmm11\n\t"
				     "movdqa 128(%[p]), %%xmm12\n\t"
				     "movdqa 160(%[p]), %%xmm13\n\t"
				     "movdqa 192(%[p]), %%xmm14\n\t"
				     "movdqa 224(%[p]), %%xmm15\n\t"
				     "jmp 2b\n\t"
				     "4:\n\t"
				     :
				     : [p] "r"(pattern), [stop] "r"(&vstop), [it] "r"(&viters), [bad] "r"(&vbad)
				     : "rax", "cc", "memory", "xmm0", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
				       "xmm13", "xmm14", "xmm15");
		if (vbad)
			thfail(t, "the vector registers changed %llu times (%s)", (unsigned long long)vbad,
			       have_avx ? "ymm8-ymm15" : "xmm8-xmm15");
		break;
	}
	epilogue(i);
	return NULL;
}

/* SIGUSR1: the wake-up of the sleepers */
static void usr1(int sig)
{
	(void)sig;
	tls_woken = 1;
}

/* SIGURG: --sabotage only */
static void urg(int sig, siginfo_t *si, void *ucp)
{
	ucontext_t *uc = ucp;

	(void)sig;
	(void)si;
	if (!sabotage)
		return;
	if (!strcmp(sabotage, "mask"))
		sigaddset(&uc->uc_sigmask, SIGRTMAX);
	else if (!strcmp(sabotage, "vec") && uc->uc_mcontext.fpregs)
		uc->uc_mcontext.fpregs->_xmm[8].element[0] ^= 1;
}

static void do_sabotage(void)
{
	test_msg("sabotage: %s\n", sabotage);
	if (!strcmp(sabotage, "name"))
		pthread_setname_np(th[POLL].pt, "tb-other");
	else if (!strcmp(sabotage, "mask"))
		pthread_kill(th[COND].pt, SIGURG);
	else if (!strcmp(sabotage, "vec"))
		pthread_kill(th[VECTOR].pt, SIGURG);
	else if (!strcmp(sabotage, "tls"))
		*th[CLOCKABS].tls_ptr ^= 1;
	else if (!strcmp(sabotage, "eintr"))
		pthread_kill(th[NANOSLEEP].pt, SIGURG);
	else if (!strcmp(sabotage, "tid"))
		th[FUTEX].tid++;
	else
		test_check(0, "unknown --sabotage=%s", sabotage);
	usleep(200000);
}

static int read_str(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, size - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

static char task_state(pid_t tid)
{
	char path[64], buf[512], *p;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	if (read_str(path, buf, sizeof(buf)))
		return 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

static long task_syscall(pid_t tid)
{
	char path[64], buf[256];

	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
	if (read_str(path, buf, sizeof(buf)))
		return -2;
	if (!strncmp(buf, "running", 7))
		return -1;
	return strtol(buf, NULL, 10);
}

static uint64_t task_sigblk(pid_t tid)
{
	char path[64], line[256];
	uint64_t v = ~0ULL;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	f = fopen(path, "r");
	if (!f)
		return v;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "SigBlk:", 7))
			v = strtoull(line + 7, NULL, 16);
	fclose(f);
	return v;
}

/* the thread sleeps in one of its system calls; "" or what is wrong */
static const char *blocked_ok(struct th *t, char *buf, size_t size)
{
	long sc = task_syscall(t->tid);
	char st = task_state(t->tid);
	int k;

	for (k = 0; k < 3 && t->sys[k]; k++)
		if (sc == t->sys[k])
			break;
	if (st == 'S' && k < 3 && t->sys[k])
		return "";
	snprintf(buf, size, "state %c, system call %ld", st ? st : '?', sc);
	return buf;
}

static int wait_blocked(int quiet)
{
	int i, n;
	char buf[64];

	for (n = 0; n < 200; n++) {
		for (i = 0; i < NTH; i++)
			if (th[i].sys[0] && *blocked_ok(&th[i], buf, sizeof(buf)))
				break;
		if (i == NTH)
			return 0;
		usleep(10000);
	}
	for (i = 0; i < NTH; i++)
		if (th[i].sys[0] && *blocked_ok(&th[i], buf, sizeof(buf)) && !quiet)
			test_msg("%s (tid %d): %s\n", th[i].name, th[i].tid, blocked_ok(&th[i], buf, sizeof(buf)));
	return -1;
}

static int list_tasks(pid_t *tids, int max)
{
	char path[] = "/proc/self/task";
	int n = 0;
	DIR *d = opendir(path);
	struct dirent *e;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && n < max)
			tids[n++] = atoi(e->d_name);
	closedir(d);
	return n;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = usr1 };
	struct sigaction sa_urg = { .sa_sigaction = urg, .sa_flags = SA_SIGINFO | SA_RESTART };
	pthread_mutexattr_t ma;
	pthread_condattr_t ca;
	uint64_t v0, v1;
	pid_t tids[64];
	int i, n;

	test_init(argc, argv);

	__builtin_cpu_init();
	have_avx = __builtin_cpu_supports("avx2") || __builtin_cpu_supports("avx");
	seed = ((uint64_t)lrand48() << 32) ^ lrand48() ^ getpid();
	zdtm_fill_seeded(pattern, sizeof(pattern), seed);

	sigemptyset(&sa.sa_mask);
	sigemptyset(&sa_urg.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) || sigaction(SIGURG, &sa_urg, NULL)) {
		pr_perror("sigaction");
		return 1;
	}
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&cond_mono, &ca);
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setprotocol(&ma, PTHREAD_PRIO_INHERIT);
	if (pthread_mutex_init(&pi, &ma)) {
		pr_perror("PI mutex");
		return 1;
	}
	pthread_mutex_lock(&held);
	pthread_mutex_lock(&pi);

	for (i = 0; i < NTH; i++) {
		struct th *t = &th[i];
		uint64_t m = BIT(SIGTERM) | BIT(SIGRTMIN + i) | BIT(SIGRTMIN + 14 + (i * 5) % 17) | BIT(SIGUSR2);

		/* woken by SIGUSR1 or not */
		if (i != NANOSLEEP && i != CLOCKABS && i != POLL)
			m |= BIT(SIGUSR1);
		if (i & 1)
			m |= BIT(SIGHUP);
		t->mask = m;
		t->wait_mask = m;
		if (i == SIGWAIT)
			t->wait_mask = m & ~BIT(SIGUSR2);
		if (i == SIGSUSPEND)
			t->wait_mask = (m & ~BIT(SIGUSR1)) | BIT(SIGINT) | BIT(SIGRTMAX);
		t->mxcsr = 0x1f80 | ((i % 4) << 13) | ((i & 4) ? 0x8000 : 0) | ((i & 8) ? 0x40 : 0);
		t->tls_expect = seed * (i + 1) + 0x1234567;
		if (pthread_create(&t->pt, NULL, thread, (void *)(intptr_t)i)) {
			pr_perror("pthread_create");
			return 1;
		}
	}
	for (i = 0; i < NTH; i++)
		while (!__atomic_load_n(&th[i].ready, __ATOMIC_SEQ_CST))
			usleep(1000);
	if (wait_blocked(0)) {
		pr_err("the threads did not all get to their blocking calls\n");
		return 1;
	}
	v0 = viters;
	usleep(50000);
	if (viters == v0 || vbad) {
		pr_err("tb-vector does not spin or sees differences (%llu)\n", (unsigned long long)vbad);
		return 1;
	}
	for (i = 0; i < NTH; i++)
		test_msg("%-14s tid %d mask %016llx mxcsr %04x syscall %ld\n", th[i].name, th[i].tid,
			 (unsigned long long)th[i].mask, th[i].mxcsr, task_syscall(th[i].tid));
	test_msg("tb-vector uses %s\n", have_avx ? "ymm8-ymm15" : "xmm8-xmm15");

	test_daemon();
	test_waitsig();

	if (sabotage)
		do_sabotage();

	/* the same threads */
	n = list_tasks(tids, ARRAY_SIZE(tids));
	test_check(n == NTH + 1, "%d threads, expected %d", n, NTH + 1);
	for (i = 0; i < n; i++) {
		int k;

		for (k = 0; k < NTH && th[k].tid != tids[i]; k++)
			;
		test_check(k < NTH || tids[i] == getpid(), "unknown thread %d", tids[i]);
	}
	test_check(gettid_() == getpid(), "the main thread's TID %d is not the PID %d", gettid_(), getpid());

	/* each one, from outside */
	wait_blocked(1);
	for (i = 0; i < NTH; i++) {
		struct th *t = &th[i];
		char path[64], comm[32] = "", buf[64];
		const char *why;
		uint64_t blk;

		snprintf(path, sizeof(path), "/proc/self/task/%d/comm", t->tid);
		if (read_str(path, comm, sizeof(comm))) {
			test_check(0, "%s: thread %d does not exist", t->name, t->tid);
			continue;
		}
		test_check(!strcmp(comm, t->name), "%s (tid %d): comm is '%s'", t->name, t->tid, comm);
		blk = task_sigblk(t->tid);
		test_check(blk == t->wait_mask, "%s (tid %d): SigBlk %016llx, expected %016llx", t->name, t->tid,
		      (unsigned long long)blk, (unsigned long long)t->wait_mask);
		if (t->sys[0]) {
			why = blocked_ok(t, buf, sizeof(buf));
			test_check(!*why, "%s (tid %d) is not sleeping in its system call: %s", t->name, t->tid, why);
		}
		test_check(*t->tls_ptr == t->tls_expect, "%s: its __thread value is %#llx, expected %#llx", t->name,
		      (unsigned long long)*t->tls_ptr, (unsigned long long)t->tls_expect);
	}
	v0 = viters;
	usleep(100000);
	v1 = viters;
	test_check(v1 > v0, "tb-vector does not spin any more (%llu iterations)", (unsigned long long)v1);
	test_check(vbad == 0, "tb-vector saw its vector registers change %llu times", (unsigned long long)vbad);

	/* wake everyone */
	pthread_mutex_lock(&cmutex);
	go = 1;
	pthread_cond_broadcast(&cond);
	pthread_cond_broadcast(&cond_mono);
	pthread_mutex_unlock(&cmutex);
	pthread_kill(th[NANOSLEEP].pt, SIGUSR1);
	pthread_kill(th[CLOCKABS].pt, SIGUSR1);
	pthread_kill(th[POLL].pt, SIGUSR1);
	pthread_kill(th[SIGSUSPEND].pt, SIGUSR1);
	__atomic_store_n(&fword, 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, &fword, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
	pthread_kill(th[SIGWAIT].pt, SIGUSR2);
	pthread_mutex_unlock(&held);
	pthread_mutex_unlock(&pi);
	vstop = 1;

	for (i = 0; i < NTH; i++) {
		struct th *t = &th[i];
		struct timespec dl = abs_in(CLOCK_REALTIME, 10);
		int r = pthread_timedjoin_np(t->pt, NULL, &dl);

		if (r) {
			test_check(0, "%s (tid %d) could not be joined: %s (state %c, system call %ld)", t->name, t->tid,
			      strerror(r), task_state(t->tid), task_syscall(t->tid));
			continue;
		}
		test_check(!t->failed, "%s (tid %d): %s", t->name, t->tid, t->why);
		if (t->eintr_retries)
			test_msg("%s: sigwaitinfo failed with EINTR %d times (the kernel does that when the thread is "
				 "stopped)\n", t->name, t->eintr_retries);
	}
	test_msg("tb-vector: %llu iterations\n", (unsigned long long)viters);

	if (failed) {
		errno = 0;
		fail("threads changed (see above)");
		exit(1);
	}
	pass();
	return 0;
}

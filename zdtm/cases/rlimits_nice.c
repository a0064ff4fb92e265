/*
 * rlimits_nice: task attributes survive checkpoint/restore.
 *
 * The root sets, to values that are not the defaults:
 *   rlimits      soft and hard limits lowered (never raised: the case runs
 *                unprivileged) for NOFILE, STACK, CORE, AS, FSIZE, DATA,
 *                MEMLOCK, MSGQUEUE, SIGPENDING, NPROC, CPU, RSS, LOCKS,
 *                RTTIME; all 16 limits are compared after restore
 *   nice         7 (getpriority and field 19 of /proc/self/stat)
 *   affinity     CPU 1 only (sched_getaffinity); skipped with a message
 *                when CPU 1 is not available
 *   personality  ADDR_NO_RANDOMIZE added (personality(0xffffffff))
 *   umask        035 (umask(), the Umask line of /proc/self/status, and the
 *                mode of a file created with 0777 after restore)
 *   subreaper    PR_SET_CHILD_SUBREAPER 1
 *   dumpable     PR_SET_DUMPABLE 0 (and back to 1 after the checks: the
 *                flag is not otherwise needed)
 *   name         PR_SET_NAME "ckpt-rlim.root" (PR_GET_NAME, /proc/self/comm)
 *
 * It also holds fd 600, above its own NOFILE limit (allowed: the limit only
 * stops new fds), which must come back.
 *
 * then forks a child, which inherits all of that (its subreaper flag is 0)
 * and sets
 *   pdeathsig    PR_SET_PDEATHSIG SIGUSR2 (with a handler counting it: its
 *                parent, the root, stays alive, so it must never arrive)
 *   name         "ckpt-rlim.kid"
 * A death signal only makes sense in a process whose parent stays: the
 * root's parent is the launcher, which exits as soon as the case is ready.
 *
 * Both record their attributes once set (and check they took), and after
 * SIGTERM compare them with the current ones. The child exits 0 if all is
 * well; the root reaps it and passes only then.
 *
 * --sabotage=WHAT (debug): rlimit, nice, affinity, personality, umask,
 * subreaper, dumpable, name (in the root) or pdeath (in the child): change
 * that attribute after SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that rlimits, nice, affinity, personality, umask and prctl flags are restored";

static char *sabotage;
TEST_OPTION(sabotage, string,
	    "debug: change an attribute after SIGTERM (rlimit, nice, affinity, personality, umask, subreaper, "
	    "dumpable, name, pdeath)",
	    0);

static int sabotaged(const char *what)
{
	return sabotage && !strcmp(sabotage, what);
}

#define NLIMITS 16
#define NICE 7
#define UMASK 035
#define CPU 1
#define ROOT_NAME "ckpt-rlim.root"
#define KID_NAME "ckpt-rlim.kid"
#define UMASK_FILE "rlimits_nice.umask"
#define WAIT_SECS 15

static const char *limit_names[NLIMITS] = {
	"CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE",
	"MEMLOCK", "AS", "LOCKS", "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME",
};

/* what each lowered limit should become (clamped to the current hard limit) */
static const struct {
	int res;
	rlim_t cur, max;
} lowered[] = {
	{ RLIMIT_NOFILE, 517, 1031 },
	{ RLIMIT_STACK, 4 << 20 | 12288, 64 << 20 },
	{ RLIMIT_CORE, 12288, 1 << 20 },
	{ RLIMIT_AS, 1UL << 30, 3UL << 30 },
	{ RLIMIT_FSIZE, (1UL << 30) + 4096, 2UL << 30 },
	{ RLIMIT_DATA, 768UL << 20, 1UL << 30 },
	{ RLIMIT_MEMLOCK, 64 << 10, 128 << 10 },
	{ RLIMIT_MSGQUEUE, 409600, 409601 },
	{ RLIMIT_SIGPENDING, 1001, 2003 },
	{ RLIMIT_NPROC, 40009, 50021 },
	{ RLIMIT_CPU, 3601, 7207 },
	{ RLIMIT_RSS, 1UL << 30, 2UL << 30 },
	{ RLIMIT_LOCKS, 1009, 2017 },
	{ RLIMIT_RTTIME, 10000003, 20000003 },
};

struct attrs {
	struct rlimit lim[NLIMITS];
	int nice, stat_nice;
	int has_cpu; /* affinity is checked */
	cpu_set_t cpus;
	unsigned long persona;
	mode_t umask, status_umask;
	int subreaper, dumpable, pdeathsig;
	char name[17], comm[17];
};

static volatile sig_atomic_t usr2;

static void on_usr2(int sig)
{
	(void)sig;
	usr2++;
}

/* field 19 of /proc/self/stat */
static int stat_nice(void)
{
	char buf[1024], *p, *tok, *save = NULL;
	int field = 2;

	if (test_read_file("/proc/self/stat", buf, sizeof(buf)) < 0 || !(p = strrchr(buf, ')')))
		return 99;
	for (tok = strtok_r(p + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
		if (++field == 19)
			return atoi(tok);
	return 99;
}

static mode_t status_umask(void)
{
	char buf[4096], *p;

	if (test_read_file("/proc/self/status", buf, sizeof(buf)) < 0 || !(p = strstr(buf, "\nUmask:")))
		return 07777;
	return strtoul(p + 7, NULL, 8);
}

static int get_attrs(struct attrs *a, int want_cpu)
{
	int i;

	memset(a, 0, sizeof(*a));
	for (i = 0; i < NLIMITS; i++)
		if (getrlimit(i, &a->lim[i])) {
			pr_perror("getrlimit(%s)", limit_names[i]);
			return -1;
		}
	errno = 0;
	a->nice = getpriority(PRIO_PROCESS, 0);
	if (errno) {
		pr_perror("getpriority");
		return -1;
	}
	a->stat_nice = stat_nice();
	a->has_cpu = want_cpu;
	if (sched_getaffinity(0, sizeof(a->cpus), &a->cpus)) {
		pr_perror("sched_getaffinity");
		return -1;
	}
	a->persona = personality(0xffffffff);
	a->umask = umask(0);
	umask(a->umask);
	a->status_umask = status_umask();
	if (prctl(PR_GET_CHILD_SUBREAPER, (unsigned long)&a->subreaper, 0, 0, 0) ||
	    prctl(PR_GET_PDEATHSIG, (unsigned long)&a->pdeathsig, 0, 0, 0) ||
	    prctl(PR_GET_NAME, (unsigned long)a->name, 0, 0, 0)) {
		pr_perror("prctl(PR_GET_*)");
		return -1;
	}
	a->dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	if (test_read_file("/proc/self/comm", a->comm, sizeof(a->comm)) < 0) {
		pr_perror("read /proc/self/comm");
		return -1;
	}
	a->comm[strcspn(a->comm, "\n")] = '\0';
	return 0;
}

static int failed;

/* b (now) against a (recorded); who: "root" or "child" */
static void compare(const char *who, const struct attrs *a, const struct attrs *b)
{
	int i;

	for (i = 0; i < NLIMITS; i++)
		test_check(a->lim[i].rlim_cur == b->lim[i].rlim_cur && a->lim[i].rlim_max == b->lim[i].rlim_max,
		      "%s: RLIMIT_%s is %llu/%llu, was %llu/%llu", who, limit_names[i],
		      (unsigned long long)b->lim[i].rlim_cur, (unsigned long long)b->lim[i].rlim_max,
		      (unsigned long long)a->lim[i].rlim_cur, (unsigned long long)a->lim[i].rlim_max);
	test_check(a->nice == b->nice && a->stat_nice == b->stat_nice, "%s: nice %d (stat %d), was %d (stat %d)", who,
	      b->nice, b->stat_nice, a->nice, a->stat_nice);
	if (a->has_cpu)
		test_check(CPU_EQUAL(&a->cpus, &b->cpus) && CPU_COUNT(&b->cpus) == 1 && CPU_ISSET(CPU, &b->cpus),
		      "%s: CPU affinity changed: %d CPUs, CPU %d %s (was CPU %d only)", who, CPU_COUNT(&b->cpus), CPU,
		      CPU_ISSET(CPU, &b->cpus) ? "in" : "not in", CPU);
	test_check(a->persona == b->persona, "%s: personality %#lx, was %#lx", who, b->persona, a->persona);
	test_check(a->umask == b->umask && a->status_umask == b->status_umask,
	      "%s: umask %03o (status %03o), was %03o (status %03o)", who, b->umask, b->status_umask, a->umask,
	      a->status_umask);
	test_check(a->subreaper == b->subreaper, "%s: child subreaper %d, was %d", who, b->subreaper, a->subreaper);
	test_check(a->dumpable == b->dumpable, "%s: dumpable %d, was %d", who, b->dumpable, a->dumpable);
	test_check(a->pdeathsig == b->pdeathsig, "%s: parent death signal %d, was %d", who, b->pdeathsig, a->pdeathsig);
	test_check(!strcmp(a->name, b->name) && !strcmp(a->comm, b->comm), "%s: name '%s' (comm '%s'), was '%s' ('%s')",
	      who, b->name, b->comm, a->name, a->comm);
}

/* the umask must act: a file created with 0777 */
static void check_umask_acts(const char *who, mode_t mask)
{
	struct stat st;
	char name[64];
	int fd;

	snprintf(name, sizeof(name), "%s.%s", UMASK_FILE, who);
	unlink(name);
	fd = open(name, O_CREAT | O_EXCL | O_WRONLY, 0777);
	if (fd < 0) {
		test_msg("FAILED: %s: create %s: %s\n", who, name, strerror(errno));
		failed = 1;
		return;
	}
	if (fstat(fd, &st))
		test_msg("FAILED: %s: fstat %s: %s\n", who, name, strerror(errno)), failed = 1;
	else
		test_check((st.st_mode & 07777) == (0777 & ~mask), "%s: a file created with 0777 got %03o, expected %03o",
		      who, st.st_mode & 07777, 0777 & ~mask);
	close(fd);
	unlink(name);
}

static int set_attrs(int *use_cpu)
{
	cpu_set_t cpus;
	size_t i;
	int p;

	for (i = 0; i < ARRAY_SIZE(lowered); i++) {
		struct rlimit old, new;

		if (getrlimit(lowered[i].res, &old)) {
			pr_perror("getrlimit(%s)", limit_names[lowered[i].res]);
			return -1;
		}
		new.rlim_max = lowered[i].max < old.rlim_max ? lowered[i].max : old.rlim_max;
		new.rlim_cur = lowered[i].cur < new.rlim_max ? lowered[i].cur : new.rlim_max;
		if (new.rlim_cur == old.rlim_cur && new.rlim_max == old.rlim_max)
			test_msg("RLIMIT_%s is already %llu/%llu: left as it is\n", limit_names[lowered[i].res],
				 (unsigned long long)old.rlim_cur, (unsigned long long)old.rlim_max);
		if (setrlimit(lowered[i].res, &new)) {
			pr_perror("setrlimit(%s, %llu/%llu)", limit_names[lowered[i].res],
				  (unsigned long long)new.rlim_cur, (unsigned long long)new.rlim_max);
			return -1;
		}
	}

	errno = 0;
	p = getpriority(PRIO_PROCESS, 0);
	if (errno || p >= NICE) {
		pr_err("nice is already %d: can't raise it to %d\n", p, NICE);
		return -1;
	}
	if (setpriority(PRIO_PROCESS, 0, NICE)) {
		pr_perror("setpriority(%d)", NICE);
		return -1;
	}

	if (sched_getaffinity(0, sizeof(cpus), &cpus)) {
		pr_perror("sched_getaffinity");
		return -1;
	}
	*use_cpu = CPU_ISSET(CPU, &cpus) && CPU_COUNT(&cpus) > 1;
	if (*use_cpu) {
		CPU_ZERO(&cpus);
		CPU_SET(CPU, &cpus);
		if (sched_setaffinity(0, sizeof(cpus), &cpus)) {
			pr_perror("sched_setaffinity(CPU %d)", CPU);
			return -1;
		}
	} else {
		test_msg("CPU %d is not available besides others: CPU affinity is not checked\n", CPU);
	}

	p = personality(0xffffffff);
	if (p < 0 || personality(p | ADDR_NO_RANDOMIZE) < 0) {
		pr_perror("personality(ADDR_NO_RANDOMIZE)");
		return -1;
	}
	umask(UMASK);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) || prctl(PR_SET_NAME, (unsigned long)ROOT_NAME, 0, 0, 0) ||
	    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) {
		pr_perror("prctl(PR_SET_*)");
		return -1;
	}
	return 0;
}

/* the values must have taken before the dump */
static int took(const char *who, const struct attrs *a)
{
	if (a->nice != NICE || a->stat_nice != NICE || !(a->persona & ADDR_NO_RANDOMIZE) || a->umask != UMASK ||
	    a->status_umask != UMASK || a->dumpable != 0 ||
	    (a->has_cpu && (CPU_COUNT(&a->cpus) != 1 || !CPU_ISSET(CPU, &a->cpus)))) {
		pr_err("%s: the attributes did not take: nice %d/%d personality %#lx umask %03o/%03o dumpable %d\n",
		       who, a->nice, a->stat_nice, a->persona, a->umask, a->status_umask, a->dumpable);
		return -1;
	}
	return 0;
}

static void __attribute__((noreturn)) child(int wfd, int use_cpu)
{
	struct sigaction sa = { .sa_handler = on_usr2 };
	struct attrs before, after;

	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR2, &sa, NULL) || prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0) ||
	    prctl(PR_SET_NAME, (unsigned long)KID_NAME, 0, 0, 0)) {
		pr_perror("child: set up");
		_exit(1);
	}
	if (get_attrs(&before, use_cpu) || took("child", &before))
		_exit(1);
	if (before.subreaper != 0 || before.pdeathsig != SIGUSR2 || strcmp(before.name, KID_NAME)) {
		pr_err("child: subreaper %d pdeathsig %d name %s before the dump\n", before.subreaper,
		       before.pdeathsig, before.name);
		_exit(1);
	}
	close(wfd);
	test_waitsig();
	if (sabotaged("pdeath"))
		prctl(PR_SET_PDEATHSIG, SIGUSR1, 0, 0, 0);
	if (get_attrs(&after, use_cpu))
		_exit(1);
	compare("child", &before, &after);
	test_check(usr2 == 0, "child: got the parent death signal %d times (its parent is alive)", (int)usr2);
	check_umask_acts("child", before.umask);
	_exit(failed ? 1 : 0);
}

#define HIGH_FD 600
static struct stat high_st;

int main(int argc, char **argv)
{
	struct attrs before, after;
	int pfd[2], use_cpu = 0, status, c;
	pid_t pid;

	test_init(argc, argv);

	/* an fd above the NOFILE limit set below (517): kept, and restored */
	if (dup2(1, HIGH_FD) != HIGH_FD || fstat(HIGH_FD, &high_st)) {
		pr_perror("dup2 to fd %d", HIGH_FD);
		return 1;
	}
	if (set_attrs(&use_cpu) || get_attrs(&before, use_cpu) || took("root", &before))
		return 1;
	if (before.subreaper != 1 || before.pdeathsig != 0 || strcmp(before.name, ROOT_NAME)) {
		pr_err("root: subreaper %d pdeathsig %d name %s\n", before.subreaper, before.pdeathsig, before.name);
		return 1;
	}
	for (c = 0; c < NLIMITS; c++)
		test_msg("RLIMIT_%s %llu/%llu\n", limit_names[c], (unsigned long long)before.lim[c].rlim_cur,
			 (unsigned long long)before.lim[c].rlim_max);

	if (pipe(pfd)) {
		pr_perror("pipe");
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		pr_perror("fork");
		return 1;
	}
	if (pid == 0) {
		close(pfd[0]);
		child(pfd[1], use_cpu);
	}
	close(pfd[1]);
	if (read(pfd[0], &c, 1) != 0) {
		pr_err("the child failed to start\n");
		return 1;
	}
	close(pfd[0]);

	test_daemon();
	test_waitsig();

	if (sabotaged("rlimit")) {
		struct rlimit r = before.lim[RLIMIT_NOFILE];

		r.rlim_cur--;
		setrlimit(RLIMIT_NOFILE, &r);
	}
	if (sabotaged("nice"))
		setpriority(PRIO_PROCESS, 0, NICE + 1);
	if (sabotaged("affinity")) {
		cpu_set_t cpus;

		CPU_ZERO(&cpus);
		CPU_SET(0, &cpus);
		sched_setaffinity(0, sizeof(cpus), &cpus);
	}
	if (sabotaged("personality"))
		personality(before.persona & ~ADDR_NO_RANDOMIZE);
	if (sabotaged("umask"))
		umask(022);
	if (sabotaged("subreaper"))
		prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
	if (sabotaged("dumpable"))
		prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	if (sabotaged("name"))
		prctl(PR_SET_NAME, (unsigned long)"ckpt-rlim.xxxx", 0, 0, 0);

	if (get_attrs(&after, use_cpu)) {
		fail("can't read the attributes after restore");
		return 1;
	}
	compare("root", &before, &after);
	{
		struct stat st;

		test_check(fstat(HIGH_FD, &st) == 0 && st.st_ino == high_st.st_ino && st.st_dev == high_st.st_dev,
			   "fd %d (above the NOFILE limit) is gone or another file after restore", HIGH_FD);
	}
	check_umask_acts("root", before.umask);

	if (kill(pid, SIGTERM))
		test_msg("FAILED: kill(child %d): %s\n", pid, strerror(errno)), failed = 1;
	if (test_wait_exit(pid, &status, WAIT_SECS))
		test_msg("FAILED: waitpid(child %d): %s\n", pid, strerror(errno)), failed = 1;
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child (pid %d) ended with status %#x", pid,
		      status);

	/* not needed any more; a non-dumpable process is harder to look at if something goes wrong */
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	if (failed) {
		errno = 0;
		fail("task attributes were not restored");
		return 1;
	}
	pass();
	return 0;
}

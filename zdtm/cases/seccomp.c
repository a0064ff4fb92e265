/*
 * seccomp: seccomp filters and strict mode survive checkpoint/restore.
 *
 * The root sets no_new_privs (it runs unprivileged) and installs
 *	A	mincore -> EPERM-like errno 101
 * then starts a thread T, and installs (with SECCOMP_FILTER_FLAG_LOG)
 *	B	sched_get_priority_max -> errno 102
 * so the root's chain is A, B. T installs
 *	C	sched_get_priority_min -> errno 103
 * so T's chain is A, C (A shared by both). The root then forks
 *	F	inherits A, B
 *	S	(forked first: strict mode cannot follow filter mode) enters
 *		strict mode and echoes bytes (c -> c + 1) over two pipes;
 *		on 'x' it calls getppid(), which strict mode answers with SIGKILL.
 *
 * Each of R, T and F checks, before the dump and after SIGTERM, that its
 * filtered calls fail with exactly its errnos, that the other calls work,
 * and that /proc/self/status shows filter mode with the right number of
 * filters. After SIGTERM the root also checks that S still echoes, is in
 * strict mode, and is killed by SIGKILL for a forbidden call.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that seccomp filters and strict mode are restored";

static int failed;

static int install(int nr, int err, unsigned flags)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog p = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &p);
}

/* "Seccomp:" and "Seccomp_filters:" of /proc/thread-self/status */
static void seccomp_status(int *mode, int *filters)
{
	char line[256];
	FILE *f = fopen("/proc/thread-self/status", "r");

	*mode = *filters = -1;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "Seccomp: %d", mode);
		sscanf(line, "Seccomp_filters: %d", filters);
	}
	fclose(f);
}

/* errno of a filtered call, 0 if it was let through */
static int blocked(long nr)
{
	long r;

	errno = 0;
	r = syscall(nr, SCHED_FIFO, 0, 0);
	return r == -1 && errno >= 101 && errno <= 103 ? errno : 0;
}

/* who: the expected errnos of mincore, priority_max, priority_min */
static void check_filters(const char *who, int e_mincore, int e_max, int e_min, int nfilters)
{
	int mode, n;

	test_check(blocked(SYS_mincore) == e_mincore, "%s: mincore gives errno %d, expected %d", who,
		   blocked(SYS_mincore), e_mincore);
	test_check(blocked(SYS_sched_get_priority_max) == e_max, "%s: sched_get_priority_max gives errno %d, expected %d",
		   who, blocked(SYS_sched_get_priority_max), e_max);
	test_check(blocked(SYS_sched_get_priority_min) == e_min, "%s: sched_get_priority_min gives errno %d, expected %d",
		   who, blocked(SYS_sched_get_priority_min), e_min);
	test_check(getppid() > 0, "%s: getppid fails", who);
	seccomp_status(&mode, &n);
	test_check(mode == SECCOMP_MODE_FILTER && n == nfilters, "%s: seccomp mode %d with %d filters, expected 2 with %d",
		   who, mode, n, nfilters);
}

static int t_go[2], t_done[2];

static void *thread_main(void *arg)
{
	char c;

	(void)arg;
	if (install(SYS_sched_get_priority_min, 103, 0)) {
		pr_perror("T: install C");
		failed = 1;
	}
	check_filters("T before", 101, 0, 103, 2);
	write(t_done[1], "r", 1);
	if (read(t_go[0], &c, 1) != 1)
		return NULL;
	check_filters("T after", 101, 0, 103, 2);
	write(t_done[1], "d", 1);
	return NULL;
}

static void __attribute__((noreturn)) strict_child(int in, int out)
{
	char c;

	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_STRICT, 0, NULL))
		syscall(SYS_exit, 2);
	write(out, "s", 1);
	for (;;) {
		if (read(in, &c, 1) != 1)
			syscall(SYS_exit, 1);
		if (c == 'q')
			syscall(SYS_exit, 0);
		if (c == 'x')
			getppid(); /* SIGKILL */
		c++;
		write(out, &c, 1);
	}
}

static int echo(int to, int from, char c)
{
	char r = 0;

	if (write(to, &c, 1) != 1 || read(from, &r, 1) != 1)
		return -1;
	return r;
}

int main(int argc, char **argv)
{
	int f_go[2], s_in[2], s_out[2], status, mode, n;
	pid_t f, s;
	pthread_t t;
	char c;

	test_init(argc, argv);

	if (pipe(t_go) || pipe(t_done) || pipe(f_go) || pipe(s_in) || pipe(s_out)) {
		pr_perror("pipe");
		return 1;
	}
	s = fork();
	if (s < 0) {
		pr_perror("fork S");
		return 1;
	}
	if (s == 0)
		strict_child(s_in[0], s_out[1]);
	close(s_in[0]);
	close(s_out[1]);
	if (read(s_out[0], &c, 1) != 1 || c != 's') {
		pr_err("S did not enter strict mode\n");
		return 1;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
		pr_perror("PR_SET_NO_NEW_PRIVS");
		return 1;
	}
	if (install(SYS_mincore, 101, 0)) {
		pr_perror("install A");
		return 1;
	}
	if (pthread_create(&t, NULL, thread_main, NULL)) {
		pr_err("pthread_create failed\n");
		return 1;
	}
	if (read(t_done[0], &c, 1) != 1) {
		pr_perror("waiting for T");
		return 1;
	}
	if (install(SYS_sched_get_priority_max, 102, SECCOMP_FILTER_FLAG_LOG)) {
		pr_perror("install B");
		return 1;
	}
	check_filters("R before", 101, 102, 0, 2);

	f = fork();
	if (f < 0) {
		pr_perror("fork F");
		return 1;
	}
	if (f == 0) {
		check_filters("F before", 101, 102, 0, 2);
		if (read(f_go[0], &c, 1) != 1)
			_exit(3);
		check_filters("F after", 101, 102, 0, 2);
		_exit(failed ? 1 : 0);
	}
	test_check(echo(s_in[1], s_out[0], 'a') == 'b', "S does not echo before the dump");

	test_daemon();
	test_waitsig();

	check_filters("R after", 101, 102, 0, 2);
	write(t_go[1], "g", 1);
	if (read(t_done[0], &c, 1) != 1 || c != 'd')
		test_check(0, "T did not finish its checks");
	pthread_join(t, NULL);

	write(f_go[1], "g", 1);
	if (test_wait_exit(f, &status, 10))
		test_check(0, "F: waitpid: %s", strerror(errno));
	else
		test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "F ended with status %#x", status);

	test_check(echo(s_in[1], s_out[0], 'c') == 'd', "S does not echo after restore");
	{
		char path[64], line[256];
		FILE *st;

		snprintf(path, sizeof(path), "/proc/%d/status", s);
		mode = n = -1;
		st = fopen(path, "r");
		while (st && fgets(line, sizeof(line), st))
			sscanf(line, "Seccomp: %d", &mode);
		if (st)
			fclose(st);
		test_check(mode == SECCOMP_MODE_STRICT, "S: seccomp mode %d, expected strict (1)", mode);
	}
	c = 'x';
	write(s_in[1], &c, 1);
	if (test_wait_exit(s, &status, 10))
		test_check(0, "S: waitpid: %s", strerror(errno));
	else
		test_check(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
			   "S ended with status %#x, expected SIGKILL for a forbidden call in strict mode", status);

	if (failed)
		fail("seccomp state differs");
	else
		pass();
	return 0;
}

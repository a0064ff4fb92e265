/*
 * ns.c - the "ns" flavour (ZDTM_NEWNS): run a zdtm program in new pid, mount,
 * net, ipc and uts namespaces.
 *
 *   runner -> program (ZDTM_NEWNS=1, "outer launcher")
 *               unshare(NEWPID|NEWNS|NEWNET|NEWIPC|NEWUTS), fork:
 *             ns init, PID 1 inside: private mounts, fresh /proc, lo up,
 *               re-exec with ZDTM_NEWNS=2, fork + re-exec with ZDTM_NEWNS=3:
 *             the test: the usual protocol (log, launcher, test_daemon ...),
 *               its launcher writes <pidfile>.inner (pid inside the ns).
 *   When the inner launcher exits 0, the ns init reports success through a
 *   pipe and the outer launcher writes the init's pid (as the runner sees
 *   it) into <pidfile> and exits 0. The init then reaps orphans, forwards
 *   SIGTERM to the test, and when every process of the namespace is gone it
 *   publishes the log (if the test did not) and unlinks the pidfiles.
 *
 * The "uns" flavour (ZDTM_USERNS=2 or 1 as well): before the other
 * namespaces the outer launcher unshares a user namespace, which thus owns
 * them, and a short-lived child of it, still outside, writes its maps.
 * With 2 (the runner's default) every id is shifted, as in CRIU's zdtm and
 * in an unprivileged container (USERNS_SHIFTED_*: the namespace's root is
 * host 100000:200000, the host's root is not mapped), and the launcher
 * becomes the namespace's root; the runner gives the work directory to
 * the program's ids as the host sees them. With 1, ids below 65536 map to
 * themselves and only those above are shifted (USERNS_UID_MAP,
 * USERNS_GID_MAP): for the few cases that need the host's root mapped.
 *
 * Not yet supported compared with CRIU's zdtm: no pivot_root into ZDTM_ROOT
 * (the host's root directory is kept, in a private mount namespace).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"
#include "ns.h"

#define NS_FLAGS (CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
#define STATUS_FD_ENV "ZDTM_NS_STATUS_FD"
#define USERNS_UID_MAP "0 0 65536\n65536 200000 65536\n"
#define USERNS_GID_MAP "0 0 65536\n65536 300000 65536\n"
#define USERNS_SHIFTED_UID_MAP "0 100000 65536\n"
#define USERNS_SHIFTED_GID_MAP "0 200000 65536\n"

char *ns_inner_pidfile(void)
{
	static char path[PATH_MAX];

	if (snprintf(path, sizeof(path), "%s.inner", pidfile) >= (int)sizeof(path)) {
		fprintf(stderr, "pidfile name %s is too long\n", pidfile);
		exit(1);
	}
	return path;
}

static void self_exe(char *buf, size_t size)
{
	ssize_t n = readlink("/proc/self/exe", buf, size - 1);

	if (n < 0) {
		fprintf(stderr, "Can't read /proc/self/exe: %s\n", strerror(errno));
		exit(1);
	}
	buf[n] = '\0';
}

/*
 * Run this program again through /proc/self/exe, not by its path: a
 * program that runs from a memfd or an unlinked file has no path to exec.
 */
static void exec_self(const char *exe, char **argv)
{
	extern char **environ;
	int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);

	if (fd >= 0)
		fexecve(fd, argv, environ);
	execv(exe, argv);
}

static int lo_up(void)
{
	struct ifreq ifr;
	int sk, ret = -1;

	sk = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sk < 0)
		return -1;
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(sk, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		ret = ioctl(sk, SIOCSIFFLAGS, &ifr);
	}
	close(sk);
	return ret;
}

/*
 * Detaches the copies of other trials' mounts (under the work root, the
 * parent of this trial's directory, the cwd): trials run side by side,
 * and a mount another one makes and unmounts while this tree runs would
 * stay in this tree's copy of the host's mounts, its mount point gone
 * by the time the tree is restored.
 */
static int detach_neighbours(void)
{
	char cwd[PATH_MAX], root[PATH_MAX], line[4096], point[PATH_MAX];
	static char points[64][PATH_MAX];
	size_t rl, cl;
	int n = 0, i;
	char *slash;
	FILE *f;

	if (!getcwd(cwd, sizeof(cwd)))
		return -1;
	strcpy(root, cwd);
	slash = strrchr(root, '/');
	if (!slash || slash == root)
		return 0;
	slash[1] = '\0';
	rl = strlen(root);
	cl = strlen(cwd);
	f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f) && n < 64) {
		if (sscanf(line, "%*d %*d %*s %*s %4095s", point) != 1)
			continue;
		if (strncmp(point, root, rl) || (!strncmp(point, cwd, cl) && (point[cl] == '/' || !point[cl])))
			continue;
		strcpy(points[n++], point);
	}
	fclose(f);
	/* children before their parents: mountinfo lists parents first */
	for (i = n - 1; i >= 0; i--)
		umount2(points[i], MNT_DETACH);
	return 0;
}

static void __attribute__((noreturn)) ns_exec_init(const char *exe, char **argv, int status_fd)
{
	char buf[16];

	if (setsid() < 0) {
		fprintf(stderr, "ns: setsid: %s\n", strerror(errno));
		_exit(1);
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) {
		fprintf(stderr, "ns: can't make / private: %s\n", strerror(errno));
		_exit(1);
	}
	if (detach_neighbours()) {
		fprintf(stderr, "ns: can't detach other trials' mounts: %s\n", strerror(errno));
		_exit(1);
	}
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) {
		fprintf(stderr, "ns: can't mount /proc: %s\n", strerror(errno));
		_exit(1);
	}
	if (lo_up()) {
		fprintf(stderr, "ns: can't bring lo up: %s\n", strerror(errno));
		_exit(1);
	}
	/* the status pipe survives the exec */
	if (fcntl(status_fd, F_SETFD, 0)) {
		fprintf(stderr, "ns: fcntl: %s\n", strerror(errno));
		_exit(1);
	}
	snprintf(buf, sizeof(buf), "%d", status_fd);
	setenv(STATUS_FD_ENV, buf, 1);
	setenv("ZDTM_NEWNS", "2", 1);
	exec_self(exe, argv);
	fprintf(stderr, "ns: can't exec %s: %s\n", exe, strerror(errno));
	_exit(1);
}

/*
 * The caller enters a new user namespace; a child of it, outside, writes
 * the maps (a process cannot give itself more than its own id).
 */
static void ns_enter_userns(int shifted)
{
	int go[2], status;
	char path[64], c;
	pid_t self = getpid(), pid;

	if (pipe2(go, O_CLOEXEC)) {
		fprintf(stderr, "ns: pipe: %s\n", strerror(errno));
		exit(1);
	}
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "ns: fork: %s\n", strerror(errno));
		exit(1);
	}
	if (pid == 0) {
		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(1);
		snprintf(path, sizeof(path), "/proc/%d/uid_map", self);
		if (test_write_file(path, shifted ? USERNS_SHIFTED_UID_MAP : USERNS_UID_MAP)) {
			fprintf(stderr, "ns: can't write %s: %s\n", path, strerror(errno));
			_exit(1);
		}
		snprintf(path, sizeof(path), "/proc/%d/gid_map", self);
		if (test_write_file(path, shifted ? USERNS_SHIFTED_GID_MAP : USERNS_GID_MAP)) {
			fprintf(stderr, "ns: can't write %s: %s\n", path, strerror(errno));
			_exit(1);
		}
		_exit(0);
	}
	close(go[0]);
	if (unshare(CLONE_NEWUSER)) {
		fprintf(stderr, "ns: can't create a user namespace: %s\n", strerror(errno));
		exit(1);
	}
	if (write(go[1], "g", 1) != 1 || waitpid(pid, &status, 0) != pid || status) {
		fprintf(stderr, "ns: the user namespace was not mapped (status %#x)\n", status);
		exit(1);
	}
	close(go[1]);
	/* The host's root is not mapped there: become the namespace's. */
	if (shifted && (setgroups(0, NULL) || setresgid(0, 0, 0) || setresuid(0, 0, 0))) {
		fprintf(stderr, "ns: can't become the user namespace's root: %s\n", strerror(errno));
		exit(1);
	}
}

void ns_create(int argc, char **argv)
{
	char exe[PATH_MAX];
	int pfd[2], status = -1;
	char *val;
	ssize_t n;
	pid_t pid;

	(void)argc;
	self_exe(exe, sizeof(exe));

	if (pipe2(pfd, O_CLOEXEC)) {
		fprintf(stderr, "ns: pipe: %s\n", strerror(errno));
		exit(1);
	}
	val = getenv("ZDTM_USERNS");
	if (val && (!strcmp(val, "1") || !strcmp(val, "2")))
		ns_enter_userns(!strcmp(val, "2"));
	if (unshare(NS_FLAGS)) {
		fprintf(stderr, "ns: can't create namespaces: %s\n", strerror(errno));
		exit(1);
	}
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "ns: fork: %s\n", strerror(errno));
		exit(1);
	}
	if (pid == 0) {
		close(pfd[0]);
		ns_exec_init(exe, argv, pfd[1]);
	}
	close(pfd[1]);

	do
		n = read(pfd[0], &status, sizeof(status));
	while (n < 0 && errno == EINTR);
	if (n != sizeof(status) || status != 0) {
		fprintf(stderr, "ns: the test failed to start (status %d)\n", status);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		exit(1);
	}
	if (zdtm_write_pidfile(pid))
		exit(1);
	_exit(0);
}

static void ns_noop(int signo)
{
	(void)signo;
}

static pid_t read_pid(const char *path)
{
	char buf[32];
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return atoi(buf);
}

static void report(pid_t pid, int status)
{
	if (WIFEXITED(status) && WEXITSTATUS(status))
		test_msg("ns init: process %d exited with code %d\n", pid, WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		test_msg("ns init: process %d was killed by signal %d\n", pid, WTERMSIG(status));
}

void ns_init(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = ns_noop };
	char exe[PATH_MAX], log[PATH_MAX];
	int status_fd, status, ok = 0, got_term = 0;
	sigset_t set, old;
	pid_t pid, test_pid = -1;
	char *val, *inner;

	(void)argc;
	inner = ns_inner_pidfile();
	val = getenv(STATUS_FD_ENV);
	if (!val) {
		fprintf(stderr, "ns init: %s is not set\n", STATUS_FD_ENV);
		exit(1);
	}
	status_fd = atoi(val);
	unsetenv(STATUS_FD_ENV);
	fcntl(status_fd, F_SETFD, FD_CLOEXEC);
	self_exe(exe, sizeof(exe));
	snprintf(log, sizeof(log), "%s%s", outfile, INPROGRESS);

	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);

	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "ns init: fork: %s\n", strerror(errno));
		exit(1);
	}
	if (pid == 0) {
		sa.sa_handler = SIG_DFL;
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGCHLD, &sa, NULL);
		sigprocmask(SIG_SETMASK, &old, NULL);
		setenv("ZDTM_NEWNS", "3", 1);
		exec_self(exe, argv);
		fprintf(stderr, "ns init: can't exec %s: %s\n", exe, strerror(errno));
		_exit(1);
	}

	/* the inner launcher exits when the test is ready */
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			status = -1;
			break;
		}
	if (status == 0) {
		int fd;

		test_pid = read_pid(inner);
		fd = open(log, O_WRONLY | O_APPEND | O_CLOEXEC);
		if (test_pid > 0 && fd >= 0) {
			/* from now on our diagnostics go to the test's log */
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
			close(fd);
			fd = open("/dev/null", O_RDWR);
			if (fd >= 0) {
				dup2(fd, STDIN_FILENO);
				if (fd > STDERR_FILENO)
					close(fd);
			}
			ok = 1;
		} else {
			fprintf(stderr, "ns init: can't read %s or open %s: %s\n", inner, log, strerror(errno));
		}
	}
	status = ok ? 0 : 1;
	while (write(status_fd, &status, sizeof(status)) < 0 && errno == EINTR)
		;
	close(status_fd);
	if (!ok)
		exit(1);

	/* PID 1: reap everything, forward SIGTERM to the test */
	for (;;) {
		siginfo_t si;
		int st;

		while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
			report(pid, st);
		if (pid < 0 && errno == ECHILD)
			break;
		if (sigwaitinfo(&set, &si) == SIGTERM && !got_term) {
			got_term = 1;
			if (kill(test_pid, SIGTERM))
				test_msg("ns init: can't send SIGTERM to the test %d: %m\n", test_pid);
		}
	}
	if (!got_term)
		test_msg("ns init: every process of the test exited before SIGTERM\n");

	/* the test publishes its log at exit; do it if it could not */
	if (access(log, F_OK) == 0)
		rename(log, outfile);
	unlink(inner);
	unlink(pidfile);
	exit(got_term ? 0 : 1);
}

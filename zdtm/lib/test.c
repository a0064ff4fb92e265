/*
 * test.c - the zdtm test-program protocol (see ZDTM_PROTOCOL.md):
 * test_init(), test_daemon(), test_waitsig(), test_go() and the exit hook.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"
#include "lock.h"
#include "ns.h"

/* the last signal received: SIGTERM in the test, SIGTERM/SIGCHLD in the launcher */
futex_t sig_received;

enum {
	STAGE_INIT = 0,
	STAGE_RUNNING,
	STAGE_FAIL,
};

/* one MAP_SHARED|MAP_ANONYMOUS page shared by the launcher and the test */
static struct zdtm_shared {
	futex_t stage;
} *shared;

static volatile sig_atomic_t is_launcher;

char *outfile;
TEST_OPTION(outfile, string, "output file (the log; written to <outfile>.inprogress while running)", 1);
char *pidfile;
TEST_OPTION(pidfile, string, "file to store the pid of the test in", 1);

static pid_t master_pid;
static int cwd_fd = -1;

static void sig_hand(int signo)
{
	if (is_launcher && shared)
		futex_set_and_wake(&shared->stage, STAGE_FAIL);
	futex_set_and_wake(&sig_received, signo);
}

int test_fork_id(int id)
{
	(void)id;
	return fork();
}

pid_t test_master_pid(void)
{
	return master_pid;
}

/*
 * atexit hook: the original process (its pid is in the pidfile) publishes
 * the log and removes the pidfile. Relative to the directory the test was
 * started in, whatever its cwd is now.
 */
static void test_fini(void)
{
	char path[PATH_MAX];

	if (getpid() != master_pid)
		return;

	snprintf(path, sizeof(path), "%s%s", outfile, INPROGRESS);
	renameat(cwd_fd, path, cwd_fd, outfile);
	unlinkat(cwd_fd, pidfile, 0);
}

static void setup_outfile(void)
{
	struct stat st;

	if (lstat(outfile, &st) == 0 || errno != ENOENT) {
		fprintf(stderr, "Output file %s appears to exist, aborting\n", outfile);
		exit(1);
	}

	cwd_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cwd_fd < 0) {
		fprintf(stderr, "Can't open the working directory: %s\n", strerror(errno));
		exit(1);
	}

	if (atexit(test_fini)) {
		fprintf(stderr, "Can't register the exit hook\n");
		exit(1);
	}

	if (test_log_init(outfile, INPROGRESS))
		exit(1);
}

static void redir_stdin(void)
{
	int fd = open("/dev/null", O_RDWR);

	if (fd < 0) {
		pr_perror("Can't open /dev/null");
		exit(1);
	}
	if (fd != STDIN_FILENO) {
		if (dup2(fd, STDIN_FILENO) < 0) {
			pr_perror("Can't make /dev/null stdin");
			exit(1);
		}
		close(fd);
	}
}

static int parse_id(const char *s, unsigned int *out)
{
	char *end;
	unsigned long v;

	if (!s || !*s || *s == '-')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > UINT_MAX - 1)
		return -1;
	*out = v;
	return 0;
}

/* ZDTM_GROUPS, ZDTM_GID, ZDTM_UID: drop to these credentials */
static void set_creds(void)
{
	unsigned int id;
	char *val;

	val = getenv("ZDTM_GROUPS");
	if (val) {
		gid_t groups[NGROUPS_MAX];
		char *copy = strdup(val), *tok, *save = NULL;
		size_t n = 0;

		if (!copy) {
			fprintf(stderr, "Out of memory\n");
			exit(1);
		}
		for (tok = strtok_r(copy, " ,", &save); tok; tok = strtok_r(NULL, " ,", &save)) {
			if (n == NGROUPS_MAX || parse_id(tok, &id)) {
				fprintf(stderr, "Bad ZDTM_GROUPS=%s\n", val);
				exit(1);
			}
			groups[n++] = id;
		}
		free(copy);
		if (setgroups(n, groups)) {
			fprintf(stderr, "Can't set groups %s: %s\n", val, strerror(errno));
			exit(1);
		}
	}

	val = getenv("ZDTM_GID");
	if (val) {
		if (parse_id(val, &id)) {
			fprintf(stderr, "Bad ZDTM_GID=%s\n", val);
			exit(1);
		}
		if (setgid(id)) {
			fprintf(stderr, "Can't set gid %u: %s\n", id, strerror(errno));
			exit(1);
		}
	}

	val = getenv("ZDTM_UID");
	if (val) {
		if (parse_id(val, &id)) {
			fprintf(stderr, "Bad ZDTM_UID=%s\n", val);
			exit(1);
		}
		if (setuid(id)) {
			fprintf(stderr, "Can't set uid %u: %s\n", id, strerror(errno));
			exit(1);
		}
	}

	/* a uid change makes the process non-dumpable */
	if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)) {
		fprintf(stderr, "Can't set the dumpable flag: %s\n", strerror(errno));
		exit(1);
	}
}

/* write the pid, without a newline, to a temporary file and rename it */
int zdtm_write_pidfile(pid_t pid)
{
	char tmp[] = ".zdtm.pidfile.XXXXXX";
	int fd;

	fd = mkstemp(tmp);
	if (fd < 0) {
		pr_perror("Can't create a temporary pidfile in the working directory");
		return -1;
	}
	if (fchmod(fd, 0644) || dprintf(fd, "%d", (int)pid) < 0) {
		pr_perror("Can't write %s", tmp);
		goto err;
	}
	if (close(fd)) {
		fd = -1;
		pr_perror("Can't write %s", tmp);
		goto err;
	}
	fd = -1;
	if (rename(tmp, pidfile)) {
		pr_perror("Can't rename %s to %s", tmp, pidfile);
		goto err;
	}
	return 0;
err:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return -1;
}

/* the launcher: wait until the test is ready (or dead), publish its pid */
static void __attribute__((noreturn)) launcher(pid_t pid)
{
	int status;

	futex_wait_while(&shared->stage, STAGE_INIT);

	if (futex_get(&shared->stage) != STAGE_RUNNING) {
		pid_t ret = waitpid(pid, &status, WNOHANG);

		if (ret == 0) {
			/* not the test's death: someone signalled the launcher */
			pr_err("Launcher got signal %d before the test was ready; killing the test\n",
			       futex_get(&sig_received));
			kill(pid, SIGKILL);
			ret = waitpid(pid, &status, 0);
		}
		if (ret != pid)
			pr_perror("Can't wait for the test %d", pid);
		else if (WIFEXITED(status))
			pr_err("Test exited unexpectedly with code %d\n", WEXITSTATUS(status));
		else if (WIFSIGNALED(status))
			pr_err("Test exited on unexpected signal %d\n", WTERMSIG(status));
		_exit(1);
	}

	if (zdtm_write_pidfile(pid))
		_exit(1);
	_exit(0);
}

void test_init(int argc, char **argv)
{
	struct sigaction sa = {
		.sa_handler = sig_hand,
		.sa_flags = SA_RESTART,
	};
	sigset_t block, old;
	char *val;
	pid_t pid;

	sigemptyset(&sa.sa_mask);

	parseargs(argc, argv);

	val = getenv("ZDTM_NEWNS");
	if (val) {
		if (!strcmp(val, "1"))
			ns_create(argc, argv); /* does not return */
		if (!strcmp(val, "2"))
			ns_init(argc, argv); /* does not return */
		if (strcmp(val, "3")) {
			fprintf(stderr, "Bad ZDTM_NEWNS=%s (1 to start in new namespaces)\n", val);
			exit(1);
		}
		/* "3": the test itself, inside the namespaces */
		pidfile = ns_inner_pidfile();
	}

	set_creds();

	if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGCHLD, &sa, NULL)) {
		fprintf(stderr, "Can't set the SIGTERM/SIGCHLD handlers: %s\n", strerror(errno));
		exit(1);
	}

	setup_outfile();
	redir_stdin();

	shared = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED) {
		pr_perror("Can't map the shared stage page");
		exit(1);
	}
	futex_set(&shared->stage, STAGE_INIT);

	/* no signal may be handled between fork() and knowing who we are */
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGCHLD);
	sigprocmask(SIG_BLOCK, &block, &old);

	pid = fork();
	if (pid < 0) {
		pr_perror("Can't fork the test");
		exit(1);
	}
	if (pid > 0) {
		is_launcher = 1;
		sigprocmask(SIG_SETMASK, &old, NULL);
		launcher(pid);
	}

	is_launcher = 0;
	/*
	 * The stage page is for the launcher and this process only: children
	 * the test forks must not inherit it (it would make every
	 * multi-process case share anonymous memory by accident).
	 */
	if (madvise(shared, PAGE_SIZE, MADV_DONTFORK))
		pr_perror("madvise(MADV_DONTFORK) of the stage page");
	/* record the test pid: it owns the log and the pidfile */
	master_pid = getpid();

	sa.sa_handler = SIG_DFL;
	if (sigaction(SIGCHLD, &sa, NULL)) {
		pr_perror("Can't reset the SIGCHLD handler");
		exit(1);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);

	if (setsid() < 0) {
		pr_perror("Can't become a session leader");
		exit(1);
	}

	srand48(time(NULL) ^ getpid()); /* for cases that use lrand48() */
}

void test_daemon(void)
{
	struct zdtm_shared *s = shared;

	if (!s) {
		pr_err("test_daemon() called twice or before test_init()\n");
		return;
	}
	shared = NULL;
	futex_set_and_wake(&s->stage, STAGE_RUNNING);
	/*
	 * The launcher has its own mapping of the page; the test needs it no
	 * more, so a case's address space holds no shared memory of ours.
	 */
	munmap(s, PAGE_SIZE);
}

int test_go(void)
{
	return !futex_get(&sig_received);
}

void test_waitsig(void)
{
	int saved = errno;

	futex_wait_while(&sig_received, 0);
	errno = saved;
}

int test_wait_exit(pid_t pid, int *status, int secs)
{
	struct timespec ts = { 0, 10 * 1000 * 1000 };
	int i;

	for (i = 0; i < secs * 100; i++) {
		pid_t r = waitpid(pid, status, WNOHANG);

		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR)
			return -1;
		nanosleep(&ts, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, status, 0);
	errno = ETIMEDOUT;
	return -1;
}

int test_wait_exit_code(pid_t pid, const char *name, int code, int secs, const char *by)
{
	int status;

	if (test_wait_exit(pid, &status, secs)) {
		pr_perror("%s (pid %d): not reaped by %s", name, pid, by);
		return 0;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != code) {
		pr_err("%s (pid %d): status 0x%x, want exit %d\n", name, pid, status, code);
		return 0;
	}
	return 1;
}

int test_sysvipc_lock(void)
{
	int fd = open("/run/lock/ckpt-sysvipc.lock", O_RDONLY | O_CREAT | O_CLOEXEC, 0644);

	if (fd >= 0 && flock(fd, LOCK_EX)) {
		close(fd);
		fd = -1;
	}
	return fd;
}

void test_sysvipc_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

int test_read_ready(int fd, char *buf, int len)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int got = 0, n;

	while (got < len && poll(&p, 1, 200) == 1 && (p.revents & POLLIN)) {
		n = read(fd, buf + got, len - got);
		if (n <= 0)
			break;
		got += n;
	}
	return got;
}

int test_check_open_file(int fd, const char *path, off_t pos, const char *data)
{
	struct stat st_fd, st_path;
	char buf[256];
	ssize_t n;

	if (fstat(fd, &st_fd) || stat(path, &st_path) || st_fd.st_dev != st_path.st_dev ||
	    st_fd.st_ino != st_path.st_ino) {
		fail("the open fd %d is not the file %s", fd, path);
		return 1;
	}
	if (lseek(fd, 0, SEEK_CUR) != pos) {
		fail("the fd's offset is lost (want %lld)", (long long)pos);
		return 1;
	}
	n = pread(fd, buf, sizeof(buf), 0);
	if (n != (ssize_t)strlen(data) || memcmp(buf, data, n)) {
		fail("the file's data differ (%zd bytes)", n);
		return 1;
	}
	return 0;
}

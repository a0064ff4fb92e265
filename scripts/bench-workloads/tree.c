/*
 * Workload: a tree of N processes, each with its own private data.
 *
 *   tree N FANOUT [MIB]      N processes (the root included) in a complete
 *                            FANOUT-ary tree: process i (0 = the root, in
 *                            breadth-first order) is the parent of
 *                            FANOUT*i+1 .. FANOUT*i+FANOUT. FANOUT = N-1
 *                            makes a root with N-1 children. Each process
 *                            has MIB MiB (default 1) of pseudo-random data
 *                            in its own private anonymous mapping, filled
 *                            by itself (no page is shared copy-on-write).
 *
 * Nothing is shared between processes when the dump starts: each parent
 * forks its children first and maps its data after, and the pipes used
 * to collect readiness up the tree (one per parent) are closed by every
 * process before the bench's ready pipe reaches end-of-file. Every process
 * then sleeps in pause() (the leaves and the inner ones alike).
 *
 * Ready line: "ready pid=N procs=N". The check, when the bench sends
 * SIGUSR1 to the root after a restore (all of it in signal handlers):
 *   - SIGUSR1, in every process: forward SIGUSR1 to its children, then
 *     check its own data (the checksum taken at fill time) and that
 *     getpid() and getppid() are still what they were; remember the result.
 *   - then the root sends SIGTERM to its children. SIGTERM, in every other
 *     process: forward SIGTERM to its children, reap them with waitpid, and
 *     _exit with the number of processes of its subtree that passed their
 *     check (itself included). SIGUSR1 (10) is always delivered before
 *     SIGTERM (15) when both are pending, and each handler blocks the
 *     other, so no process is asked to exit before it has checked.
 *   - the root compares each child's exit status with the size of that
 *     child's subtree and writes "ok procs=N" or "bad ..." (which child,
 *     its status, how many passed).
 * The root survives the check; its children are gone after it, so the
 * check runs once (a second SIGUSR1 writes "bad ...").
 */
#include "bench_lib.c"

#include <sys/wait.h>

static int nprocs, fanout;
static size_t nbytes;

/* This process. */
static int idx;
static pid_t my_pid, my_ppid;
static uint64_t *data;
static uint64_t expected_sum;
static volatile sig_atomic_t checked; /* 0: no SIGUSR1 yet, 1: ok, 2: bad */
static pid_t kids[4096];
static int kid_idx[4096];
static int nkids;

static int first_child(int i)
{
	return fanout * i + 1;
}

static int subtree_size(int i)
{
	int n = 1;
	for (int c = first_child(i); c < first_child(i) + fanout && c < nprocs; c++)
		n += subtree_size(c);
	return n;
}

static uint64_t checksum(const uint64_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

static void fill(void)
{
	data = mmap(NULL, nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (data == MAP_FAILED)
		bench_die("process %d: mmap %zu bytes: %s", idx, nbytes, strerror(errno));
	uint64_t x = (uint64_t)(idx + 1) * 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < nbytes / 8; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		data[i] = x * 0x2545f4914f6cdd1dULL;
	}
	expected_sum = checksum(data, nbytes / 8);
}

static void check_self(void)
{
	int ok = checksum(data, nbytes / 8) == expected_sum && getpid() == my_pid &&
		 (idx == 0 || getppid() == my_ppid);
	checked = ok ? 1 : 2;
}

static void on_usr1_inner(int sig)
{
	(void)sig;
	int saved = errno;
	for (int k = 0; k < nkids; k++)
		kill(kids[k], SIGUSR1);
	check_self();
	errno = saved;
}

/* Reap every child; the number of processes of our subtree that passed. */
static int collect(pid_t *bad_pid, int *bad_status, int *bad_expected)
{
	int passed = checked == 1;
	for (int k = 0; k < nkids; k++) {
		int st = 0;
		pid_t r;
		do
			r = waitpid(kids[k], &st, 0);
		while (r < 0 && errno == EINTR);
		int want = subtree_size(kid_idx[k]);
		int got = r == kids[k] && WIFEXITED(st) ? WEXITSTATUS(st) : 0;
		passed += got;
		if (got != want && bad_pid && !*bad_pid) {
			*bad_pid = kids[k];
			*bad_status = r == kids[k] ? st : -1;
			*bad_expected = want;
		}
	}
	return passed;
}

static void on_term_inner(int sig)
{
	(void)sig;
	for (int k = 0; k < nkids; k++)
		kill(kids[k], SIGTERM);
	_exit(collect(NULL, NULL, NULL));
}

static void verify_root(struct bench_buf *b)
{
	static int done;
	if (done++) {
		bench_put(b, "bad the check runs once (the children exited after the first)");
		return;
	}
	for (int k = 0; k < nkids; k++)
		kill(kids[k], SIGUSR1);
	check_self();
	for (int k = 0; k < nkids; k++)
		kill(kids[k], SIGTERM);
	pid_t bad_pid = 0;
	int bad_status = 0, bad_expected = 0;
	int passed = collect(&bad_pid, &bad_status, &bad_expected);
	int ok = passed == nprocs && checked == 1;
	bench_put(b, ok ? "ok procs=" : "bad passed=");
	bench_put_dec(b, (uint64_t)passed);
	if (!ok) {
		bench_put(b, "/");
		bench_put_dec(b, (uint64_t)nprocs);
		if (checked != 1)
			bench_put(b, " root_data_or_pid=bad");
		if (bad_pid) {
			bench_put(b, " first_short_child=");
			bench_put_dec(b, (uint64_t)bad_pid);
			if (bad_status < 0) {
				bench_put(b, " (waitpid failed)");
			} else if (WIFEXITED(bad_status)) {
				bench_put(b, " exit=");
				bench_put_dec(b, (uint64_t)WEXITSTATUS(bad_status));
				bench_put(b, " of_subtree=");
				bench_put_dec(b, (uint64_t)bad_expected);
			} else if (WIFSIGNALED(bad_status)) {
				bench_put(b, " killed_by_signal=");
				bench_put_dec(b, (uint64_t)WTERMSIG(bad_status));
			}
		}
	}
}

static void handle(int sig, void (*fn)(int))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sigfillset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	if (sigaction(sig, &sa, NULL))
		bench_die("process %d: sigaction: %s", idx, strerror(errno));
}

int main(int argc, char **argv)
{
	bench_init();
	if (argc < 3)
		bench_die("usage: %s NPROCS FANOUT [MIB]", argv[0]);
	nprocs = atoi(argv[1]);
	fanout = atoi(argv[2]);
	nbytes = (size_t)(argc > 3 ? strtoull(argv[3], NULL, 0) : 1) << 20;
	if (nprocs < 1 || fanout < 1 || fanout > 4096 || !nbytes)
		bench_die("bad arguments");
	/* Each child's exit status carries its subtree's count. */
	for (int c = 1; c <= fanout && c < nprocs; c++)
		if (subtree_size(c) > 255)
			bench_die("subtree of process %d has %d processes; at most 255 (use a larger FANOUT)", c,
				  subtree_size(c));

	int up_w = -1; /* to the parent: one byte once our subtree is ready */
	idx = 0;
	my_pid = getpid();
	my_ppid = getppid();
	for (;;) {
		/* Fork our children before mapping our data, so none inherits it. */
		int down[2] = {-1, -1};
		int c0 = first_child(idx);
		nkids = 0;
		if (c0 < nprocs && pipe(down))
			bench_die("process %d: pipe: %s", idx, strerror(errno));
		int child = -1;
		for (int c = c0; c < c0 + fanout && c < nprocs; c++) {
			pid_t p = fork();
			if (p < 0)
				bench_die("process %d: fork: %s", idx, strerror(errno));
			if (p == 0) {
				child = c;
				break;
			}
			kid_idx[nkids] = c;
			kids[nkids++] = p;
		}
		if (child >= 0) { /* the new process: do the same one level down */
			close(down[0]);
			if (up_w >= 0)
				close(up_w);
			up_w = down[1];
			my_ppid = my_pid;
			my_pid = getpid();
			idx = child;
			continue;
		}
		if (c0 < nprocs) {
			close(down[1]);
			fill();
			for (int k = 0; k < nkids; k++) {
				char x;
				ssize_t r;
				do
					r = read(down[0], &x, 1);
				while (r < 0 && errno == EINTR);
				if (r != 1)
					bench_die("process %d: a child failed before it was ready", idx);
			}
			close(down[0]);
		} else {
			fill();
		}
		break;
	}

	if (idx == 0) {
		bench_set_verify(verify_root);
		bench_ready("pid=%d procs=%d", (int)getpid(), nprocs);
	} else {
		handle(SIGUSR1, on_usr1_inner);
		handle(SIGTERM, on_term_inner);
		bench_write_all(up_w, "x", 1);
		close(up_w);
		close(bench_ready_fd);
		bench_ready_fd = -1;
	}
	bench_pause_forever();
}

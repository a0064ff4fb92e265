/*
 * zdtmtst.h - support library for ckpt's zdtm conformance programs.
 *
 * Implements the test-program protocol of /work/shared/ZDTM_PROTOCOL.md
 * (the protocol of CRIU's zdtm suite), so that a program written against
 * this header can be driven by ckpt's runner or by CRIU's zdtm.py, and a
 * CRIU zdtm program can be built against it unchanged in most cases.
 *
 * A case looks like this:
 *
 *	const char *test_doc = "what the case checks";
 *	static char *dirname;
 *	TEST_OPTION(dirname, string, "directory to work in", 1);
 *
 *	int main(int argc, char **argv)
 *	{
 *		test_init(argc, argv);	// options, log, fork, launcher exits
 *		... build the state under test ...
 *		test_daemon();		// tell the launcher we are ready
 *		test_waitsig();		// checkpoint/restore happen here
 *		... check the state ...
 *		if (ok)
 *			pass();
 *		else
 *			fail("what went wrong: %d", x);
 *		return 0;		// atexit: rename the log, unlink the pidfile
 *	}
 *
 * Environment variables honoured by test_init():
 *
 *   ZDTM_NEWNS=1  run the case in new pid, mount, net, ipc and uts
 *                 namespaces ("ns" flavour). The program unshares the
 *                 namespaces and forks; the child is PID 1 of the new pid
 *                 namespace, makes its mounts private, mounts a fresh /proc,
 *                 brings "lo" up and re-executes the program with
 *                 ZDTM_NEWNS=2. That namespace init starts the case proper
 *                 (re-executed with ZDTM_NEWNS=3, which runs the usual
 *                 protocol inside the namespaces), reaps orphans, forwards
 *                 SIGTERM to the case and, at its exit, renames the log and
 *                 unlinks the pidfile. The outer launcher writes the init's
 *                 PID (as seen from the runner) into --pidfile, so the root
 *                 of the tree to checkpoint is the namespace init.
 *                 NOT YET SUPPORTED by the runner: unlike CRIU, the test
 *                 does not pivot_root into ZDTM_ROOT; it keeps the host's
 *                 root directory (in a private mount namespace).
 *   ZDTM_NEWNS=2  marks the namespace init (internal, set by the library).
 *   ZDTM_NEWNS=3  marks the case running inside the namespaces (internal).
 *   ZDTM_GROUPS   supplementary groups ("1 2 3", space or comma separated),
 *                 set with setgroups() before the gid and uid change;
 *   ZDTM_GID      setgid() to this gid;
 *   ZDTM_UID      setuid() to this uid. The credentials are dropped first,
 *                 before the log is created, so the working directory must
 *                 be writable by that uid. The process is then made
 *                 dumpable again (PR_SET_DUMPABLE).
 */
#ifndef ZDTM_ZDTMTST_H
#define ZDTM_ZDTMTST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <limits.h>
#include <sys/types.h>

#define INPROGRESS ".inprogress"

#ifndef PAGE_SIZE
#define PAGE_SIZE ((unsigned int)sysconf(_SC_PAGESIZE))
#endif

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(x) (sizeof(x) / sizeof((x)[0]))
#endif

#define __stringify_1(x) #x
#define __stringify(x) __stringify_1(x)

#define TEST_MSG_BUFFER_SIZE 2048

/* ---- protocol ---------------------------------------------------------- */

/* parse options, set up the log, fork; only the test child returns */
extern void test_init(int argc, char **argv);
/* the state is built: tell the launcher (it writes the pidfile and exits) */
extern void test_daemon(void);
/* sleep until SIGTERM arrives */
extern void test_waitsig(void);
/* true while SIGTERM has not been received */
extern int test_go(void);
/*
 * waitpid() for a child with a time limit of `secs` seconds; past it the
 * child is killed and reaped, and -1 is returned with errno ETIMEDOUT.
 * Returns 0 with *status filled when the child exited in time.
 */
int test_wait_exit(pid_t pid, int *status, int secs);
/*
 * test_wait_exit, then the child `name` must have exited with `code`:
 * 1 if so, else 0 with the reason logged (`by`: who was to reap it).
 */
int test_wait_exit_code(pid_t pid, const char *name, int code, int secs, const char *by);
/*
 * After restore: `fd` is the file `path` names (same device and inode),
 * at offset `pos`, holding `data`. 0 if so, else 1 with fail() logged.
 */
int test_check_open_file(int fd, const char *path, off_t pos, const char *data);
/*
 * Everything readable on `fd` now (a terminal, a pipe), up to `len`
 * bytes: reads while data comes within 200 ms. Returns the count.
 */
int test_read_ready(int fd, char *buf, int len);

/*
 * A check that records a failure and goes on, so one run reports every
 * difference it finds: logs "FAILED: ..." and sets the case's own
 * `failed` flag (each case using it declares `static int failed` and
 * decides pass() or fail() from it at the end).
 */
#define test_check(cond, fmt, ...)                                   \
	do {                                                         \
		if (!(cond)) {                                       \
			test_msg("FAILED: " fmt "\n", ##__VA_ARGS__); \
			failed = 1;                                  \
		}                                                    \
	} while (0)
/* fork() for cases; kept for CRIU compatibility */
#define test_fork() test_fork_id(-1)
extern int test_fork_id(int id);
/* the pid whose exit renames the log and unlinks the pidfile */
extern pid_t test_master_pid(void);

/* ---- messages ------------------------------------------------------------ */

/* set up <fname><suffix> as stdout+stderr (O_CREAT|O_EXCL|O_APPEND, 0644) */
extern int test_log_init(const char *fname, const char *suffix);
/* diagnostics: "HH:MM:SS.mmm: PID: message", written with one write(2) */
extern void test_msg(const char *format, ...) __attribute__((__format__(__printf__, 1, 2)));
/* a verdict or other line written as is, with one write(2) */
extern void test_verdict(const char *format, ...) __attribute__((__format__(__printf__, 1, 2)));

#define pr_err(format, arg...) test_msg("ERR: %s:%d: " format, __FILE__, __LINE__, ##arg)
#define pr_perror(format, arg...) \
	test_msg("ERR: %s:%d: " format " (errno = %d (%s))\n", __FILE__, __LINE__, ##arg, errno, strerror(errno))
/* The verdict lines: exactly "PASS" or "FAIL: file:line: msg (errno = N (text))". */
#define fail(format, arg...) \
	test_verdict("FAIL: %s:%d: " format " (errno = %d (%s))\n", __FILE__, __LINE__, ##arg, errno, strerror(errno))
#define skip(format, arg...) test_msg("SKIP: %s:%d: " format "\n", __FILE__, __LINE__, ##arg)
#define pass() test_verdict("PASS\n")

/* ---- options ------------------------------------------------------------- */

/*
 * Options are spelled --name=value (a bool may be given as --name alone).
 * Declare a case option at file scope:
 *	static char *dirname;   TEST_OPTION(dirname, string, "doc", 1);
 *	static unsigned int mb; TEST_OPTION(mb, uint, "doc", 0);
 * Types: bool (int), int, uint, long, ulong, string (char *).
 * Unknown options, arguments not starting with "--", unparsable values and
 * missing mandatory options print a usage message on stderr and exit(1).
 */
struct long_opt {
	const char *name;
	const char *type;
	const char *doc;
	int is_required;
	int (*parse_opt)(const char *arg, void *value);
	void *value;
	int seen;
	struct long_opt *next;
};

extern void __push_opt(struct long_opt *opt);
extern void parseargs(int argc, char **argv);

extern int parse_opt_bool(const char *param, void *arg);
extern int parse_opt_int(const char *param, void *arg);
extern int parse_opt_uint(const char *param, void *arg);
extern int parse_opt_long(const char *param, void *arg);
extern int parse_opt_ulong(const char *param, void *arg);
extern int parse_opt_string(const char *param, void *arg);

#define __param_check(name, p, type) \
	static inline __attribute__((unused)) type *__check_##name(void) { return (p); }
#define param_check_bool(name, p) __param_check(name, p, int)
#define param_check_int(name, p) __param_check(name, p, int)
#define param_check_uint(name, p) __param_check(name, p, unsigned int)
#define param_check_long(name, p) __param_check(name, p, long)
#define param_check_ulong(name, p) __param_check(name, p, unsigned long)
#define param_check_string(name, p) __param_check(name, p, char *)

#define TEST_OPTION(name, type, doc, is_required)                                              \
	param_check_##type(name, &(name));                                                     \
	static struct long_opt __long_opt_##name = {                                           \
		#name, #type, doc, is_required, parse_opt_##type, &(name), 0, NULL };         \
	static void __init_opt_##name(void) __attribute__((constructor));                     \
	static void __init_opt_##name(void)                                                    \
	{                                                                                      \
		(void)__check_##name;                                                          \
		__push_opt(&__long_opt_##name);                                                \
	}

/* optional texts a case may define, printed by --help */
extern const char *test_doc;
extern const char *test_author;

/* ---- data helpers -------------------------------------------------------- */

/*
 * Fill a buffer with pseudo-random bytes. datagen() stores the CRC-32 of the
 * first length-4 bytes in the last 4 bytes (little endian); datagen2() fills
 * all of it. *crc is the running CRC: set it to ~0 before the first call.
 * datachk() recomputes the CRC over length-4 bytes and compares it with the
 * stored one: 0 if they match, 1 (with a message) if not. datasum() only
 * updates *crc.
 */
extern void datagen(uint8_t *buffer, unsigned length, uint32_t *crc);
extern void datagen2(uint8_t *buffer, unsigned length, uint32_t *crc);
extern int datachk(const uint8_t *buffer, unsigned length, uint32_t *crc);
extern int datasum(const uint8_t *buffer, unsigned length, uint32_t *crc);
extern uint32_t zdtm_crc32(uint32_t crc, const void *buf, size_t len);
/* a fast deterministic generator: same seed, same bytes */
extern void zdtm_fill_seeded(void *buf, size_t len, uint64_t seed);

/* ---- small helpers ------------------------------------------------------- */

extern int set_nonblock(int fd, int on);
/* read/write exactly len bytes (retrying short transfers and EINTR); 0 or -1 */
extern int read_data(int fd, unsigned char *buf, int len);
/*
 * Collects `n` records of `size` bytes from `fd` (a pipe every process of a
 * tree reports into), each starting with an int index in [first, limit),
 * into table[index]; each index at most once; then expects end-of-file
 * (every writer has closed). Returns 0, or -1 after a message.
 */
extern int test_collect_records(int fd, void *table, size_t size, int n, int first, int limit);

/* The /proc/PID/maps line of a mapping: range, perms, inode, name. */
struct test_map {
	unsigned long start, end, ino;
	char perms[8];
	char name[PATH_MAX];
};
/* Fills *m from pid's mapping that starts at addr; 0 if there is one. */
extern int test_find_map(pid_t pid, unsigned long addr, struct test_map *m);
extern int write_data(int fd, const unsigned char *buf, int len);
/* The whole of val into the file at path: 0, or -1 with errno. */
extern int test_write_file(const char *path, const char *val);
/* Maps the user namespace of pid from outside (its parent's): setgroups
 * deny, then uid_map and gid_map as given: 0, or -1 with errno. */
extern int test_map_userns(pid_t pid, const char *uid_map, const char *gid_map);
/* The file at path into buf (size - 1 bytes at most, NUL-terminated): 0, or -1. */
extern int test_read_file(const char *path, char *buf, size_t size);
/* 1 when the two texts hold the same numbers (a uid_map and its text). */
extern int test_same_numbers(const char *got, const char *want);
/* The Cap* lines of /proc/self/status into out: 0, or -1. */
extern int test_read_caps(char *out, size_t size);

/*
 * Hold ckpt's SysV IPC lock (/run/lock/ckpt-sysvipc.lock, flock) while
 * creating SysV objects: a ckpt restore running in parallel (another case)
 * sets kernel.{shm,sem,msg}_next_id under that lock, and an object created
 * meanwhile would take the id meant for the restored one. Returns the fd
 * to pass to test_sysvipc_unlock (or -1, then nothing is held).
 */
extern int test_sysvipc_lock(void);
extern void test_sysvipc_unlock(int fd);

#endif /* ZDTM_ZDTMTST_H */

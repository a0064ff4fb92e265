/*
 * env: the command line, the environment and the auxiliary vector survive
 * checkpoint/restore.
 *
 * The program re-executes itself once, before test_init(), with a marker
 * variable in its environment (a value with spaces, '=', quotes, a tab and
 * UTF-8) and an unusual argv[0]. After that it records /proc/self/cmdline,
 * /proc/self/environ, /proc/self/auxv, /proc/self/comm and the arg_start,
 * arg_end, env_start and env_end fields of /proc/self/stat. After restore
 * all of them must be byte-for-byte the same, getenv() must still find the
 * marker, and argv[] must still hold the same strings.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that argv, environ, auxv and the mm arg/env bounds are restored";

#define ENV_NAME "ZDTM_ENV_CASE"
#define ENV_VALUE "a value with spaces, = signs, 'single' and \"double\" quotes,\ta tab and UTF-8: \xc3\xa9\xe2\x82\xac"
#define ARGV0 "zdtm env: argv[0] with spaces"

extern char **environ;

struct blob {
	char *data;
	size_t len;
};

/* read a whole /proc file; 0 on success */
static int read_file(const char *path, struct blob *b)
{
	size_t cap = 4096;
	int fd;

	b->len = 0;
	b->data = malloc(cap);
	if (!b->data)
		return -1;
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	for (;;) {
		ssize_t n;

		if (b->len == cap) {
			char *p = realloc(b->data, cap * 2);

			if (!p) {
				close(fd);
				return -1;
			}
			b->data = p;
			cap *= 2;
		}
		n = read(fd, b->data + b->len, cap - b->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		b->len += n;
	}
	close(fd);
	return 0;
}

/* fields 48..51 of /proc/self/stat: arg_start arg_end env_start env_end */
static int read_mm_bounds(unsigned long v[4])
{
	struct blob b;
	char *p, *save = NULL, *tok;
	int field = 2, got = 0;

	if (read_file("/proc/self/stat", &b))
		return -1;
	b.data[b.len < 4096 ? b.len : 4095] = '\0';
	p = strrchr(b.data, ')');
	if (!p) {
		free(b.data);
		return -1;
	}
	for (tok = strtok_r(p + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		field++;
		if (field >= 48 && field <= 51) {
			v[field - 48] = strtoul(tok, NULL, 10);
			got++;
		}
	}
	free(b.data);
	return got == 4 ? 0 : -1;
}

static int same(const char *what, const struct blob *a, const struct blob *b)
{
	size_t i;

	if (a->len == b->len && !memcmp(a->data, b->data, a->len))
		return 1;
	for (i = 0; i < a->len && i < b->len && a->data[i] == b->data[i]; i++)
		;
	test_msg("%s differs: %zu bytes before, %zu after, first difference at byte %zu\n", what, a->len, b->len,
		 i);
	return 0;
}

static void reexec(char **argv)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n < 0) {
		perror("readlink /proc/self/exe");
		exit(1);
	}
	exe[n] = '\0';
	if (setenv(ENV_NAME, ENV_VALUE, 1)) {
		perror("setenv");
		exit(1);
	}
	argv[0] = ARGV0;
	execv(exe, argv);
	perror("execv");
	exit(1);
}

int main(int argc, char **argv)
{
	struct blob cmd0, env0, auxv0, comm0, cmd1, env1, auxv1, comm1;
	unsigned long mm0[4], mm1[4];
	char **argv_copy, *expected, *val;
	size_t exp_len = 0;
	int i, ok = 1;

	/* before anything else: the runner's argv/environ are not ours to check */
	if (!getenv(ENV_NAME))
		reexec(argv);

	test_init(argc, argv);

	if (strcmp(argv[0], ARGV0) || !(val = getenv(ENV_NAME)) || strcmp(val, ENV_VALUE)) {
		pr_err("the re-executed program did not get the expected argv[0]/environment\n");
		return 1;
	}

	/* what the command line must be: argv[] joined with NULs */
	argv_copy = calloc(argc, sizeof(char *));
	for (i = 0; i < argc; i++)
		exp_len += strlen(argv[i]) + 1;
	expected = malloc(exp_len);
	if (!argv_copy || !expected) {
		pr_perror("malloc");
		return 1;
	}
	exp_len = 0;
	for (i = 0; i < argc; i++) {
		argv_copy[i] = strdup(argv[i]);
		memcpy(expected + exp_len, argv[i], strlen(argv[i]) + 1);
		exp_len += strlen(argv[i]) + 1;
	}

	if (read_file("/proc/self/cmdline", &cmd0) || read_file("/proc/self/environ", &env0) ||
	    read_file("/proc/self/auxv", &auxv0) || read_file("/proc/self/comm", &comm0) || read_mm_bounds(mm0)) {
		pr_perror("can't read /proc/self");
		return 1;
	}
	if (cmd0.len != exp_len || memcmp(cmd0.data, expected, exp_len)) {
		pr_err("/proc/self/cmdline does not match argv[] even before the checkpoint\n");
		return 1;
	}
	test_msg("cmdline %zu bytes, environ %zu bytes, auxv %zu bytes, args %#lx-%#lx, env %#lx-%#lx\n",
		 cmd0.len, env0.len, auxv0.len, mm0[0], mm0[1], mm0[2], mm0[3]);

	test_daemon();
	test_waitsig();

	if (read_file("/proc/self/cmdline", &cmd1) || read_file("/proc/self/environ", &env1) ||
	    read_file("/proc/self/auxv", &auxv1) || read_file("/proc/self/comm", &comm1) || read_mm_bounds(mm1)) {
		fail("can't read /proc/self after restore");
		return 1;
	}

	ok &= same("/proc/self/cmdline", &cmd0, &cmd1);
	ok &= same("/proc/self/environ", &env0, &env1);
	ok &= same("/proc/self/auxv", &auxv0, &auxv1);
	ok &= same("/proc/self/comm", &comm0, &comm1);
	if (memcmp(mm0, mm1, sizeof(mm0))) {
		test_msg("arg/env bounds: before %#lx-%#lx %#lx-%#lx, after %#lx-%#lx %#lx-%#lx\n", mm0[0], mm0[1],
			 mm0[2], mm0[3], mm1[0], mm1[1], mm1[2], mm1[3]);
		ok = 0;
	}
	for (i = 0; i < argc; i++)
		if (strcmp(argv[i], argv_copy[i])) {
			test_msg("argv[%d] is \"%s\", was \"%s\"\n", i, argv[i], argv_copy[i]);
			ok = 0;
		}
	val = getenv(ENV_NAME);
	if (!val || strcmp(val, ENV_VALUE)) {
		test_msg("getenv(%s) = %s%s%s\n", ENV_NAME, val ? "\"" : "", val ? val : "NULL", val ? "\"" : "");
		ok = 0;
	}

	if (!ok) {
		errno = 0;
		fail("the command line, environment or auxv changed (see above)");
		return 1;
	}
	pass();
	return 0;
}

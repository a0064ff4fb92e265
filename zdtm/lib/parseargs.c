/* parseargs.c - strict --name=value option parsing for zdtm programs. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zdtmtst.h"

/* test_doc and test_author are weak so that a case may define them */
__attribute__((weak)) const char *test_doc;
__attribute__((weak)) const char *test_author;

static struct long_opt *opt_head;

static int help;
TEST_OPTION(help, bool, "print this help and exit", 0);

void __push_opt(struct long_opt *opt)
{
	opt->next = opt_head;
	opt_head = opt;
}

int parse_opt_bool(const char *param, void *arg)
{
	if (param == NULL || !strcmp(param, "on") || !strcmp(param, "yes") || !strcmp(param, "true") ||
	    !strcmp(param, "1")) {
		*(int *)arg = 1;
		return 0;
	}
	if (!strcmp(param, "off") || !strcmp(param, "no") || !strcmp(param, "false") || !strcmp(param, "0")) {
		*(int *)arg = 0;
		return 0;
	}
	return -EINVAL;
}

static int parse_signed(const char *param, long long min, long long max, long long *out)
{
	char *tail;
	long long v;

	if (param == NULL || param[0] == '\0')
		return -EINVAL;
	errno = 0;
	v = strtoll(param, &tail, 0);
	if (errno || *tail != '\0' || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_unsigned(const char *param, unsigned long long max, unsigned long long *out)
{
	char *tail;
	unsigned long long v;

	if (param == NULL || param[0] == '\0' || param[0] == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(param, &tail, 0);
	if (errno || *tail != '\0' || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int parse_opt_int(const char *param, void *arg)
{
	long long v;

	if (parse_signed(param, INT_MIN, INT_MAX, &v))
		return -EINVAL;
	*(int *)arg = v;
	return 0;
}

int parse_opt_uint(const char *param, void *arg)
{
	unsigned long long v;

	if (parse_unsigned(param, UINT_MAX, &v))
		return -EINVAL;
	*(unsigned int *)arg = v;
	return 0;
}

int parse_opt_long(const char *param, void *arg)
{
	long long v;

	if (parse_signed(param, LONG_MIN, LONG_MAX, &v))
		return -EINVAL;
	*(long *)arg = v;
	return 0;
}

int parse_opt_ulong(const char *param, void *arg)
{
	unsigned long long v;

	if (parse_unsigned(param, ULONG_MAX, &v))
		return -EINVAL;
	*(unsigned long *)arg = v;
	return 0;
}

int parse_opt_string(const char *param, void *arg)
{
	if (param == NULL || param[0] == '\0')
		return -EINVAL;
	*(const char **)arg = param;
	return 0;
}

static void usage_exit(const char *prog)
{
	struct long_opt *opt;

	if (test_doc)
		fprintf(stderr, "%s\n", test_doc);
	if (test_author)
		fprintf(stderr, "Author: %s\n", test_author);
	fprintf(stderr, "Usage: %s --pidfile=FILE --outfile=FILE [options]\n", prog ? prog : "test");
	for (opt = opt_head; opt; opt = opt->next) {
		const char *o = opt->is_required ? "" : "[";
		const char *c = opt->is_required ? "" : "]";

		fprintf(stderr, "  %s--%s=%s%s\t%s\n", o, opt->name, opt->type, c, opt->doc);
	}
	exit(1);
}

/*
 * argv is not modified: /proc/self/cmdline stays what the runner passed and
 * the program can re-execute itself with the same arguments.
 */
void parseargs(int argc, char **argv)
{
	const char *prog = argc > 0 ? argv[0] : NULL;
	struct long_opt *opt;
	int i;

	for (i = 1; i < argc; i++) {
		const char *arg = argv[i], *name, *value;
		size_t name_len;

		if (strncmp(arg, "--", 2) || arg[2] == '\0' || arg[2] == '=') {
			fprintf(stderr, "%s: options must be spelled --name=value\n", arg);
			usage_exit(prog);
		}
		name = arg + 2;
		value = strchr(name, '=');
		name_len = value ? (size_t)(value - name) : strlen(name);
		if (value)
			value++;

		for (opt = opt_head; opt; opt = opt->next)
			if (strlen(opt->name) == name_len && !strncmp(name, opt->name, name_len))
				break;
		if (!opt) {
			fprintf(stderr, "%s: unknown option\n", arg);
			usage_exit(prog);
		}
		if (opt->parse_opt(value, opt->value)) {
			fprintf(stderr, "%s: bad value for a %s option\n", arg, opt->type);
			usage_exit(prog);
		}
		opt->seen = 1;
	}

	if (help)
		usage_exit(prog);

	for (opt = opt_head; opt; opt = opt->next)
		if (opt->is_required && !opt->seen) {
			fprintf(stderr, "mandatory option --%s not given\n", opt->name);
			usage_exit(prog);
		}
}

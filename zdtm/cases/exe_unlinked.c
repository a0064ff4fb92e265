/*
 * exe_unlinked: a program whose executable was deleted while it runs (as
 * after a package upgrade) survives checkpoint/restore: /proc/self/exe
 * still reads "PATH (deleted)" and is the same unlinked file as its text
 * mappings, and its code and data are as they were.
 *
 *   --how=unlink  the program unlinks its own executable (the runner's
 *                 copy in the work directory) before it says it is ready
 *   --how=memfd   before anything else it copies itself into a memfd
 *                 (MFD_CLOEXEC, "zdtm-exe") and runs that (fexecve), as
 *                 container runtimes do: /proc/self/exe reads
 *                 "/memfd:zdtm-exe (deleted)"
 *
 * After SIGTERM it checks the /proc/self/exe link, that the file behind it
 * has no links, is a regular file of its size and mode, and is the inode
 * of the mapping that holds main(), and that an initialized global it
 * changed kept its value.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that a process whose executable was deleted is restored";

static char *how = "unlink";
TEST_OPTION(how, string, "unlink (the executable) or memfd (run from a copy in a memfd)", 0);

static int failed;
static char data[64] = "initialized data of the deleted executable";

/* the inode of the mapping that holds addr, from /proc/self/maps */
static unsigned long inode_of(void *addr)
{
	char line[PATH_MAX + 128];
	unsigned long start, end, ino = 0;
	FILE *f = fopen("/proc/self/maps", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx %*s %*s %*s %lu", &start, &end, &ino) == 3 && start <= (unsigned long)addr &&
		    (unsigned long)addr < end)
			break;
		else
			ino = 0;
	fclose(f);
	return ino;
}

static void check(const char *when, const char *path, const struct stat *orig)
{
	char link[PATH_MAX + 16], want[PATH_MAX + 16];
	struct stat st;
	ssize_t n;

	if (!strcmp(how, "memfd"))
		snprintf(want, sizeof(want), "/memfd:zdtm-exe (deleted)");
	else
		snprintf(want, sizeof(want), "%s (deleted)", path);
	n = readlink("/proc/self/exe", link, sizeof(link) - 1);
	link[n < 0 ? 0 : n] = 0;
	test_check(!strcmp(link, want), "%s: /proc/self/exe is \"%s\", expected \"%s\"", when, link, want);
	if (stat("/proc/self/exe", &st)) {
		test_check(0, "%s: stat /proc/self/exe: %s", when, strerror(errno));
		return;
	}
	test_check(st.st_nlink == 0 && S_ISREG(st.st_mode) && st.st_size == orig->st_size &&
			   st.st_mode == orig->st_mode,
		   "%s: the executable: nlink %ld size %ld mode %o", when, (long)st.st_nlink, (long)st.st_size,
		   st.st_mode);
	test_check(inode_of((void *)check) == st.st_ino, "%s: the code is in inode %lu, the executable is %lu", when,
		   inode_of((void *)check), (unsigned long)st.st_ino);
	test_check(!strcmp(data, "changed data of the deleted executable"), "%s: data is \"%s\"", when, data);
}

/* --how=memfd, before test_init: run again from a memfd copy of ourselves */
static void reexec_from_memfd(int argc, char **argv)
{
	extern char **environ;
	char buf[65536];
	ssize_t n;
	int i, src, m;

	for (i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--how=memfd"))
			break;
	if (i == argc || getenv("ZDTM_EXE_MEMFD"))
		return;
	src = open("/proc/self/exe", O_RDONLY);
	m = memfd_create("zdtm-exe", MFD_CLOEXEC);
	if (src < 0 || m < 0) {
		perror("exe_unlinked: memfd copy");
		exit(1);
	}
	while ((n = read(src, buf, sizeof(buf))) > 0)
		if (write(m, buf, n) != n) {
			perror("exe_unlinked: memfd copy");
			exit(1);
		}
	setenv("ZDTM_EXE_MEMFD", "1", 1);
	fexecve(m, argv, environ);
	perror("exe_unlinked: fexecve");
	exit(1);
}

int main(int argc, char **argv)
{
	char path[PATH_MAX];
	struct stat orig;
	ssize_t n;

	reexec_from_memfd(argc, argv);
	test_init(argc, argv);

	n = readlink("/proc/self/exe", path, sizeof(path) - 1);
	if (n < 0 || stat("/proc/self/exe", &orig)) {
		pr_perror("the executable");
		return 1;
	}
	path[n] = 0;
	if (strcmp(how, "memfd") && unlink(path)) {
		pr_perror("unlink %s", path);
		return 1;
	}
	strcpy(data, "changed data of the deleted executable");
	check("before", path, &orig);
	if (failed)
		return 1;

	test_daemon();
	test_waitsig();

	check("after", path, &orig);
	if (failed) {
		errno = 0;
		fail("the deleted executable is not as it was");
		return 1;
	}
	pass();
	return 0;
}

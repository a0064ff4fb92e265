/*
 * vfork_wait: a parent blocked in vfork() while its child waits.
 *
 * Until a vfork child execs or exits, its parent sleeps in the kernel
 * (killable, shown as state D): no PTRACE_INTERRUPT reaches it, so no
 * dump can freeze it. Not a row of the case table: the safety trial
 * dump/timeout dumps it with --timeout and expects the freeze to give up
 * in time, naming the thread, with the tree left as it was; it then kills
 * the tree.
 */
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "A parent held in vfork() by a child that never execs";

int main(int argc, char **argv)
{
	pid_t pid;

	test_init(argc, argv);
	test_daemon();
	pid = vfork();
	if (pid == 0) {
		/* The vfork child: only pause(2) until it is killed. */
		for (;;)
			pause();
	}
	if (pid < 0) {
		pr_perror("vfork");
		return 1;
	}
	/* Reached only once the child is gone. */
	test_waitsig();
	pass();
	return 0;
}

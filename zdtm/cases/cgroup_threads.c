/*
 * cgroup_threads: threads of one process in different threaded cgroup2
 * cgroups come back each in its own.
 *
 * The process creates zdtm.<uniq> (cg_name()) below its own cgroup2 cgroup with
 * two children m and w of cgroup.type "threaded" (which makes the parent
 * a "domain threaded" cgroup), moves itself into m and starts a thread
 * that moves itself into w (cgroup.threads). After SIGTERM the main thread
 * checks, through /proc/self/task/TID/cgroup, that it is in m and the
 * other thread in w, and that m and w are still threaded; then it joins
 * the thread, moves back and removes the cgroups.
 *
 * If the v1 pids hierarchy is mounted (v1 membership is per thread), the
 * same is done there: zdtm.<uniq>/m for the process, /w for the
 * thread (through `tasks`), checked the same way.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "zdtmtst.h"
#include "cgroup.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"

const char *test_doc = "Check that threads in different threaded cgroups are restored into them";

static int failed;
static char own[1024], dir[1024], dm[1024], dw[1024];
static char rel_m[1024], rel_w[1024];
/* v1 pids: own cgroup, the pair, and their hierarchy paths. */
static int have_v1;
static char own1[1024], dir1[1024], dm1[1024], dw1[1024], rel1_m[1024], rel1_w[1024];
static volatile int stop, worker_ready, worker_err;
static pid_t worker_tid;

static void *worker(void *arg)
{
	char t[32];

	worker_tid = syscall(SYS_gettid);
	snprintf(t, sizeof(t), "%d", worker_tid);
	if (cg_set(dw, "cgroup.threads", t)) {
		worker_err = errno;
		pr_perror("moving thread %d into %s", worker_tid, dw);
	}
	if (have_v1 && cg_set(dw1, "tasks", t)) {
		worker_err = errno;
		pr_perror("moving thread %d into %s", worker_tid, dw1);
	}
	__atomic_store_n(&worker_ready, 1, __ATOMIC_SEQ_CST);
	while (!__atomic_load_n(&stop, __ATOMIC_SEQ_CST))
		usleep(10000);
	return NULL;
}

/* The path of thread tid of this process in hierarchy "0:" (cgroup2) or
 * the v1 pids one. */
static int thread_cgroup_in(pid_t tid, int v1, char *buf, size_t len)
{
	char p[64], line[1024];
	FILE *f;
	int ret = -1;

	snprintf(p, sizeof(p), "/proc/self/task/%d/cgroup", tid);
	f = fopen(p, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		char *pids = strstr(line, ":pids:");

		if (!v1 && !strncmp(line, "0::", 3)) {
			snprintf(buf, len, "%s", line + 3);
			ret = 0;
		}
		if (v1 && pids) {
			snprintf(buf, len, "%s", pids + 6);
			ret = 0;
		}
	}
	fclose(f);
	return ret;
}

static int thread_cgroup(pid_t tid, char *buf, size_t len)
{
	return thread_cgroup_in(tid, 0, buf, len);
}

static void cleanup(void)
{
	cg_join(own, 0);
	if (cg_rmdir(dm) || cg_rmdir(dw) || cg_rmdir(dir))
		pr_perror("removing %s", dir);
	if (have_v1) {
		cg_join(own1, 0);
		if (cg_rmdir(dm1) || cg_rmdir(dw1) || cg_rmdir(dir1))
			pr_perror("removing %s", dir1);
	}
}

static int setup_v1(const char *name)
{
	char mnt[512], self[512];

	if (cg_mount("pids", mnt, sizeof(mnt)) || cg_self("pids", self, sizeof(self)))
		return 0;
	have_v1 = 1;
	snprintf(own1, sizeof(own1), "%s%s", mnt, strcmp(self, "/") ? self : "");
	snprintf(dir1, sizeof(dir1), "%s/%s", own1, name);
	snprintf(dm1, sizeof(dm1), "%s/m", dir1);
	snprintf(dw1, sizeof(dw1), "%s/w", dir1);
	snprintf(rel1_m, sizeof(rel1_m), "%s/%s/m", strcmp(self, "/") ? self : "", name);
	snprintf(rel1_w, sizeof(rel1_w), "%s/%s/w", strcmp(self, "/") ? self : "", name);
	if (mkdir(dir1, 0755) || mkdir(dm1, 0755) || mkdir(dw1, 0755) || cg_set(dw1, "pids.max", "7") ||
	    cg_join(dm1, 0)) {
		pr_perror("setting up %s", dir1);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	char mnt[512], self[512], name[256], have[1024], type[64];
	pthread_t th;
	int i;

	test_init(argc, argv);
	if (cg_mount(NULL, mnt, sizeof(mnt)) || cg_self(NULL, self, sizeof(self))) {
		fail("no cgroup2 hierarchy");
		return 1;
	}
	if (cg_name(name, sizeof(name))) {
		fail("cg_name: %m");
		return 1;
	}
	snprintf(own, sizeof(own), "%s%s", mnt, strcmp(self, "/") ? self : "");
	snprintf(dir, sizeof(dir), "%s/%s", own, name);
	snprintf(dm, sizeof(dm), "%s/m", dir);
	snprintf(dw, sizeof(dw), "%s/w", dir);
	snprintf(rel_m, sizeof(rel_m), "%s/%s/m", strcmp(self, "/") ? self : "", name);
	snprintf(rel_w, sizeof(rel_w), "%s/%s/w", strcmp(self, "/") ? self : "", name);
	if (mkdir(dir, 0755) || mkdir(dm, 0755) || mkdir(dw, 0755) || cg_set(dm, "cgroup.type", "threaded") ||
	    cg_set(dw, "cgroup.type", "threaded") || cg_join(dm, 0) || setup_v1(name)) {
		pr_perror("setting up %s", dir);
		cleanup();
		fail("setting up the threaded cgroups");
		return 1;
	}
	if (pthread_create(&th, NULL, worker, NULL)) {
		cleanup();
		fail("pthread_create");
		return 1;
	}
	for (i = 0; i < 5000 && !__atomic_load_n(&worker_ready, __ATOMIC_SEQ_CST); i++)
		usleep(1000);
	if (worker_err || !worker_ready) {
		stop = 1;
		pthread_join(th, NULL);
		cleanup();
		fail("the thread could not move into %s", dw);
		return 1;
	}

	test_daemon();
	test_waitsig();

	test_check(!thread_cgroup(getpid(), have, sizeof(have)) && !strcmp(have, rel_m),
		   "the main thread is in %s, expected %s", have, rel_m);
	test_check(!thread_cgroup(worker_tid, have, sizeof(have)) && !strcmp(have, rel_w),
		   "thread %d is in %s, expected %s", worker_tid, have, rel_w);
	if (have_v1) {
		test_check(!thread_cgroup_in(getpid(), 1, have, sizeof(have)) && !strcmp(have, rel1_m),
			   "the main thread is in pids %s, expected %s", have, rel1_m);
		test_check(!thread_cgroup_in(worker_tid, 1, have, sizeof(have)) && !strcmp(have, rel1_w),
			   "thread %d is in pids %s, expected %s", worker_tid, have, rel1_w);
		test_check(!cg_get(dw1, "pids.max", type, sizeof(type)) && !strcmp(type, "7"), "%s/pids.max is %s",
			   dw1, type);
	}
	test_check(!cg_get(dm, "cgroup.type", type, sizeof(type)) && !strcmp(type, "threaded"),
		   "%s/cgroup.type is %s", dm, type);
	test_check(!cg_get(dw, "cgroup.type", type, sizeof(type)) && !strcmp(type, "threaded"),
		   "%s/cgroup.type is %s", dw, type);
	__atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(th, NULL);
	cleanup();
	if (failed)
		fail("threads are not in their cgroups after restore");
	else
		pass();
	return 0;
}

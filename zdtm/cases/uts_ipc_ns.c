/*
 * uts_ipc_ns: the tree's own UTS and IPC namespaces come back whole.
 *
 * The test task unshares a UTS and an IPC namespace, sets the host and
 * domain names, the IPC sysctls kernel.msgmnb, kernel.sem and
 * kernel.shmmni, and creates, with chosen ids (the namespace's
 * *_next_id), a shared memory segment with a pattern, a semaphore set
 * with values and a message queue with messages. A child forked after
 * that lives in the same namespaces.
 *
 * After SIGTERM it checks that it is still not in the namespaces it
 * started in (the host's), the names, the sysctls, and every object by id: key, mode,
 * size, contents; and the child checks the names too.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that UTS and IPC namespaces of the tree's own survive";

#define HOST "zdtm-uts-host"
#define DOMAIN "zdtm-domain"
#define SHM_ID 7
#define SEM_ID 9
#define MSG_ID 11
#define SHM_SIZE 12288
#define MSGMNB "20000"
#define SEMCTL "300 32000 40 100"
#define SHMMNI "2048"

union semun {
	int val;
	struct semid_ds *buf;
	unsigned short *array;
};

struct msg {
	long mtype;
	char text[64];
};

static int same_words(const char *path, const char *want)
{
	char buf[128], norm[128];
	int fd = open(path, O_RDONLY), j = 0, sp = 0;
	ssize_t n, i;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	for (i = 0; i < n && j < (int)sizeof(norm) - 1; i++) {
		if (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n') {
			sp = j > 0;
			continue;
		}
		if (sp)
			norm[j++] = ' ';
		sp = 0;
		norm[j++] = buf[i];
	}
	norm[j] = '\0';
	if (strcmp(norm, want)) {
		test_msg("%s is \"%s\", want \"%s\"\n", path, norm, want);
		return 0;
	}
	return 1;
}

static int next_id(const char *kind, int id)
{
	char path[64], val[16];

	snprintf(path, sizeof(path), "/proc/sys/kernel/%s_next_id", kind);
	snprintf(val, sizeof(val), "%d", id);
	return test_write_file(path, val);
}

static ino_t host_uts, host_ipc;

static ino_t ns_ino(const char *kind)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof(path), "/proc/self/ns/%s", kind);
	if (stat(path, &st)) {
		test_msg("stat %s: %m\n", path);
		return 0;
	}
	return st.st_ino;
}

/* not in the namespace of this kind it started in (the host's) */
static int own_ns(const char *kind)
{
	ino_t ino = ns_ino(kind), host = strcmp(kind, "uts") ? host_ipc : host_uts;

	if (!ino || ino == host) {
		test_msg("%s namespace %lu is the host's\n", kind, (unsigned long)ino);
		return 0;
	}
	return 1;
}

static int names_ok(void)
{
	struct utsname u;

	if (uname(&u)) {
		pr_perror("uname");
		return 0;
	}
	if (strcmp(u.nodename, HOST) || strcmp(u.domainname, DOMAIN)) {
		test_msg("names are %s / %s, want %s / %s\n", u.nodename, u.domainname, HOST, DOMAIN);
		return 0;
	}
	return 1;
}

static unsigned char pattern(int i)
{
	return (unsigned char)(i * 7 + 3);
}

int main(int argc, char **argv)
{
	unsigned short vals[3] = { 5, 0, 300 }, got[3];
	union semun arg;
	struct shmid_ds shm;
	struct semid_ds sem;
	struct msqid_ds mq;
	struct msg m;
	unsigned char *p;
	int shmid, semid, msqid, i, status, ok = 1;
	pid_t child;

	test_init(argc, argv);

	host_uts = ns_ino("uts");
	host_ipc = ns_ino("ipc");
	if (!host_uts || !host_ipc)
		return 1;
	if (unshare(CLONE_NEWUTS | CLONE_NEWIPC)) {
		pr_perror("unshare");
		return 1;
	}
	if (sethostname(HOST, strlen(HOST)) || setdomainname(DOMAIN, strlen(DOMAIN))) {
		pr_perror("sethostname/setdomainname");
		return 1;
	}
	if (test_write_file("/proc/sys/kernel/msgmnb", MSGMNB) || test_write_file("/proc/sys/kernel/sem", SEMCTL) ||
	    test_write_file("/proc/sys/kernel/shmmni", SHMMNI)) {
		pr_perror("IPC sysctls");
		return 1;
	}
	if (next_id("shm", SHM_ID) || (shmid = shmget(0x5a5a, SHM_SIZE, IPC_CREAT | 0640)) != SHM_ID) {
		pr_perror("shmget with id %d", SHM_ID);
		return 1;
	}
	p = shmat(shmid, NULL, 0);
	if (p == (void *)-1) {
		pr_perror("shmat");
		return 1;
	}
	for (i = 0; i < SHM_SIZE; i++)
		p[i] = pattern(i);
	shmdt(p);
	if (next_id("sem", SEM_ID) || (semid = semget(0x5b5b, 3, IPC_CREAT | 0600)) != SEM_ID) {
		pr_perror("semget with id %d", SEM_ID);
		return 1;
	}
	arg.array = vals;
	if (semctl(semid, 0, SETALL, arg)) {
		pr_perror("SETALL");
		return 1;
	}
	if (next_id("msg", MSG_ID) || (msqid = msgget(0x5c5c, IPC_CREAT | 0604)) != MSG_ID) {
		pr_perror("msgget with id %d", MSG_ID);
		return 1;
	}
	for (i = 1; i <= 3; i++) {
		m.mtype = i;
		snprintf(m.text, sizeof(m.text), "message %d", i);
		if (msgsnd(msqid, &m, strlen(m.text) + 1, 0)) {
			pr_perror("msgsnd");
			return 1;
		}
	}

	child = fork();
	if (child < 0) {
		pr_perror("fork");
		return 1;
	}
	if (child == 0) {
		while (test_go())
			pause();
		exit(names_ok() && own_ns("uts") ? 0 : 1);
	}

	test_daemon();
	test_waitsig();

	kill(child, SIGTERM);
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status)) {
		test_msg("the child found its namespaces wrong (status %#x)\n", status);
		ok = 0;
	}
	if (!own_ns("uts") || !own_ns("ipc")) {
		test_msg("not in UTS and IPC namespaces of its own any more\n");
		ok = 0;
	}
	ok &= names_ok();
	ok &= same_words("/proc/sys/kernel/msgmnb", MSGMNB);
	ok &= same_words("/proc/sys/kernel/sem", SEMCTL);
	ok &= same_words("/proc/sys/kernel/shmmni", SHMMNI);

	if (shmctl(SHM_ID, IPC_STAT, &shm) || shm.shm_perm.__key != 0x5a5a || (shm.shm_perm.mode & 0777) != 0640 ||
	    shm.shm_segsz != SHM_SIZE) {
		test_msg("segment %d: wrong or gone (%m)\n", SHM_ID);
		ok = 0;
	} else {
		p = shmat(SHM_ID, NULL, SHM_RDONLY);
		for (i = 0; p != (void *)-1 && i < SHM_SIZE; i++)
			if (p[i] != pattern(i)) {
				test_msg("segment byte %d is %d, want %d\n", i, p[i], pattern(i));
				ok = 0;
				break;
			}
		if (p == (void *)-1)
			ok = 0;
	}
	arg.buf = &sem;
	if (semctl(SEM_ID, 0, IPC_STAT, arg) || sem.sem_perm.__key != 0x5b5b ||
	    (sem.sem_perm.mode & 0777) != 0600 || sem.sem_nsems != 3) {
		test_msg("semaphore set %d: wrong or gone (%m)\n", SEM_ID);
		ok = 0;
	} else {
		arg.array = got;
		if (semctl(SEM_ID, 0, GETALL, arg) || memcmp(got, vals, sizeof(vals))) {
			test_msg("semaphore values %d %d %d\n", got[0], got[1], got[2]);
			ok = 0;
		}
	}
	if (msgctl(MSG_ID, IPC_STAT, &mq) || mq.msg_perm.__key != 0x5c5c || (mq.msg_perm.mode & 0777) != 0604 ||
	    mq.msg_qnum != 3) {
		test_msg("queue %d: wrong or gone (%m)\n", MSG_ID);
		ok = 0;
	} else {
		for (i = 1; i <= 3; i++) {
			char want[64];

			snprintf(want, sizeof(want), "message %d", i);
			if (msgrcv(MSG_ID, &m, sizeof(m.text), 0, IPC_NOWAIT) < 0 || m.mtype != i ||
			    strcmp(m.text, want)) {
				test_msg("message %d is wrong\n", i);
				ok = 0;
				break;
			}
		}
	}

	if (!ok) {
		errno = 0;
		fail("the UTS or IPC namespace was not restored (see above)");
		return 1;
	}
	pass();
	return 0;
}

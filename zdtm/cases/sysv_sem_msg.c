/*
 * sysv_sem_msg: a System V semaphore set and a message queue keep their
 * ids, keys, owners, modes and contents across checkpoint/restore.
 *
 * Keys from ftok(".", 3) (semaphores) and ftok(".", 4) (queue), so the
 * runner can find leftovers.
 *
 * Semaphores: 4 of them, mode 0640; the parent sets {3, 0, 7, 32767} with
 * SETALL (so it is the last pid of every one), then the child adds 5 to
 * semaphore 1 with semop (so the child is that one's last pid).
 *
 * Queue: mode 0600, byte limit lowered to 12000. The parent sends
 * (1, "one"), (2, ""), (3, 5000 seeded bytes), (2, "two-b") and receives
 * the type-1 message; then the child sends (7, 100 seeded bytes), so the
 * child is the last sender. Left: 2:"", 3:5000 B, 2:"two-b", 7:100 B.
 *
 * After SIGTERM the parent checks the ids behind the keys, IPC_STAT (mode,
 * owner, creator, nsems, qnum, qbytes, last sender), the values and last
 * pids (GETPID) of the semaphores, then receives type 3 first and the
 * rest in order and checks each, and that the queue is then empty. It
 * stops the child and removes both objects. The ids go into sysvipc.ids
 * for the runner's between-dump-and-restore hook.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that SysV semaphores and message queues survive";

#define NSEMS 4
#define QBYTES 12000

union semun {
	int val;
	struct semid_ds *buf;
	unsigned short *array;
};

struct msg {
	long mtype;
	char text[8192];
};

static int failed;
static int semid = -1, msqid = -1;

static void remove_all(void)
{
	if (semid >= 0)
		semctl(semid, 0, IPC_RMID);
	if (msqid >= 0)
		msgctl(msqid, IPC_RMID, NULL);
}

static int send(long type, const void *text, size_t len)
{
	static struct msg m;

	m.mtype = type;
	memcpy(m.text, text, len);
	return msgsnd(msqid, &m, len, IPC_NOWAIT);
}

/* receive a message of `type` (0: the next) and compare it */
static void expect(long type, long want_type, const void *want, size_t len)
{
	static struct msg m;
	ssize_t n = msgrcv(msqid, &m, sizeof(m.text), type, IPC_NOWAIT);

	if (n < 0) {
		test_check(0, "msgrcv(type %ld): %s", type, strerror(errno));
		return;
	}
	test_check(m.mtype == want_type && (size_t)n == len && !memcmp(m.text, want, len),
		   "msgrcv(type %ld): type %ld, %zd bytes; expected type %ld, %zu bytes%s", type, m.mtype, n,
		   want_type, len, (size_t)n == len ? " (the bytes differ)" : "");
}

int main(int argc, char **argv)
{
	unsigned short vals[NSEMS] = { 3, 0, 7, 32767 }, got[NSEMS];
	static uint8_t big[5000], small[100];
	struct sembuf op = { .sem_num = 1, .sem_op = 5, .sem_flg = 0 };
	struct semid_ds sds;
	struct msqid_ds mds;
	key_t keys, keyq;
	int status, i, lock;
	pid_t pid;
	FILE *f;

	test_init(argc, argv);
	zdtm_fill_seeded(big, sizeof(big), 5);
	zdtm_fill_seeded(small, sizeof(small), 7);

	keys = ftok(".", 3);
	keyq = ftok(".", 4);
	lock = test_sysvipc_lock();
	semid = semget(keys, NSEMS, IPC_CREAT | IPC_EXCL | 0640);
	msqid = msgget(keyq, IPC_CREAT | IPC_EXCL | 0600);
	test_sysvipc_unlock(lock);
	if (semid < 0 || msqid < 0) {
		pr_perror("semget/msgget");
		remove_all();
		return 1;
	}
	f = fopen("sysvipc.ids", "w");
	if (!f || fprintf(f, "sem %d\nmsg %d\n", semid, msqid) < 0 || fclose(f)) {
		pr_perror("sysvipc.ids");
		remove_all();
		return 1;
	}
	if (semctl(semid, 0, SETALL, (union semun){ .array = vals })) {
		pr_perror("SETALL");
		remove_all();
		return 1;
	}
	if (msgctl(msqid, IPC_STAT, &mds) || (mds.msg_qbytes = QBYTES, msgctl(msqid, IPC_SET, &mds)) ||
	    send(1, "one", 3) || send(2, "", 0) || send(3, big, sizeof(big)) || send(2, "two-b", 5)) {
		pr_perror("msgsnd");
		remove_all();
		return 1;
	}
	{
		struct msg m;

		if (msgrcv(msqid, &m, sizeof(m.text), 1, IPC_NOWAIT) != 3) {
			pr_perror("msgrcv");
			remove_all();
			return 1;
		}
	}

	pid = fork();
	if (pid < 0) {
		pr_perror("fork");
		remove_all();
		return 1;
	}
	if (pid == 0) {
		if (semop(semid, &op, 1) || send(7, small, sizeof(small)))
			_exit(2);
		while (test_go())
			usleep(10000);
		_exit(0);
	}
	/* the child has done its part when the last message is there */
	for (i = 0; i < 5000; i++) {
		if (msgctl(msqid, IPC_STAT, &mds) == 0 && mds.msg_qnum == 4)
			break;
		usleep(1000);
	}
	if (mds.msg_qnum != 4) {
		pr_err("the child did not send its message\n");
		kill(pid, SIGKILL);
		remove_all();
		return 1;
	}

	test_daemon();
	test_waitsig();

	test_check(semget(keys, 0, 0) == semid, "key %#x: semaphore set %d, expected %d", keys, semget(keys, 0, 0),
		   semid);
	test_check(msgget(keyq, 0) == msqid, "key %#x: queue %d, expected %d", keyq, msgget(keyq, 0), msqid);
	if (semctl(semid, 0, IPC_STAT, (union semun){ .buf = &sds }))
		test_check(0, "semctl(IPC_STAT): %s", strerror(errno));
	else
		test_check(sds.sem_nsems == NSEMS && (sds.sem_perm.mode & 0777) == 0640 &&
				   sds.sem_perm.uid == getuid() && sds.sem_perm.cuid == getuid() &&
				   sds.sem_perm.gid == getgid() && sds.sem_perm.cgid == getgid(),
			   "semaphore set: %lu semaphores, mode %o, owner %d:%d, creator %d:%d",
			   (unsigned long)sds.sem_nsems, sds.sem_perm.mode, sds.sem_perm.uid, sds.sem_perm.gid,
			   sds.sem_perm.cuid, sds.sem_perm.cgid);
	if (semctl(semid, 0, GETALL, (union semun){ .array = got }))
		test_check(0, "semctl(GETALL): %s", strerror(errno));
	else
		test_check(got[0] == 3 && got[1] == 5 && got[2] == 7 && got[3] == 32767,
			   "semaphore values %d %d %d %d, expected 3 5 7 32767", got[0], got[1], got[2], got[3]);
	for (i = 0; i < NSEMS; i++) {
		int last = semctl(semid, i, GETPID);
		int want = i == 1 ? pid : getpid();

		test_check(last == want, "semaphore %d: last pid %d, expected %d", i, last, want);
	}
	if (msgctl(msqid, IPC_STAT, &mds))
		test_check(0, "msgctl(IPC_STAT): %s", strerror(errno));
	else
		test_check(mds.msg_qnum == 4 && mds.msg_qbytes == QBYTES && mds.msg_cbytes == 5105 &&
				   mds.msg_lspid == pid && (mds.msg_perm.mode & 0777) == 0600 &&
				   mds.msg_perm.uid == getuid() && mds.msg_perm.cuid == getuid(),
			   "queue: %lu messages, %lu bytes of %lu, last sender %d (child %d), mode %o, owner %d, creator %d",
			   (unsigned long)mds.msg_qnum, (unsigned long)mds.msg_cbytes, (unsigned long)mds.msg_qbytes,
			   mds.msg_lspid, pid, mds.msg_perm.mode, mds.msg_perm.uid, mds.msg_perm.cuid);
	expect(3, 3, big, sizeof(big));
	expect(0, 2, "", 0);
	expect(0, 2, "two-b", 5);
	expect(0, 7, small, sizeof(small));
	{
		struct msg m;

		test_check(msgrcv(msqid, &m, sizeof(m.text), 0, IPC_NOWAIT) < 0 && errno == ENOMSG,
			   "the queue has more messages than expected");
	}

	kill(pid, SIGTERM);
	if (test_wait_exit(pid, &status, 15))
		test_check(0, "waitpid(child %d): %s", pid, strerror(errno));
	else
		test_check(WIFEXITED(status) && !WEXITSTATUS(status), "the child ended with status %#x", status);

	remove_all();
	if (failed) {
		errno = 0;
		fail("SysV semaphores or messages are not as before");
		return 1;
	}
	pass();
	return 0;
}

/*
 * signalfd: signalfds survive checkpoint/restore with their masks and
 * flags, and the signals pending for them stay readable, with their values.
 *
 * Two signalfds, all signals but SIGTERM blocked:
 *   A  mask {SIGUSR1, SIGRTMIN+2, SIGRTMIN+4}, SFD_NONBLOCK|SFD_CLOEXEC
 *   B  mask {SIGHUP, SIGRTMIN+4}, no flags (blocking, inherited on exec)
 * and pending for the process: SIGUSR1 (sigqueue, value), SIGRTMIN+2 three
 * times (sigqueue, distinct values), SIGRTMIN+4 twice (kill, then sigqueue
 * with a value), SIGHUP (kill), and SIGUSR2 (sigqueue), in no fd's mask.
 *
 * After restore:
 *  - both descriptors are open at the same numbers, are signalfds
 *    (anon_inode:[signalfd]), F_GETFL/F_GETFD unchanged, the "sigmask:" of
 *    /proc/self/fdinfo unchanged, both poll readable;
 *  - B reads SIGHUP, SIGRTMIN+4 (SI_USER), SIGRTMIN+4 (SI_QUEUE, value), in
 *    that order, one signalfd_siginfo per read, then is not readable;
 *  - A reads SIGUSR1, then the three SIGRTMIN+2 in order, each with
 *    ssi_code, ssi_pid, ssi_uid, ssi_ptr; then read fails with EAGAIN;
 *  - SIGUSR2 is still pending for the process (sigtimedwait, value);
 *  - both still work: a new SIGRTMIN+2 is readable from A, a SIGUSR2 is not.
 *
 * --sabotage=WHAT (debug): mask, flags, drain, close.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>

#include "zdtmtst.h"

const char *test_doc = "Check that signalfds and the signals pending for them are restored";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (mask, flags, drain, close)", 0);

struct sfd {
	const char *name;
	int fd, getfl, getfd;
	sigset_t mask;
	char fdinfo_mask[64];
};

struct want {
	int sig, code;
	uint64_t value;
};

static int failed;

static int fdinfo_sigmask(int fd, char *out, size_t size)
{
	char path[64], line[256];
	FILE *f;
	int ret = -1;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "sigmask:", 8)) {
			char *p = line + 8;

			while (*p == ' ' || *p == '\t')
				p++;
			p[strcspn(p, "\n")] = '\0';
			if (strlen(p) >= size)
				break;
			memcpy(out, p, strlen(p) + 1);
			ret = 0;
		}
	fclose(f);
	return ret;
}

static int queue(int sig, uint64_t v)
{
	union sigval sv = { .sival_ptr = (void *)(uintptr_t)v };

	if (sigqueue(getpid(), sig, sv)) {
		pr_perror("sigqueue(%d)", sig);
		return -1;
	}
	return 0;
}

static int readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void read_expect(struct sfd *s, const struct want *w, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		struct signalfd_siginfo si;
		ssize_t r;

		if (!readable(s->fd)) {
			test_check(0, "%s: not readable before signal #%d (%d)", s->name, i, w[i].sig);
			return;
		}
		r = read(s->fd, &si, sizeof(si));
		if (r != sizeof(si)) {
			test_check(0, "%s: read #%d returned %zd: %m", s->name, i, r);
			return;
		}
		test_check((int)si.ssi_signo == w[i].sig && si.ssi_code == w[i].code && (pid_t)si.ssi_pid == getpid() &&
			      si.ssi_uid == getuid() && (w[i].code != SI_QUEUE || si.ssi_ptr == w[i].value),
		      "%s: read #%d: signo %u code %d pid %u uid %u ptr %#llx; expected %d %d %d %u %#llx", s->name, i,
		      si.ssi_signo, si.ssi_code, si.ssi_pid, si.ssi_uid, (unsigned long long)si.ssi_ptr, w[i].sig,
		      w[i].code, getpid(), getuid(), (unsigned long long)w[i].value);
	}
}

int main(int argc, char **argv)
{
	struct sfd A = { .name = "A" }, B = { .name = "B" };
	struct sfd *all[] = { &A, &B };
	const struct want wantB[] = {
		{ SIGHUP, SI_USER, 0 },
		{ SIGRTMIN + 4, SI_USER, 0 },
		{ SIGRTMIN + 4, SI_QUEUE, 0x4444000044440004ULL },
	};
	const struct want wantA[] = {
		{ SIGUSR1, SI_QUEUE, 0x1111222233334444ULL },
		{ SIGRTMIN + 2, SI_QUEUE, 0xa0a0a0a0a0a0a0a1ULL },
		{ SIGRTMIN + 2, SI_QUEUE, 0xa0a0a0a0a0a0a0a2ULL },
		{ SIGRTMIN + 2, SI_QUEUE, 0xa0a0a0a0a0a0a0a3ULL },
	};
	struct timespec zero = { 0, 0 };
	sigset_t blk, usr2;
	siginfo_t si;
	char buf[64];
	unsigned i;

	test_init(argc, argv);

	sigfillset(&blk);
	sigdelset(&blk, SIGTERM);
	sigprocmask(SIG_SETMASK, &blk, NULL);

	sigemptyset(&A.mask);
	sigaddset(&A.mask, SIGUSR1);
	sigaddset(&A.mask, SIGRTMIN + 2);
	sigaddset(&A.mask, SIGRTMIN + 4);
	sigemptyset(&B.mask);
	sigaddset(&B.mask, SIGHUP);
	sigaddset(&B.mask, SIGRTMIN + 4);
	A.fd = signalfd(-1, &A.mask, SFD_NONBLOCK | SFD_CLOEXEC);
	B.fd = signalfd(-1, &B.mask, 0);
	if (A.fd < 0 || B.fd < 0) {
		pr_perror("signalfd");
		return 1;
	}

	if (queue(SIGRTMIN + 2, wantA[1].value) || kill(getpid(), SIGRTMIN + 4) || queue(SIGUSR1, wantA[0].value) ||
	    queue(SIGRTMIN + 2, wantA[2].value) || queue(SIGUSR2, 0x2222) || kill(getpid(), SIGHUP) ||
	    queue(SIGRTMIN + 4, wantB[2].value) || queue(SIGRTMIN + 2, wantA[3].value)) {
		pr_perror("sending signals");
		return 1;
	}

	for (i = 0; i < ARRAY_SIZE(all); i++) {
		struct sfd *s = all[i];

		s->getfl = fcntl(s->fd, F_GETFL);
		s->getfd = fcntl(s->fd, F_GETFD);
		if (fdinfo_sigmask(s->fd, s->fdinfo_mask, sizeof(s->fdinfo_mask))) {
			pr_perror("no sigmask in the fdinfo of %d", s->fd);
			return 1;
		}
		test_msg("%s: fd %d flags %#x fdflags %#x sigmask %s\n", s->name, s->fd, s->getfl, s->getfd,
			 s->fdinfo_mask);
	}

	test_daemon();
	test_waitsig();

	if (sabotage) {
		test_msg("sabotage: %s\n", sabotage);
		if (!strcmp(sabotage, "mask")) {
			sigset_t m;

			sigemptyset(&m);
			sigaddset(&m, SIGUSR1);
			signalfd(A.fd, &m, 0);
		} else if (!strcmp(sabotage, "flags")) {
			fcntl(A.fd, F_SETFL, 0);
		} else if (!strcmp(sabotage, "drain")) {
			struct signalfd_siginfo x;

			if (read(B.fd, &x, sizeof(x)) < 0)
				test_msg("drain: %m\n");
		} else if (!strcmp(sabotage, "close")) {
			close(B.fd);
		} else {
			test_check(0, "unknown --sabotage=%s", sabotage);
		}
	}

	for (i = 0; i < ARRAY_SIZE(all); i++) {
		struct sfd *s = all[i];
		char path[64], link[64] = "";
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", s->fd);
		n = readlink(path, link, sizeof(link) - 1);
		if (n < 0) {
			test_check(0, "%s: fd %d is not open: %m", s->name, s->fd);
			continue;
		}
		link[n] = '\0';
		test_check(!strcmp(link, "anon_inode:[signalfd]"), "%s: fd %d is %s", s->name, s->fd, link);
		test_check(fcntl(s->fd, F_GETFL) == s->getfl, "%s: F_GETFL %#x, was %#x", s->name, fcntl(s->fd, F_GETFL),
		      s->getfl);
		test_check(fcntl(s->fd, F_GETFD) == s->getfd, "%s: F_GETFD %#x, was %#x", s->name, fcntl(s->fd, F_GETFD),
		      s->getfd);
		if (fdinfo_sigmask(s->fd, buf, sizeof(buf)))
			test_check(0, "%s: no sigmask in the fdinfo of %d", s->name, s->fd);
		else
			test_check(!strcmp(buf, s->fdinfo_mask), "%s: fdinfo sigmask %s, was %s", s->name, buf,
			      s->fdinfo_mask);
		test_check(readable(s->fd), "%s: fd %d does not poll readable", s->name, s->fd);
	}

	read_expect(&B, wantB, ARRAY_SIZE(wantB));
	test_check(!readable(B.fd), "B: still readable after %zu signals", ARRAY_SIZE(wantB));
	read_expect(&A, wantA, ARRAY_SIZE(wantA));
	test_check(!readable(A.fd), "A: still readable after %zu signals", ARRAY_SIZE(wantA));
	if (!readable(A.fd) && (fcntl(A.fd, F_GETFL) & O_NONBLOCK)) {
		/* (a blocking read here would hang: only when O_NONBLOCK survived) */
		struct signalfd_siginfo x;
		ssize_t r = read(A.fd, &x, sizeof(x));

		test_check(r < 0 && errno == EAGAIN, "A: read after the last signal returned %zd: %m", r);
	}

	/* SIGUSR2 is pending for the process, in no signalfd's mask */
	sigemptyset(&usr2);
	sigaddset(&usr2, SIGUSR2);
	test_check(sigtimedwait(&usr2, &si, &zero) == SIGUSR2 && si.si_code == SI_QUEUE && si.si_value.sival_ptr ==
		      (void *)0x2222,
	      "SIGUSR2 (in no signalfd mask) is not pending with its value");

	/* they still work */
	queue(SIGRTMIN + 2, 77);
	if (readable(A.fd)) {
		struct signalfd_siginfo x;

		test_check(read(A.fd, &x, sizeof(x)) == sizeof(x) && (int)x.ssi_signo == SIGRTMIN + 2 && x.ssi_ptr == 77,
		      "A: the new SIGRTMIN+2 reads wrong");
	} else {
		test_check(0, "A: a new SIGRTMIN+2 is not readable");
	}
	queue(SIGUSR2, 1);
	test_check(!readable(A.fd) && !readable(B.fd), "SIGUSR2 made a signalfd readable");

	if (failed) {
		errno = 0;
		fail("signalfds changed (see above)");
		return 1;
	}
	pass();
	return 0;
}

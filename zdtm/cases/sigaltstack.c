/*
 * sigaltstack: the alternate signal stack survives checkpoint/restore, also
 * while a handler is running on it.
 *
 * The test sets a 64 KiB alternate stack (between guard pages; its lower
 * half filled with a pattern), installs SA_ONSTACK handlers for SIGUSR1 and
 * SIGUSR2 and a handler without SA_ONSTACK for SIGHUP, and sends itself
 * SIGUSR1: the checkpoint happens inside that handler, on the alternate
 * stack (the handler calls test_daemon() and test_waitsig()).
 *
 * After restore, still in the SIGUSR1 handler: sigaltstack() reports the
 * same ss_sp and ss_size with SS_ONSTACK, a local variable's address is on
 * the alternate stack. Then the handler returns (sigreturn through the
 * frame on the alternate stack), and in the main flow:
 *  - sigaltstack() reports the same ss_sp, ss_size and flags 0;
 *  - a SIGUSR2 (SA_ONSTACK) handler runs on the alternate stack: the
 *    address of its local is inside it, sigaltstack() in it reports
 *    SS_ONSTACK and its ucontext's uc_stack is the alternate stack;
 *  - a SIGHUP handler (no SA_ONSTACK) runs on the normal stack;
 *  - the pattern in the unused part of the alternate stack is intact.
 *
 * --sabotage=WHAT (debug), applied once the SIGUSR1 handler returned:
 * disable, move, memory.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>

#include "zdtmtst.h"

const char *test_doc = "Check that sigaltstack settings (and a handler running on the stack) are restored";

static char *sabotage;
TEST_OPTION(sabotage, string, "debug: damage the state after SIGTERM (disable, move, memory)", 0);

#define ALT_SIZE (64 * 1024)
#define PATTERN_SIZE (ALT_SIZE / 2)

static char *alt;	 /* the alternate stack */
static char *other;	 /* --sabotage=move */

struct probe {
	int ran;
	uintptr_t local;
	stack_t query;
	stack_t uc_stack;
};

static struct probe usr1_before, usr1_after, usr2, hup;
static int failed;


static int on_alt(uintptr_t a)
{
	return a >= (uintptr_t)alt && a < (uintptr_t)alt + ALT_SIZE;
}

/* a fresh frame: the address of a local of a new call */
static __attribute__((noinline)) void take(struct probe *p, ucontext_t *uc)
{
	volatile char local = 0;

	p->local = (uintptr_t)&local;
	sigaltstack(NULL, &p->query);
	if (uc)
		p->uc_stack = uc->uc_stack;
	p->ran++;
	asm volatile("" : : "r"(&local) : "memory");
}

static void usr1(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	take(&usr1_before, uc);
	test_daemon();
	test_waitsig();
	take(&usr1_after, uc);
}

static void usr2_h(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	take(&usr2, uc);
}

static void hup_h(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	take(&hup, uc);
}

static int handler(int sig, void (*h)(int, siginfo_t *, void *), int flags)
{
	struct sigaction sa = { .sa_sigaction = h, .sa_flags = SA_SIGINFO | flags };

	sigemptyset(&sa.sa_mask);
	return sigaction(sig, &sa, NULL);
}

static void send_self(int sig)
{
	syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), sig);
}

static void check_query(const char *when, const stack_t *q, int flags)
{
	test_check(q->ss_sp == alt && q->ss_size == ALT_SIZE && q->ss_flags == flags,
	      "%s: sigaltstack() reports sp %p size %zu flags %#x, expected %p %d %#x", when, q->ss_sp, q->ss_size,
	      q->ss_flags, alt, ALT_SIZE, flags);
}

int main(int argc, char **argv)
{
	stack_t ss, q;
	char *region;
	uint32_t crc;
	int i;

	test_init(argc, argv);

	region = mmap(NULL, ALT_SIZE + 2 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	other = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED || other == MAP_FAILED) {
		pr_perror("mmap");
		return 1;
	}
	alt = region + PAGE_SIZE;
	if (mprotect(region, PAGE_SIZE, PROT_NONE) || mprotect(alt + ALT_SIZE, PAGE_SIZE, PROT_NONE)) {
		pr_perror("mprotect");
		return 1;
	}
	crc = ~0;
	datagen((uint8_t *)alt, PATTERN_SIZE, &crc);

	ss.ss_sp = alt;
	ss.ss_size = ALT_SIZE;
	ss.ss_flags = 0;
	if (sigaltstack(&ss, NULL)) {
		pr_perror("sigaltstack");
		return 1;
	}
	if (handler(SIGUSR1, usr1, SA_ONSTACK) || handler(SIGUSR2, usr2_h, SA_ONSTACK) || handler(SIGHUP, hup_h, 0)) {
		pr_perror("sigaction");
		return 1;
	}

	/* checkpoint/restore happen in the handler */
	send_self(SIGUSR1);

	if (usr1_before.ran != 1 || usr1_after.ran != 1) {
		fail("the SIGUSR1 handler ran %d/%d times", usr1_before.ran, usr1_after.ran);
		return 1;
	}
	test_check(on_alt(usr1_before.local), "before: the SIGUSR1 handler's local %#lx is not on the alternate stack %p",
	      (unsigned long)usr1_before.local, alt);
	check_query("in the SIGUSR1 handler before the checkpoint", &usr1_before.query, SS_ONSTACK);

	/* after restore, still in the handler */
	test_check(on_alt(usr1_after.local),
	      "after restore: the SIGUSR1 handler's local %#lx is not on the alternate stack %p",
	      (unsigned long)usr1_after.local, alt);
	check_query("in the SIGUSR1 handler after restore", &usr1_after.query, SS_ONSTACK);

	if (sabotage) {
		test_msg("sabotage: %s\n", sabotage);
		if (!strcmp(sabotage, "disable")) {
			ss.ss_flags = SS_DISABLE;
			sigaltstack(&ss, NULL);
		} else if (!strcmp(sabotage, "move")) {
			ss.ss_sp = other;
			sigaltstack(&ss, NULL);
		} else if (!strcmp(sabotage, "memory")) {
			alt[100] ^= 1;
		} else {
			test_check(0, "unknown --sabotage=%s", sabotage);
		}
	}

	/* back in the main flow */
	if (sigaltstack(NULL, &q))
		test_check(0, "sigaltstack query: %m");
	else
		check_query("after the handler returned", &q, 0);

	send_self(SIGUSR2);
	test_check(usr2.ran == 1, "the SIGUSR2 handler ran %d times", usr2.ran);
	test_check(on_alt(usr2.local), "the SIGUSR2 (SA_ONSTACK) handler's local %#lx is not on the alternate stack %p",
	      (unsigned long)usr2.local, alt);
	check_query("in the SIGUSR2 handler", &usr2.query, SS_ONSTACK);
	test_check(usr2.uc_stack.ss_sp == alt && usr2.uc_stack.ss_size == ALT_SIZE,
	      "SIGUSR2: uc_stack is sp %p size %zu, expected %p %d", usr2.uc_stack.ss_sp, usr2.uc_stack.ss_size, alt,
	      ALT_SIZE);

	send_self(SIGHUP);
	test_check(hup.ran == 1, "the SIGHUP handler ran %d times", hup.ran);
	test_check(!on_alt(hup.local), "the SIGHUP handler (no SA_ONSTACK) ran on the alternate stack (local %#lx)",
	      (unsigned long)hup.local);
	check_query("in the SIGHUP handler", &hup.query, 0);

	crc = ~0;
	i = datachk((uint8_t *)alt, PATTERN_SIZE, &crc);
	test_check(i == 0, "the unused part of the alternate stack changed");

	if (failed) {
		errno = 0;
		fail("the alternate signal stack changed (see above)");
		return 1;
	}
	pass();
	return 0;
}

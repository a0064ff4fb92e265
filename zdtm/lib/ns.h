/* ns.h - the "ns" flavour of zdtm programs (internal, see zdtmtst.h). */
#ifndef ZDTM_NS_H
#define ZDTM_NS_H

#include <sys/types.h>

#include "lock.h"

extern futex_t sig_received;
extern char *outfile;
extern char *pidfile;

/* ZDTM_NEWNS=1: enter new namespaces, start the ns init, write the pidfile */
extern void ns_create(int argc, char **argv) __attribute__((noreturn));
/* ZDTM_NEWNS=2: PID 1 of the new pid namespace */
extern void ns_init(int argc, char **argv) __attribute__((noreturn));
/* the pidfile the test writes inside the namespaces: <pidfile>.inner */
extern char *ns_inner_pidfile(void);
/* the launcher's atomic pidfile write (test.c) */
extern int zdtm_write_pidfile(pid_t pid);

#endif /* ZDTM_NS_H */

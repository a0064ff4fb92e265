/* lock.h - futex word helpers used by the zdtm library (internal). */
#ifndef ZDTM_LOCK_H
#define ZDTM_LOCK_H

#include <errno.h>
#include <stdint.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>

typedef struct {
	int32_t raw;
} futex_t;

static inline int32_t futex_get(futex_t *f)
{
	return __atomic_load_n(&f->raw, __ATOMIC_SEQ_CST);
}

static inline void futex_set(futex_t *f, int32_t v)
{
	__atomic_store_n(&f->raw, v, __ATOMIC_SEQ_CST);
}

static inline void futex_wake_all(futex_t *f)
{
	/* not FUTEX_PRIVATE: the word may live in a MAP_SHARED page */
	syscall(SYS_futex, &f->raw, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

/* async-signal-safe; preserves errno */
static inline void futex_set_and_wake(futex_t *f, int32_t v)
{
	int saved = errno;

	futex_set(f, v);
	futex_wake_all(f);
	errno = saved;
}

/* sleep while the word holds v (spurious wakeups and EINTR are retried) */
static inline void futex_wait_while(futex_t *f, int32_t v)
{
	while (futex_get(f) == v)
		syscall(SYS_futex, &f->raw, FUTEX_WAIT, v, NULL, NULL, 0);
}

#endif /* ZDTM_LOCK_H */

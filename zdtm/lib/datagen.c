/* datagen.c - pseudo-random data with CRC-32, and other small helpers. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zdtmtst.h"

/* CRC-32 (IEEE 802.3, reflected, polynomial 0xedb88320), table driven */
static uint32_t crc_table[256];

static void crc_table_init(void)
{
	uint32_t i, j, c;

	if (crc_table[1])
		return;
	for (i = 0; i < 256; i++) {
		c = i;
		for (j = 0; j < 8; j++)
			c = (c >> 1) ^ ((c & 1) ? 0xedb88320u : 0);
		crc_table[i] = c;
	}
}

uint32_t zdtm_crc32(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	crc_table_init();
	while (len--)
		crc = (crc >> 8) ^ crc_table[(crc ^ *p++) & 0xff];
	return crc;
}

/* xorshift64*: a fast generator, good enough for test data */
static uint64_t rng_state;

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static void fill(uint8_t *buf, size_t len, uint64_t *state)
{
	while (len >= 8) {
		uint64_t v = rng_next(state);

		memcpy(buf, &v, 8);
		buf += 8;
		len -= 8;
	}
	if (len) {
		uint64_t v = rng_next(state);

		memcpy(buf, &v, len);
	}
}

void zdtm_fill_seeded(void *buf, size_t len, uint64_t seed)
{
	uint64_t state = seed ^ 0x9e3779b97f4a7c15ull;

	if (!state)
		state = 1;
	fill(buf, len, &state);
}

static void rng_seed_once(void)
{
	if (!rng_state) {
		rng_state = ((uint64_t)lrand48() << 32) ^ (uint64_t)lrand48() ^ ((uint64_t)getpid() << 16) ^
			    (uint64_t)(uintptr_t)&rng_state;
		if (!rng_state)
			rng_state = 1;
	}
}

void datagen2(uint8_t *buffer, unsigned length, uint32_t *crc)
{
	rng_seed_once();
	fill(buffer, length, &rng_state);
	if (crc)
		*crc = zdtm_crc32(*crc, buffer, length);
}

void datagen(uint8_t *buffer, unsigned length, uint32_t *crc)
{
	uint32_t c;

	if (length <= 4) {
		datagen2(buffer, length, NULL);
		return;
	}
	datagen2(buffer, length - 4, crc);
	c = crc ? *crc : zdtm_crc32(~0u, buffer, length - 4);
	buffer[length - 4] = c;
	buffer[length - 3] = c >> 8;
	buffer[length - 2] = c >> 16;
	buffer[length - 1] = c >> 24;
}

int datachk(const uint8_t *buffer, unsigned length, uint32_t *crc)
{
	uint32_t stored;

	if (length < 4) {
		test_msg("datachk: buffer of %u bytes has no room for a CRC\n", length);
		return 1;
	}
	*crc = zdtm_crc32(*crc, buffer, length - 4);
	stored = buffer[length - 4] | buffer[length - 3] << 8 | buffer[length - 2] << 16 |
		 (uint32_t)buffer[length - 1] << 24;
	if (stored != *crc) {
		test_msg("datachk: %p+%u: stored CRC %08x, computed %08x\n", buffer, length, stored, *crc);
		return 1;
	}
	return 0;
}

int datasum(const uint8_t *buffer, unsigned length, uint32_t *crc)
{
	*crc = zdtm_crc32(*crc, buffer, length);
	return 0;
}

int set_nonblock(int fd, int on)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -1;
	flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
	return fcntl(fd, F_SETFL, flags);
}

int read_data(int fd, unsigned char *buf, int len)
{
	while (len > 0) {
		ssize_t n = read(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			pr_perror("read(%d)", fd);
			return -1;
		}
		if (n == 0) {
			errno = ENODATA;
			pr_err("read(%d): unexpected end of file (%d bytes missing)\n", fd, len);
			return -1;
		}
		buf += n;
		len -= n;
	}
	return 0;
}

int write_data(int fd, const unsigned char *buf, int len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			pr_perror("write(%d)", fd);
			return -1;
		}
		buf += n;
		len -= n;
	}
	return 0;
}

int test_collect_records(int fd, void *table, size_t size, int n, int first, int limit)
{
	unsigned char rec[256], *seen;
	int i, idx;
	char c;

	if (size > sizeof(rec) || size < sizeof(int) || limit <= first) {
		pr_err("test_collect_records: bad record size %zu or range %d..%d\n", size, first, limit);
		return -1;
	}
	seen = calloc(limit - first, 1);
	if (!seen) {
		pr_perror("calloc");
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (read_data(fd, rec, size)) {
			pr_err("only %d of %d records arrived\n", i, n);
			goto err;
		}
		memcpy(&idx, rec, sizeof(idx));
		if (idx < first || idx >= limit || seen[idx - first]) {
			pr_err("record %d has index %d (out of %d..%d, or twice)\n", i, idx, first, limit - 1);
			goto err;
		}
		seen[idx - first] = 1;
		memcpy((unsigned char *)table + (size_t)idx * size, rec, size);
	}
	if (read(fd, &c, 1) != 0) {
		pr_err("more than %d records, or a read error\n", n);
		goto err;
	}
	free(seen);
	return 0;
err:
	free(seen);
	return -1;
}

/* Writes the whole string val to the file at path (a /proc or sysctl knob). */
int test_write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, val, strlen(val));
	close(fd);
	return n == (ssize_t)strlen(val) ? 0 : -1;
}

int test_map_userns(pid_t pid, const char *uid_map, const char *gid_map)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/setgroups", (int)pid);
	if (test_write_file(path, "deny"))
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
	if (test_write_file(path, uid_map))
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
	return test_write_file(path, gid_map);
}

/* Reads the file at path (up to size - 1 bytes) into buf, NUL-terminated. */
int test_read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

/* Whether two texts hold the same numbers (up to 16), whatever the spacing. */
int test_same_numbers(const char *got, const char *want)
{
	unsigned long a[16], b[16];
	int na = 0, nb = 0;
	char *end;

	while (*got && na < 16) {
		a[na++] = strtoul(got, &end, 10);
		if (end == got)
			return 0;
		got = end + strspn(end, " \n");
	}
	while (*want && nb < 16) {
		b[nb++] = strtoul(want, &end, 10);
		if (end == want)
			return 0;
		want = end + strspn(end, " \n");
	}
	return na == nb && !memcmp(a, b, na * sizeof(a[0]));
}

/* The Cap* lines of /proc/self/status. */
int test_read_caps(char *out, size_t size)
{
	char buf[8192], *line, *save = NULL;

	if (test_read_file("/proc/self/status", buf, sizeof(buf)))
		return -1;
	out[0] = '\0';
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "Cap", 3))
			continue;
		strncat(out, line, size - strlen(out) - 2);
		strcat(out, "\n");
	}
	return 0;
}

/*
 * maps: one mapping of each common kind survives checkpoint/restore with its
 * contents, protections and address.
 *
 *   ELF text      a checksum of the code of a function; the function is called
 *   ELF rodata    a constant string
 *   ELF .data     an initialised global array, rewritten at run time
 *   ELF .bss      a zero-initialised global buffer filled with random data
 *   heap          small malloc() chunks (brk heap) with random data; the
 *                 kernel's brk (brk(0)) must not change
 *   stack         a 256 KiB local array with random data
 *   anon private  32 pages, odd pages random, even pages never touched (zero)
 *   file private  a MAP_PRIVATE mapping, at file offset 1 page, of a file the
 *                 test creates; two pages are written (copy-on-write), the
 *                 others must still read the file, and the file itself must
 *                 be unchanged
 *   anon shared   MAP_SHARED|MAP_ANONYMOUS with random data
 *   PROT_NONE     a never-touched guard reservation, and a PROT_NONE page
 *                 (with contents written before the mprotect) between two
 *                 read-write pages of one mapping
 *   read-only     anonymous pages filled, then mprotect(PROT_READ)
 *   exec          an anonymous page holding a tiny function, PROT_READ|PROT_EXEC
 *
 * Besides the contents, /proc/self/maps is compared line by line (address
 * range, protections, offset, path, and device:inode for regular files),
 * and the startcode, endcode, startstack, start_data, end_data and
 * start_brk fields of /proc/self/stat must be unchanged.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that mappings of every kind are restored with contents and protections";

#define PS 4096UL
#define FILE_NAME "maps.file"
#define FILE_PAGES 9	  /* the file */
#define FMAP_PAGES 8	  /* the mapping: file pages 1..8 */
#define HEAP_CHUNKS 64
#define STACK_BYTES (256 * 1024)
#define MAPS_MAX (256 * 1024)

static int data_var[1024] = { 1, 2, 3, 4, 5 };			/* .data */
static const char rodata_str[] = "zdtm maps: a constant string in .rodata"; /* .rodata */
static uint8_t bss_buf[16 * PS];				/* .bss */

static char maps_before[MAPS_MAX], maps_after[MAPS_MAX];

static int failed;

/* the function whose code is checksummed and called */
__attribute__((noinline)) static int text_probe(int x)
{
	return x * 31 + 7;
}

/* grow the stack VMA well below anything used later (signal frames included) */
__attribute__((noinline)) static void grow_stack(void)
{
	volatile char buf[128 * 1024];

	memset((char *)buf, 0x5a, sizeof(buf));
	asm volatile("" : : "r"(buf) : "memory");
}

static int read_all(const char *path, char *buf, size_t size)
{
	size_t len = 0;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return -1;
	for (;;) {
		ssize_t n = read(fd, buf + len, size - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			if (n < 0)
				return -1;
			break;
		}
		len += n;
		if (len == size - 1) {
			close(fd);
			errno = EFBIG;
			return -1;
		}
	}
	buf[len] = '\0';
	return len;
}

/* /proc/self/stat: 26 startcode 27 endcode 28 startstack 45 start_data 46 end_data 47 start_brk */
static int read_stat_mm(unsigned long v[6])
{
	static const int fields[6] = { 26, 27, 28, 45, 46, 47 };
	char buf[4096], *p, *tok, *save = NULL;
	int field = 2, got = 0, i;

	if (read_all("/proc/self/stat", buf, sizeof(buf)) < 0)
		return -1;
	p = strrchr(buf, ')');
	if (!p)
		return -1;
	for (tok = strtok_r(p + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		field++;
		for (i = 0; i < 6; i++)
			if (fields[i] == field) {
				v[i] = strtoul(tok, NULL, 10);
				got++;
			}
	}
	return got == 6 ? 0 : -1;
}

struct map_line {
	unsigned long start, end, off;
	char perms[5], dev[16], path[512];
	unsigned long ino;
};

static int parse_line(char *line, struct map_line *m)
{
	int n = 0;

	m->path[0] = '\0';
	if (sscanf(line, "%lx-%lx %4s %lx %15s %lu %n", &m->start, &m->end, m->perms, &m->off, m->dev, &m->ino,
		   &n) < 6)
		return -1;
	snprintf(m->path, sizeof(m->path), "%s", line + n);
	return 0;
}

/* device:inode identify a file only for regular, still linked files */
static int is_regular_file(const char *path)
{
	size_t l = strlen(path);

	if (path[0] != '/' || !strncmp(path, "/SYSV", 5) || !strncmp(path, "/memfd:", 7))
		return 0;
	return !(l > 10 && !strcmp(path + l - 10, " (deleted)"));
}

static int split_lines(char *buf, char **lines, int max)
{
	char *save = NULL, *l;
	int n = 0;

	for (l = strtok_r(buf, "\n", &save); l && n < max; l = strtok_r(NULL, "\n", &save))
		lines[n++] = l;
	return n;
}

/*
 * The kernel merges adjacent anonymous mappings with equal protections
 * when they are created together, but not always when they came about
 * one by one (different anon_vma): the original may show two lines where
 * the restored process shows one. That difference is invisible to a
 * program except through this file, so (as CRIU's zdtm does) adjacent
 * anonymous lines with the same protections are merged on both sides
 * before comparing.
 */
static int merge_anon(char **lines, int n, struct map_line *out)
{
	int i, m = 0;

	for (i = 0; i < n; i++) {
		struct map_line cur;

		if (parse_line(lines[i], &cur)) {
			memset(&cur, 0, sizeof(cur));
			snprintf(cur.path, sizeof(cur.path), "%s", lines[i]);
			cur.start = cur.end = ~0ul;
		}
		if (m > 0 && cur.path[0] == '\0' && cur.ino == 0 && out[m - 1].path[0] == '\0' &&
		    out[m - 1].ino == 0 && out[m - 1].end == cur.start && !strcmp(out[m - 1].perms, cur.perms)) {
			out[m - 1].end = cur.end;
			continue;
		}
		out[m++] = cur;
	}
	return m;
}

static int same_line(const struct map_line *ma, const struct map_line *mb)
{
	if (ma->start != mb->start || ma->end != mb->end || strcmp(ma->perms, mb->perms) || ma->off != mb->off ||
	    strcmp(ma->path, mb->path))
		return 0;
	if (is_regular_file(ma->path))
		return !strcmp(ma->dev, mb->dev) && ma->ino == mb->ino;
	return 1;
}

static void show(const char *what, const struct map_line *m)
{
	test_msg("FAILED: %s: %lx-%lx %s %08lx %s %lu %s\n", what, m->start, m->end, m->perms, m->off, m->dev, m->ino,
		 m->path);
	failed = 1;
}

/* every mapping must be there after restore, and no other */
static void compare_maps(char *a, char *b)
{
	static char *la[4096], *lb[4096];
	static struct map_line ma[4096], mb[4096];
	int na = split_lines(a, la, ARRAY_SIZE(la)), nb = split_lines(b, lb, ARRAY_SIZE(lb)), i, j;

	na = merge_anon(la, na, ma);
	nb = merge_anon(lb, nb, mb);
	for (i = 0; i < na; i++) {
		for (j = 0; j < nb && !same_line(&ma[i], &mb[j]); j++)
			;
		if (j == nb)
			show("mapping lost or changed", &ma[i]);
	}
	for (j = 0; j < nb; j++) {
		for (i = 0; i < na && !same_line(&ma[i], &mb[j]); i++)
			;
		if (i == na)
			show("mapping new or changed", &mb[j]);
	}
}

static uint8_t *map(size_t len, int prot, int flags)
{
	uint8_t *p = mmap(NULL, len, prot, flags, -1, 0);

	if (p == MAP_FAILED) {
		pr_perror("mmap %zu bytes", len);
		exit(1);
	}
	return p;
}

static int chk(const char *what, const uint8_t *p, size_t len)
{
	uint32_t crc = ~0u;

	if (datachk(p, len, &crc)) {
		test_msg("FAILED: %s at %p: contents changed\n", what, p);
		failed = 1;
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	uint8_t stack_buf[STACK_BYTES];
	uint8_t *heap[HEAP_CHUNKS], *anon, *fmap, *shared, *guard, *split, *ro, *exec_page;
	uint8_t file_data[FILE_PAGES * PS], cow_data[2][PS], split_mid[PS];
	uint32_t crc, text_crc;
	unsigned long stat0[6], stat1[6];
	long brk0, brk1;
	int fd, i, (*exec_fn)(void) = NULL;
	size_t j;

	test_init(argc, argv);
	test_msg("maps: setting up\n"); /* loads the time zone (malloc) before the heap is recorded */

	/* ELF .data, .bss, text */
	for (i = 0; i < (int)ARRAY_SIZE(data_var); i++)
		data_var[i] = i * 7 + 3;
	crc = ~0u;
	datagen(bss_buf, sizeof(bss_buf), &crc);
	text_crc = zdtm_crc32(~0u, (const void *)text_probe, 32);

	/* heap */
	for (i = 0; i < HEAP_CHUNKS; i++) {
		heap[i] = malloc(1000 + i);
		if (!heap[i]) {
			pr_perror("malloc");
			return 1;
		}
		crc = ~0u;
		datagen(heap[i], 1000 + i, &crc);
	}

	/* stack */
	crc = ~0u;
	datagen(stack_buf, sizeof(stack_buf), &crc);

	/* anonymous private: odd pages written, even pages untouched */
	anon = map(32 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	for (j = 1; j < 32; j += 2) {
		crc = ~0u;
		datagen(anon + j * PS, PS, &crc);
	}

	/* file-backed private mapping at file offset 1 page */
	fd = open(FILE_NAME, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		pr_perror("create %s", FILE_NAME);
		return 1;
	}
	datagen2(file_data, sizeof(file_data), NULL);
	if (write_data(fd, file_data, sizeof(file_data)))
		return 1;
	fmap = mmap(NULL, FMAP_PAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, PS);
	if (fmap == MAP_FAILED) {
		pr_perror("mmap %s", FILE_NAME);
		return 1;
	}
	close(fd);
	/* read every page so that unwritten ones are present too */
	crc = ~0u;
	datasum(fmap, FMAP_PAGES * PS, &crc);
	datagen2(cow_data[0], PS, NULL);
	datagen2(cow_data[1], PS, NULL);
	memcpy(fmap + 1 * PS, cow_data[0], PS);
	memcpy(fmap + 5 * PS, cow_data[1], PS);

	/* anonymous shared */
	shared = map(4 * PS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
	crc = ~0u;
	datagen(shared, 4 * PS, &crc);

	/* PROT_NONE: a pure guard reservation, and a PROT_NONE page with contents */
	guard = map(8 * PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
	split = map(3 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	for (j = 0; j < 3; j++) {
		crc = ~0u;
		datagen(split + j * PS, PS, &crc);
	}
	memcpy(split_mid, split + PS, PS);
	if (mprotect(split + PS, PS, PROT_NONE)) {
		pr_perror("mprotect PROT_NONE");
		return 1;
	}

	/* read-only with contents */
	ro = map(4 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	crc = ~0u;
	datagen(ro, 4 * PS, &crc);
	if (mprotect(ro, 4 * PS, PROT_READ)) {
		pr_perror("mprotect PROT_READ");
		return 1;
	}

	/* exec: "mov $0x2a5a5a5a, %eax; ret" */
	exec_page = map(PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	memset(exec_page, 0xcc, PS);
#if defined(__x86_64__) || defined(__i386__)
	{
		static const uint8_t code[] = { 0xb8, 0x5a, 0x5a, 0x5a, 0x2a, 0xc3 };

		memcpy(exec_page, code, sizeof(code));
		exec_fn = (int (*)(void))exec_page;
	}
#endif
	if (mprotect(exec_page, PS, PROT_READ | PROT_EXEC)) {
		pr_perror("mprotect PROT_EXEC");
		return 1;
	}
	if (exec_fn && exec_fn() != 0x2a5a5a5a) {
		pr_err("the generated code does not work even before the checkpoint\n");
		return 1;
	}

	grow_stack();
	brk0 = syscall(SYS_brk, 0);
	if (read_stat_mm(stat0)) {
		pr_perror("read /proc/self/stat");
		return 1;
	}

	test_daemon();
	/* test_daemon() unmaps the library's page: record the layout after it */
	if (read_all("/proc/self/maps", maps_before, sizeof(maps_before)) < 0) {
		pr_perror("read /proc/self/maps");
		return 1;
	}
	test_waitsig();

	/* first the layout, before anything can change it */
	if (read_all("/proc/self/maps", maps_after, sizeof(maps_after)) < 0) {
		fail("read /proc/self/maps after restore");
		return 1;
	}
	brk1 = syscall(SYS_brk, 0);
	if (read_stat_mm(stat1)) {
		fail("read /proc/self/stat after restore");
		return 1;
	}
	compare_maps(maps_before, maps_after);
	test_check(brk0 == brk1, "brk was %#lx, now %#lx", brk0, brk1);
	for (i = 0; i < 6; i++)
		test_check(stat0[i] == stat1[i], "/proc/self/stat mm field #%d was %#lx, now %#lx", i, stat0[i], stat1[i]);

	/* ELF */
	for (i = 0; i < (int)ARRAY_SIZE(data_var); i++)
		if (data_var[i] != i * 7 + 3) {
			test_check(0, ".data: data_var[%d] = %d, expected %d", i, data_var[i], i * 7 + 3);
			break;
		}
	chk(".bss", bss_buf, sizeof(bss_buf));
	test_check(!strcmp(rodata_str, "zdtm maps: a constant string in .rodata"), ".rodata string changed");
	test_check(zdtm_crc32(~0u, (const void *)text_probe, 32) == text_crc, "the code of text_probe() changed");
	test_check(text_probe(3) == 100, "text_probe(3) = %d", text_probe(3));

	/* heap and stack */
	for (i = 0; i < HEAP_CHUNKS; i++)
		if (chk("heap chunk", heap[i], 1000 + i))
			break;
	chk("stack array", stack_buf, sizeof(stack_buf));

	/* anonymous private */
	for (j = 0; j < 32; j++) {
		if (j % 2) {
			if (chk("anonymous page", anon + j * PS, PS))
				break;
		} else {
			size_t k;

			for (k = 0; k < PS && !anon[j * PS + k]; k++)
				;
			if (k != PS) {
				test_check(0, "untouched anonymous page %zu at %p is not zero", j, anon + j * PS);
				break;
			}
		}
	}

	/* file private: written pages keep our data, the others read the file */
	for (j = 0; j < FMAP_PAGES; j++) {
		const uint8_t *want = j == 1 ? cow_data[0] : j == 5 ? cow_data[1] : file_data + (j + 1) * PS;

		if (memcmp(fmap + j * PS, want, PS)) {
			test_check(0, "file mapping page %zu at %p (%s) differs", j, fmap + j * PS,
			      (j == 1 || j == 5) ? "written" : "file contents");
			break;
		}
	}
	fd = open(FILE_NAME, O_RDONLY);
	if (fd < 0) {
		fail("open %s after restore", FILE_NAME);
		return 1;
	} else {
		static uint8_t now[FILE_PAGES * PS];

		test_check(pread(fd, now, sizeof(now), 0) == sizeof(now) && !memcmp(now, file_data, sizeof(now)),
		      "the file %s itself changed (a private mapping must not write through)", FILE_NAME);
		close(fd);
	}

	/* shared, read-only */
	chk("shared anonymous mapping", shared, 4 * PS);
	chk("read-only mapping", ro, 4 * PS);

	/* PROT_NONE areas: make them readable to look inside */
	test_check(!mprotect(guard, 8 * PS, PROT_READ), "mprotect guard: %m");
	for (j = 0; j < 8 * PS; j++)
		if (guard[j]) {
			test_check(0, "guard area byte %zu is %#x, expected 0", j, guard[j]);
			break;
		}
	test_check(!mprotect(split + PS, PS, PROT_READ), "mprotect split: %m");
	chk("page before the PROT_NONE page", split, PS);
	chk("page after the PROT_NONE page", split + 2 * PS, PS);
	test_check(!memcmp(split + PS, split_mid, PS), "the PROT_NONE page lost its contents");

	/* exec */
	if (exec_fn)
		test_check(exec_fn() == 0x2a5a5a5a, "the generated code returned %#x", exec_fn());

	unlink(FILE_NAME);
	if (failed) {
		errno = 0;
		fail("mappings or their contents changed (see above)");
		return 1;
	}
	pass();
	return 0;
}

/* One /proc/PID/maps line, for cases that check where a mapping is. */
#include <stdio.h>
#include <string.h>

#include "zdtmtst.h"

int test_find_map(pid_t pid, unsigned long addr, struct test_map *m)
{
	char path[64], line[PATH_MAX + 128];
	FILE *f;
	int found = -1;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		int off = 0;

		if (sscanf(line, "%lx-%lx %7s %*s %*s %lu %n", &m->start, &m->end, m->perms, &m->ino, &off) >= 4 &&
		    m->start == addr) {
			snprintf(m->name, sizeof(m->name), "%s", off ? line + off : "");
			m->name[strcspn(m->name, "\n")] = 0;
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
}

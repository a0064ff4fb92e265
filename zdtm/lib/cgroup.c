/* cgroup helpers for the zdtm cgroup cases; see cgroup.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup.h"

/* Does the comma-separated list `opts` contain `word`? */
static int has_opt(const char *opts, const char *word)
{
	size_t n = strlen(word);
	const char *p = opts;

	while (p && *p) {
		if (!strncmp(p, word, n) && (p[n] == ',' || p[n] == '\0'))
			return 1;
		p = strchr(p, ',');
		if (p)
			p++;
	}
	return 0;
}

int cg_mount(const char *ctl, char *buf, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char line[4096];
	int ret = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char mp[1024], fstype[64], super[2048];
		char *sep = strstr(line, " - ");

		line[strcspn(line, "\n")] = '\0';
		if (!sep || sscanf(line, "%*s %*s %*s %*s %1023s", mp) != 1)
			continue;
		if (sscanf(sep + 3, "%63s %*s %2047s", fstype, super) != 2)
			continue;
		if (ctl ? (!strcmp(fstype, "cgroup") && has_opt(super, ctl)) : !strcmp(fstype, "cgroup2")) {
			snprintf(buf, len, "%s", mp);
			ret = 0;
			break;
		}
	}
	fclose(f);
	if (ret)
		errno = ENOENT;
	return ret;
}

int cg_of(pid_t pid, const char *ctl, char *buf, size_t len)
{
	char name[64], line[4096];
	FILE *f;
	int ret = -1;

	snprintf(name, sizeof(name), "/proc/%d/cgroup", pid ? pid : getpid());
	f = fopen(name, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2;

		line[strcspn(line, "\n")] = '\0';
		if (!c1 || !(c2 = strchr(c1 + 1, ':')))
			continue;
		*c2 = '\0';
		if (ctl ? has_opt(c1 + 1, ctl) : (c1[1] == '\0' && !strncmp(line, "0:", 2))) {
			snprintf(buf, len, "%s", c2 + 1);
			ret = 0;
			break;
		}
	}
	fclose(f);
	if (ret)
		errno = ENOENT;
	return ret;
}

int cg_self(const char *ctl, char *buf, size_t len)
{
	return cg_of(0, ctl, buf, len);
}

int cg_path(const char *ctl, const char *path, char *buf, size_t len)
{
	char mp[1024];

	if (cg_mount(ctl, mp, sizeof(mp)))
		return -1;
	snprintf(buf, len, "%s%s", mp, strcmp(path, "/") ? path : "");
	return 0;
}

int cg_set(const char *dir, const char *file, const char *val)
{
	char p[2048];
	int fd, ret = 0;
	size_t n = strlen(val);

	snprintf(p, sizeof(p), "%s/%s", dir, file);
	fd = open(p, O_WRONLY);
	if (fd < 0)
		return -1;
	if (write(fd, val, n) != (ssize_t)n)
		ret = -1;
	close(fd);
	return ret;
}

int cg_get(const char *dir, const char *file, char *buf, size_t len)
{
	char p[2048];
	ssize_t n;
	int fd;

	snprintf(p, sizeof(p), "%s/%s", dir, file);
	fd = open(p, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	while (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	return 0;
}

int cg_join(const char *dir, pid_t pid)
{
	char v[32];

	snprintf(v, sizeof(v), "%d", pid ? pid : getpid());
	return cg_set(dir, "cgroup.procs", v);
}

int cg_name(char *buf, size_t len)
{
	char cwd[4096];
	const char *base;

	if (!getcwd(cwd, sizeof(cwd)))
		return -1;
	base = strrchr(cwd, '/');
	base = base ? base + 1 : cwd;
	if (!*base || snprintf(buf, len, "zdtm.%s", base) >= (int)len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int cg_rmdir(const char *dir)
{
	if (rmdir(dir) && errno != ENOENT)
		return -1;
	return 0;
}

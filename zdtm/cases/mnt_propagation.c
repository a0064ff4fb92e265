/*
 * mnt_propagation: the propagation of mounts the test makes in its own
 * mount namespace comes back. A shared tmpfs A with a peer B (a bind of
 * it) and a slave S (a bind made a slave of A's group), an unbindable
 * tmpfs U and a private tmpfs P. After restore a mount made in A shows
 * in B and S, a mount made in S does not show in A, binding U fails
 * with EINVAL and a mount in P shows nowhere else.
 * Needs the ns flavour (a mount namespace of the tree's own).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that shared, slave and unbindable mounts are restored";

#define A "mnt_prop.a"
#define B "mnt_prop.b"
#define S "mnt_prop.s"
#define U "mnt_prop.u"
#define UB "mnt_prop.ub"

static int is_mount_of(const char *path, const char *of)
{
	struct stat a, b;

	if (stat(path, &a) || stat(of, &b))
		return 0;
	return a.st_dev == b.st_dev;
}

int main(int argc, char **argv)
{
	const char *dirs[] = { A, B, S, U, UB };
	unsigned i;

	test_init(argc, argv);

	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (mkdir(dirs[i], 0755) && errno != EEXIST) {
			pr_perror("mkdir %s", dirs[i]);
			return 1;
		}
	if (mount("zdtm_prop_a", A, "tmpfs", 0, NULL) || mkdir(A "/x", 0755) || mkdir(A "/y", 0755) ||
	    mount(NULL, A, NULL, MS_SHARED, NULL) || mount(A, B, NULL, MS_BIND, NULL) ||
	    mount(A, S, NULL, MS_BIND, NULL) || mount(NULL, S, NULL, MS_SLAVE, NULL)) {
		pr_perror("shared and slave mounts");
		return 1;
	}
	if (mount("zdtm_prop_u", U, "tmpfs", 0, NULL) || mount(NULL, U, NULL, MS_UNBINDABLE, NULL)) {
		pr_perror("unbindable mount");
		return 1;
	}

	test_daemon();
	test_waitsig();

	if (!is_mount_of(B, A) || !is_mount_of(S, A)) {
		fail("%s or %s is not a bind of %s", B, S, A);
		return 1;
	}
	if (mount("zdtm_prop_x", A "/x", "tmpfs", 0, NULL)) {
		fail("mount on %s/x", A);
		return 1;
	}
	if (is_mount_of(B "/x", A) || !is_mount_of(B "/x", A "/x")) {
		fail("a mount in %s does not show in its peer %s", A, B);
		return 1;
	}
	if (is_mount_of(S "/x", A) || !is_mount_of(S "/x", A "/x")) {
		fail("a mount in %s does not show in its slave %s", A, S);
		return 1;
	}
	if (mount("zdtm_prop_y", S "/y", "tmpfs", 0, NULL)) {
		fail("mount on %s/y", S);
		return 1;
	}
	if (!is_mount_of(A "/y", A) || !is_mount_of(B "/y", A)) {
		fail("a mount in the slave %s shows in its master's group", S);
		return 1;
	}
	errno = 0;
	if (!mount(U, UB, NULL, MS_BIND, NULL) || errno != EINVAL) {
		fail("binding the unbindable %s did not fail with EINVAL", U);
		return 1;
	}
	if (umount2(S, MNT_DETACH) || umount2(B, MNT_DETACH) || umount2(A, MNT_DETACH) || umount2(U, MNT_DETACH)) {
		fail("umount");
		return 1;
	}
	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (rmdir(dirs[i])) {
			fail("rmdir %s", dirs[i]);
			return 1;
		}
	pass();
	return 0;
}

/*
 * pty_pair: a pseudo-terminal whose master and slave are both in the tree
 * (the master shared with a child) keeps its pts number, termios, window
 * size, packet mode, lock and the data queued in both directions.
 *
 *   m      the master (/dev/ptmx), in packet mode, O_NONBLOCK; the child
 *          holds it too
 *   s      the slave: canonical, no echo, ^B as VINTR, 4800 baud;
 *          window 33x111 (1000x2000 pixels); the pty then locked
 *   input  "hello world\n" and the partial line "partial" queued for s
 *   output "abc\n" written on s, queued for m as "abc\r\n"
 *
 * After SIGTERM: the same pts number, the same settings, the slave reads
 * the whole line and not the partial one until a newline is typed, the
 * master reads the output after the packet-mode byte, the slave belongs to
 * the case's user, new data goes both
 * ways, and the child's master is the same one.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "zdtmtst.h"

const char *test_doc = "Check that a pty pair keeps its number, settings and queued data";

static int failed;

int main(int argc, char **argv)
{
	int m, s, n, idx, idx2, one = 1, v;
	struct termios t;
	struct winsize ws = { .ws_row = 33, .ws_col = 111, .ws_xpixel = 1000, .ws_ypixel = 2000 }, ws2;
	char buf[256], path[64];
	pid_t child;
	struct stat st;

	test_init(argc, argv);

	m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m) || ioctl(m, TIOCGPTN, &idx)) {
		pr_perror("posix_openpt");
		return 1;
	}
	snprintf(path, sizeof(path), "/dev/pts/%d", idx);
	s = open(path, O_RDWR | O_NOCTTY);
	if (s < 0 || tcgetattr(s, &t)) {
		pr_perror("open %s", path);
		return 1;
	}
	t.c_lflag |= ICANON;
	t.c_lflag &= ~(ECHO | ECHOE | ECHOK | ECHONL);
	t.c_cc[VINTR] = 2;
	cfsetispeed(&t, B4800);
	cfsetospeed(&t, B4800);
	if (tcsetattr(s, TCSANOW, &t) || ioctl(m, TIOCSWINSZ, &ws) || ioctl(m, TIOCPKT, &one)) {
		pr_perror("settings");
		return 1;
	}
	if (write(m, "hello world\npartial", 19) != 19 || write(s, "abc\n", 4) != 4) {
		pr_perror("queueing data");
		return 1;
	}
	if (ioctl(m, TIOCSPTLCK, &one) || set_nonblock(m, 1)) {
		pr_perror("lock");
		return 1;
	}
	child = test_fork();
	if (child < 0)
		return 1;
	if (child == 0) {
		/* holds the master; says whether it is still the parent's */
		test_waitsig();
		_exit(ioctl(m, TIOCGPTN, &idx2) || idx2 != idx);
	}

	test_daemon();
	test_waitsig();

	test_check(!ioctl(m, TIOCGPTN, &idx2) && idx2 == idx, "pts number %d, expected %d", idx2, idx);
	test_check(!tcgetattr(s, &t), "tcgetattr");
	test_check((t.c_lflag & ICANON) && !(t.c_lflag & ECHO), "lflag %#x", t.c_lflag);
	test_check(t.c_cc[VINTR] == 2, "VINTR %d", t.c_cc[VINTR]);
	test_check(cfgetospeed(&t) == B4800 && cfgetispeed(&t) == B4800, "speed %d/%d", (int)cfgetispeed(&t),
		   (int)cfgetospeed(&t));
	test_check(!ioctl(s, TIOCGWINSZ, &ws2) && !memcmp(&ws, &ws2, sizeof(ws)), "window %dx%d (%dx%d pixels)",
		   ws2.ws_row, ws2.ws_col, ws2.ws_xpixel, ws2.ws_ypixel);
	v = 0;
	test_check(!ioctl(m, TIOCGPKT, &v) && v == 1, "packet mode %d", v);
	v = 0;
	test_check(!ioctl(m, TIOCGPTLCK, &v) && v == 1, "lock %d", v);
	test_check(fcntl(m, F_GETFL) & O_NONBLOCK, "the master lost O_NONBLOCK");
	test_check(!fstat(s, &st) && st.st_uid == getuid() && st.st_gid == getgid(), "the slave belongs to %d:%d",
		   (int)st.st_uid, (int)st.st_gid);
	test_check(!(fcntl(s, F_GETFL) & O_NONBLOCK), "the slave became O_NONBLOCK");

	n = test_read_ready(s, buf, sizeof(buf));
	test_check(n == 12 && !memcmp(buf, "hello world\n", 12), "slave read %d bytes: %.*s", n, n > 0 ? n : 0, buf);
	n = test_read_ready(s, buf, sizeof(buf));
	test_check(n == 0, "slave read %d bytes before the line was complete: %.*s", n, n > 0 ? n : 0, buf);
	test_check(write(m, "!\n", 2) == 2, "write to master");
	n = test_read_ready(s, buf, sizeof(buf));
	test_check(n == 9 && !memcmp(buf, "partial!\n", 9), "slave read %d bytes: %.*s", n, n > 0 ? n : 0, buf);

	n = test_read_ready(m, buf, sizeof(buf));
	test_check(n == 6 && buf[0] == TIOCPKT_DATA && !memcmp(buf + 1, "abc\r\n", 5),
		   "master read %d bytes: %.*s", n, n > 1 ? n - 1 : 0, buf + 1);
	test_check(write(s, "xyz", 3) == 3, "write to slave");
	n = test_read_ready(m, buf, sizeof(buf));
	test_check(n == 4 && !memcmp(buf + 1, "xyz", 3), "master read %d bytes after restore", n);

	kill(child, SIGTERM);
	test_check(waitpid(child, &v, 0) == child && WIFEXITED(v) && WEXITSTATUS(v) == 0,
		   "the child's master is not the same pty (status %#x)", v);

	if (failed) {
		fail("the pty changed");
		return 1;
	}
	pass();
	return 0;
}

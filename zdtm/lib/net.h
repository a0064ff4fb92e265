/* net.h - network helpers of the zdtm programs. */
#ifndef ZDTM_NET_H
#define ZDTM_NET_H

#include <sys/socket.h>

/*
 * Fills ss with the loopback address of family af (AF_INET: 127.0.0.1,
 * AF_INET6: ::1), port 0 (bind picks one), and returns its length for
 * bind/connect; 0, with ss zeroed, for any other family.
 */
extern socklen_t test_loopback_addr(int af, struct sockaddr_storage *ss);

#endif /* ZDTM_NET_H */

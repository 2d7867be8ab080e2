/*
 * Connections to this host leave from the execution environment's source address.
 *
 * Why a preloaded library: a function's connections must come from its network interface's
 * address (SLUICE_SOURCE_ADDRESS) so that a proxy's security-group rules see which groups it
 * is in. Drivers that connect from C (libpq under psycopg, libmysqlclient, a program the
 * handler starts) never pass through Python's socket module, but every dynamically linked
 * program calls the C library's connect(). Preloaded into the environment's processes
 * (LD_PRELOAD), this library's connect() comes first: for a stream socket that is not bound
 * yet (local address 0.0.0.0 or ::, port 0) connecting to 127.0.0.0/8, or to such an address
 * mapped into IPv6 (::ffff:127.x.y.z), it binds the socket to the source address (port 0,
 * any free port) and then lets the next connect() in line run. Everything else (other
 * addresses, datagram sockets, sockets the program bound itself) goes through untouched.
 *
 * The rules it keeps:
 * - A connection never leaves unbound when it should be bound: if the bind fails, connect()
 *   fails with the bind's errno; if the variable holds no IPv4 address, such connections
 *   fail with EADDRNOTAVAIL. Without the variable (or with it empty) nothing is bound.
 * - The variable is read once, when the library is loaded; connect() then only reads what was
 *   stored and makes system calls (getsockopt, getsockname, bind): no allocation, no lock, so
 *   it is safe from any thread and from a signal handler, as connect() itself is.
 * - errno is left as connect() alone would leave it.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define EXPORTED __attribute__((visibility("default")))

typedef int (*connect_call)(int, const struct sockaddr *, socklen_t);

enum mode { PASS_THROUGH, BIND_SOURCE, REFUSE };

static enum mode mode = PASS_THROUGH;
static struct in_addr source;      /* network byte order */
static connect_call next_connect;  /* set last, after mode and source (see ready()) */

static void load(void)
{
    const char *text = getenv("SLUICE_SOURCE_ADDRESS");
    if (text != NULL && text[0] != '\0')
        mode = inet_pton(AF_INET, text, &source) == 1 ? BIND_SOURCE : REFUSE;
    __atomic_store_n(&next_connect, (connect_call)dlsym(RTLD_NEXT, "connect"), __ATOMIC_RELEASE);
}

__attribute__((constructor)) static void loaded(void)
{
    load();
}

/* The next connect() in line. Only a program calling connect() from another library's
 * constructor, before ours has run, reaches load() from here; every thread that does computes
 * the same values. */
static connect_call ready(void)
{
    connect_call next = __atomic_load_n(&next_connect, __ATOMIC_ACQUIRE);
    if (next == NULL) {
        load();
        next = __atomic_load_n(&next_connect, __ATOMIC_ACQUIRE);
    }
    return next;
}

static int is_this_host(struct in_addr address)
{
    return (ntohl(address.s_addr) >> 24) == 127;
}

/* The family of `address` when it is an address of this host (AF_INET, or AF_INET6 holding
 * an IPv4-mapped one), else 0. The caller's buffer is copied: it need not be aligned. */
static int family_to_this_host(const struct sockaddr *address, socklen_t length)
{
    sa_family_t family;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
    struct in_addr mapped;

    if (address == NULL || length < offsetof(struct sockaddr, sa_family) + sizeof family)
        return 0;
    memcpy(&family, (const char *)address + offsetof(struct sockaddr, sa_family), sizeof family);
    if (family == AF_INET && length >= sizeof in4) {
        memcpy(&in4, address, sizeof in4);
        return is_this_host(in4.sin_addr) ? AF_INET : 0;
    }
    if (family == AF_INET6 && length >= sizeof in6) {
        memcpy(&in6, address, sizeof in6);
        if (!IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr))
            return 0;
        memcpy(&mapped, &in6.sin6_addr.s6_addr[12], sizeof mapped);
        return is_this_host(mapped) ? AF_INET6 : 0;
    }
    return 0;
}

/* Whether `fd` is a stream socket of `family` with no local address or port yet. */
static int unbound_stream(int fd, int family)
{
    int type = 0;
    socklen_t type_length = sizeof type;
    struct sockaddr_storage local;
    socklen_t local_length = sizeof local;

    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_length) != 0 || type != SOCK_STREAM)
        return 0;
    memset(&local, 0, sizeof local);
    if (getsockname(fd, (struct sockaddr *)&local, &local_length) != 0)
        return 0;
    if (local.ss_family != family)
        return 0;
    if (family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)&local;
        return in4->sin_port == 0 && in4->sin_addr.s_addr == htonl(INADDR_ANY);
    }
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&local;
    return in6->sin6_port == 0 && IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr);
}

/* Bind `fd` to the source address, any port: 0, or the errno of the failure. */
static int bind_source(int fd, int family)
{
    if (mode == REFUSE)
        return EADDRNOTAVAIL;
    if (family == AF_INET) {
        struct sockaddr_in in4;
        memset(&in4, 0, sizeof in4);
        in4.sin_family = AF_INET;
        in4.sin_addr = source;
        return bind(fd, (const struct sockaddr *)&in4, sizeof in4) == 0 ? 0 : errno;
    }
    struct sockaddr_in6 in6;
    memset(&in6, 0, sizeof in6);
    in6.sin6_family = AF_INET6;
    in6.sin6_addr.s6_addr[10] = 0xff;
    in6.sin6_addr.s6_addr[11] = 0xff;
    memcpy(&in6.sin6_addr.s6_addr[12], &source, sizeof source);
    return bind(fd, (const struct sockaddr *)&in6, sizeof in6) == 0 ? 0 : errno;
}

EXPORTED int connect(int fd, const struct sockaddr *address, socklen_t length)
{
    connect_call next = ready();
    if (next == NULL) {
        errno = ENOSYS;  /* no C library connect() behind this one */
        return -1;
    }
    if (mode != PASS_THROUGH) {
        int saved = errno;
        int family = family_to_this_host(address, length);
        if (family != 0 && unbound_stream(fd, family)) {
            int failed = bind_source(fd, family);
            if (failed != 0) {
                errno = failed;  /* never connect from an address the rules would misread */
                return -1;
            }
        }
        errno = saved;
    }
    return next(fd, address, length);
}

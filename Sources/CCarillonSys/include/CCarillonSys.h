// Thin C wrappers for Linux calls Swift's Glibc module does not expose
// (recvmmsg/sendmmsg and struct mmsghdr need _GNU_SOURCE) and for socket
// options and control messages that are easier to state in C. No logic here:
// every wrapper is one system call or one struct access.
#ifndef CCARILLON_SYS_H
#define CCARILLON_SYS_H

#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <netinet/in.h>
#include <sys/socket.h>

/// One datagram slot for a batched receive or send.
typedef struct {
    void *buffer;                 ///< payload bytes
    size_t capacity;              ///< room in `buffer` (receive) or length (send)
    size_t length;                ///< bytes received (receive only)
    struct sockaddr_in address;   ///< source (receive) or destination (send)
    int64_t kernel_timestamp_ns;  ///< SO_TIMESTAMPNS receive time (CLOCK_REALTIME), or -1
    int truncated;                ///< nonzero when the datagram was longer than `capacity`
    /* private: */
    char control[64];
} carillon_datagram;

/// recvmmsg(2) over `count` slots, non-blocking. Returns datagrams received,
/// or -1 with errno set (EAGAIN/EWOULDBLOCK when none is waiting).
int carillon_recv_batch(int fd, carillon_datagram *slots, unsigned count);

/// sendmmsg(2) of `count` slots. Returns datagrams sent, or -1 with errno.
int carillon_send_batch(int fd, carillon_datagram *slots, unsigned count);

/// Turns on SO_TIMESTAMPNS (kernel receive timestamps). Returns 0 or -1.
int carillon_enable_rx_timestamps(int fd);

/// prctl(PR_SET_TIMERSLACK, nanos) for the calling thread. Returns 0 or -1.
int carillon_set_timer_slack(unsigned long nanos);

/// clock_gettime(CLOCK_REALTIME) in nanoseconds.
int64_t carillon_realtime_ns(void);

/// ppoll(2) on `fd` for readability for at most `timeout_ns` (0: just check).
/// Returns 1 when readable, 0 on timeout, -1 with errno.
int carillon_wait_readable(int fd, int64_t timeout_ns);

/// ppoll(2) on several descriptors: 1 when any is readable, 0 on timeout, -1 with errno.
int carillon_wait_readable_any(const int *fds, int count, int64_t timeout_ns);

/// As carillon_wait_readable_any, but returns which descriptors are readable:
/// bit i for fds[i] (the first 31), 0 on timeout, -1 on error.
int carillon_wait_readable_mask(const int *fds, int count, int64_t timeout_ns);

/// A non-blocking, close-on-exec eventfd that another thread writes to wake
/// a thread waiting in carillon_wait_readable_any; -1 (errno set) on failure.
int carillon_make_wake_descriptor(void);

/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC (accept4 is a GNU extension
/// Swift's Glibc module does not show): the new descriptor, or -1 (errno set).
int carillon_accept_nonblocking(int fd);

/// Scheduling policy for `carillon_set_thread_scheduling`.
enum { CARILLON_SCHED_NORMAL = 0, CARILLON_SCHED_FIFO = 1, CARILLON_SCHED_RR = 2 };

/// pthread_setschedparam(3) on `thread` with SCHED_OTHER (priority ignored),
/// SCHED_FIFO or SCHED_RR. Returns 0, or the error number (EPERM when not
/// permitted, EINVAL for a priority out of range).
int carillon_set_thread_scheduling(pthread_t thread, int policy, int priority);

/// pthread_setaffinity_np(3): `thread` runs only on CPU `cpu`. Returns 0 or the error number.
int carillon_set_thread_cpu(pthread_t thread, int cpu);

/// pthread_setaffinity_np(3): `thread` may run on every CPU the process's
/// main thread may (undoes an affinity inherited from a pinned creator).
/// Returns 0 or the error number.
int carillon_set_thread_process_cpus(pthread_t thread);

/// How many CPUs the calling thread may run on (sched_getaffinity(2)); -1 on error.
int carillon_thread_cpu_count(void);

/// mlockall(MCL_CURRENT | MCL_FUTURE) when permitted: with CAP_IPC_LOCK or an
/// unlimited RLIMIT_MEMLOCK (otherwise MCL_FUTURE would make later
/// allocations past the limit fail). Returns 0, or the error number (EPERM
/// when not permitted, without trying).
int carillon_lock_memory(void);

#endif

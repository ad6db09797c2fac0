#define _GNU_SOURCE
#include "CCarillonSys.h"

#include <errno.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <time.h>
#include <sched.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>

enum { CARILLON_MAX_BATCH = 64 };

/// Points each mmsghdr at its slot's buffer, address and (for receiving) control space.
static void prepare_messages(carillon_datagram *slots, unsigned count, struct mmsghdr *messages,
                             struct iovec *vectors, int with_control) {
    for (unsigned i = 0; i < count; i++) {
        vectors[i].iov_base = slots[i].buffer;
        vectors[i].iov_len = slots[i].capacity;
        memset(&messages[i], 0, sizeof messages[i]);
        messages[i].msg_hdr.msg_name = &slots[i].address;
        messages[i].msg_hdr.msg_namelen = sizeof slots[i].address;
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
        if (with_control) {
            messages[i].msg_hdr.msg_control = slots[i].control;
            messages[i].msg_hdr.msg_controllen = sizeof slots[i].control;
        }
    }
}

int carillon_recv_batch(int fd, carillon_datagram *slots, unsigned count) {
    if (count > CARILLON_MAX_BATCH) count = CARILLON_MAX_BATCH;
    struct mmsghdr messages[CARILLON_MAX_BATCH];
    struct iovec vectors[CARILLON_MAX_BATCH];
    prepare_messages(slots, count, messages, vectors, 1);
    int received = recvmmsg(fd, messages, count, MSG_DONTWAIT, NULL);
    for (int i = 0; i < received; i++) {
        slots[i].length = messages[i].msg_len;
        slots[i].truncated = (messages[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
        slots[i].kernel_timestamp_ns = -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&messages[i].msg_hdr); c; c = CMSG_NXTHDR(&messages[i].msg_hdr, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(c), sizeof ts);
                slots[i].kernel_timestamp_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
            }
        }
    }
    return received;
}

int carillon_send_batch(int fd, carillon_datagram *slots, unsigned count) {
    if (count > CARILLON_MAX_BATCH) count = CARILLON_MAX_BATCH;
    struct mmsghdr messages[CARILLON_MAX_BATCH];
    struct iovec vectors[CARILLON_MAX_BATCH];
    prepare_messages(slots, count, messages, vectors, 0);
    return sendmmsg(fd, messages, count, MSG_DONTWAIT);
}

int carillon_enable_rx_timestamps(int fd) {
    int on = 1;
    return setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
}

int carillon_set_timer_slack(unsigned long nanos) { return prctl(PR_SET_TIMERSLACK, nanos, 0, 0, 0); }

static int64_t read_clock(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t carillon_realtime_ns(void) { return read_clock(CLOCK_REALTIME); }


int carillon_wait_readable(int fd, int64_t timeout_ns) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (timeout_ns < 0) timeout_ns = 0;
    struct timespec ts = { .tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000 };
    return ppoll(&p, 1, &ts, NULL);
}

int carillon_wait_readable_any(const int *fds, int count, int64_t timeout_ns) {
    int mask = carillon_wait_readable_mask(fds, count, timeout_ns);
    return mask > 0 ? 1 : mask;
}

int carillon_set_thread_scheduling(pthread_t thread, int policy, int priority) {
    struct sched_param param = { .sched_priority = 0 };
    int native = SCHED_OTHER;
    if (policy == CARILLON_SCHED_FIFO) native = SCHED_FIFO;
    if (policy == CARILLON_SCHED_RR) native = SCHED_RR;
    if (native != SCHED_OTHER) param.sched_priority = priority;
    return pthread_setschedparam(thread, native, &param);
}

int carillon_set_thread_cpu(pthread_t thread, int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) return EINVAL;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(thread, sizeof set, &set);
}

int carillon_set_thread_process_cpus(pthread_t thread) {
    cpu_set_t set;
    if (sched_getaffinity(getpid(), sizeof set, &set) != 0) return errno;
    return pthread_setaffinity_np(thread, sizeof set, &set);
}

int carillon_thread_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    return CPU_COUNT(&set);
}

static int has_cap_ipc_lock(void) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capget, &header, data) != 0) return 0;
    return (data[CAP_IPC_LOCK / 32].effective >> (CAP_IPC_LOCK % 32)) & 1;
}

int carillon_lock_memory(void) {
    struct rlimit limit;
    int unlimited = getrlimit(RLIMIT_MEMLOCK, &limit) == 0 && limit.rlim_cur == RLIM_INFINITY;
    if (!unlimited && !has_cap_ipc_lock()) return EPERM;
    return mlockall(MCL_CURRENT | MCL_FUTURE) == 0 ? 0 : errno;
}

int carillon_accept_nonblocking(int fd) {
    return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int carillon_make_wake_descriptor(void) {
    return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

int carillon_wait_readable_mask(const int *fds, int count, int64_t timeout_ns) {
    enum { MAX_FDS = 64 };
    struct pollfd p[MAX_FDS];
    if (count > MAX_FDS) count = MAX_FDS;
    for (int i = 0; i < count; i++) { p[i].fd = fds[i]; p[i].events = POLLIN; p[i].revents = 0; }
    if (timeout_ns < 0) timeout_ns = 0;
    struct timespec ts = { .tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000 };
    int ready = ppoll(p, (nfds_t)count, &ts, NULL);
    if (ready <= 0) return ready;
    int mask = 0;
    for (int i = 0; i < count && i < 31; i++) if (p[i].revents & POLLIN) mask |= 1 << i;
    return mask;
}

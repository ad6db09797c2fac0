// libibverbs (Debian: libibverbs-dev, pkg-config libibverbs), for CarillonVerbs.
//
// Swift calls the verbs directly, the static inline ones (ibv_post_send,
// ibv_post_recv, ibv_poll_cq) included. These wrappers exist only for verbs
// that recent rdma-core defines as macros, which Swift cannot call.
#include <infiniband/verbs.h>

static inline struct ibv_device **carillon_ibv_get_device_list(int *count) { return ibv_get_device_list(count); }

static inline int carillon_ibv_query_port(struct ibv_context *context, uint8_t port, struct ibv_port_attr *attributes) {
    return ibv_query_port(context, port, attributes);
}

static inline struct ibv_mr *carillon_ibv_reg_mr(struct ibv_pd *pd, void *address, size_t length, int access) {
    return ibv_reg_mr(pd, address, length, access);
}

/*
 * gcomp.h: the public C API of libgcomp-client.
 *
 * A trainer process connects to its node's gcompd, registers gradient buckets (ordered
 * lists of float32 layers), writes each step's gradients in place into the bucket's
 * shared memory, submits, waits, and reads the global mean from the bucket's result
 * region. The daemon sums the node's trainers, exchanges with the other nodes and
 * returns the mean over every trainer of the job.
 *
 * Threads: a gcomp_client and its buckets may be used from several threads at once
 * (e.g. one thread submits while another waits in gcomp_wait_any()); a given bucket is
 * submitted and waited for by one thread at a time.
 *
 * Errors: every function that can fail returns a gcomp_status (0 on success, a
 * negative code otherwise). Outputs are written only on success. gcomp_last_error()
 * gives the detailed message of the calling thread's last failure (the daemon's text
 * when it sent one, naming the bucket and the cause). When the daemon goes away it says
 * why (shutdown, a node lost): every call after that fails with its status and text.
 */
#ifndef GCOMP_H
#define GCOMP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the trainer <-> daemon protocol; both sides refuse a different one. */
#define GCOMP_PROTOCOL_VERSION 2

/*
 * The error table: X(NAME, code, message). It makes the enum, gcomp_strerror() and
 * gcomp_err_name(); the daemon sends these codes on the wire.
 */
#define GCOMP_ERRNO_MAP(X)                                                              \
    X(OK, 0, "success")                                                                 \
    X(INVALID, -1, "invalid argument")                                                  \
    X(NOMEM, -2, "out of memory")                                                       \
    X(IO, -3, "I/O error")                                                              \
    X(DAEMON_LOST, -4, "connection to the daemon lost")                                 \
    X(TIMEOUT, -5, "timed out")                                                         \
    X(PROTOCOL, -6, "malformed or unexpected message")                                  \
    X(VERSION, -7, "protocol version or job id mismatch")                               \
    X(DENIED, -8, "permission denied")                                                  \
    X(MISMATCH, -9, "bucket registrations differ")                                      \
    X(NOT_FOUND, -10, "no such bucket or object")                                       \
    X(BUSY, -11, "a step of this bucket is already in flight")                          \
    X(PEER_LOST, -12, "a trainer or node of the job was lost")                          \
    X(NONFINITE, -13, "non-finite gradient")                                            \
    X(SHUTDOWN, -14, "the daemon is shutting down")                                     \
    X(NOT_BUILT, -15, "not built in")                                                   \
    X(STEP, -16, "step numbers differ between trainers or nodes")                       \
    X(LIMIT, -17, "a size or count limit was exceeded")                                 \
    X(STALL, -18, "a node stopped answering")                                           \
    X(INTERNAL, -19, "internal error")

typedef enum gcomp_status {
#define GCOMP_X_ENUM(name, code, msg) GCOMP_##name = (code),
    GCOMP_ERRNO_MAP(GCOMP_X_ENUM)
#undef GCOMP_X_ENUM
} gcomp_status;

/* Static text for a status code ("timed out"); never NULL, "unknown error" if unknown. */
const char *gcomp_strerror(int status);
/* Static name of a status code ("GCOMP_TIMEOUT"); never NULL. */
const char *gcomp_err_name(int status);

typedef enum gcomp_dtype { GCOMP_FLOAT32 = 0 } gcomp_dtype;

/* Limits, checked by client and daemon alike. */
#define GCOMP_MAX_NAME 255      /* bytes in a bucket or layer name */
#define GCOMP_MAX_DIMS 8        /* dimensions of a layer */
#define GCOMP_MAX_LAYERS 4096   /* layers in a bucket (a registration that does not fit in
                                   one message is sent in parts) */

typedef struct gcomp_client gcomp_client;
typedef struct gcomp_bucket gcomp_bucket;

/*
 * How to reach the daemon. A zero-initialised struct (or NULL) means: take everything
 * from the environment the launcher sets (GCOMP_SOCKET, GCOMP_JOB_ID, GCOMP_LOCAL_RANK,
 * GCOMP_CONNECT_TIMEOUT_MS).
 */
typedef struct gcomp_options {
    const char *socket_path; /* NULL: $GCOMP_SOCKET */
    const char *job_id;      /* NULL: $GCOMP_JOB_ID */
    int local_rank;          /* < 0: $GCOMP_LOCAL_RANK; the trainer's slot on its node */
    int connect_timeout_ms;  /* <= 0: $GCOMP_CONNECT_TIMEOUT_MS, else 30000; retried
                                while the daemon's socket is not up yet */
} gcomp_options;

/*
 * Connect to the node's daemon and do the handshake (protocol version, job id, local
 * rank). On success *out owns a new client; free it with gcomp_disconnect().
 * Returns GCOMP_VERSION on a protocol or job id mismatch, GCOMP_TIMEOUT when no daemon
 * answered in time, GCOMP_INVALID for missing settings.
 */
int gcomp_connect(const gcomp_options *opts, gcomp_client **out);

/* Close the connection and unmap every bucket. NULL is a no-op. */
void gcomp_disconnect(gcomp_client *c);

/* Detailed text of the calling thread's last failure on this client ("" if none): each
   thread sees its own. Valid until that thread's next call. With c == NULL: why this
   thread's last gcomp_connect() failed. */
const char *gcomp_last_error(const gcomp_client *c);

/* This trainer's node index and the number of nodes, from the handshake. */
int gcomp_node(const gcomp_client *c);
int gcomp_nodes(const gcomp_client *c);

/* One layer of a bucket: a name, a shape (ndim <= GCOMP_MAX_DIMS) and a dtype. */
typedef struct gcomp_layer {
    const char *name;
    int ndim;
    int64_t shape[GCOMP_MAX_DIMS];
    gcomp_dtype dtype;
} gcomp_layer;

/*
 * Register a bucket: its layers, in order, laid out back to back in its memory. Every
 * trainer of the job registers the same buckets with the same layers; a difference is
 * refused with GCOMP_MISMATCH and a message naming the bucket and the difference.
 * Registering a bucket twice on one client returns GCOMP_INVALID.
 * On success *out is owned by the client (freed by gcomp_disconnect).
 */
int gcomp_bucket_register(gcomp_client *c, const char *name, const gcomp_layer *layers,
                          size_t nlayers, gcomp_bucket **out);

/* Flags of gcomp_bucket_register_flags(). */
enum {
    /* Reduce the bucket exactly, whatever the policy says (parameter broadcasts,
       metrics): every layer is exchanged dense and no policy sees it. */
    GCOMP_BUCKET_EXACT = 1u << 0,
};

/* gcomp_bucket_register() with flags (GCOMP_BUCKET_*); every trainer of the job must
   register the bucket with the same flags. Unknown flags: GCOMP_INVALID. */
int gcomp_bucket_register_flags(gcomp_client *c, const char *name, const gcomp_layer *layers,
                                size_t nlayers, unsigned flags, gcomp_bucket **out);

/*
 * Unregister a bucket: the daemon frees its memory once every trainer of the node has
 * unregistered it, and the name may then be registered again (with other layers too).
 * b is freed (and its regions unmapped) on success and must not be used again.
 * GCOMP_BUSY when a step of it was submitted and not waited for (b stays valid);
 * GCOMP_INVALID for b == NULL.
 */
int gcomp_bucket_unregister(gcomp_bucket *b);

/* Number of float32 elements in the bucket (all layers). */
size_t gcomp_bucket_numel(const gcomp_bucket *b);

/*
 * The bucket's input region: write this step's gradients here, then submit. Do not
 * write it between gcomp_submit() and the end of the matching gcomp_wait().
 */
float *gcomp_bucket_data(gcomp_bucket *b);

/*
 * The bucket's result region, shared by the node's trainers: after gcomp_wait()
 * returns GCOMP_OK it holds the mean over all trainers of the job, and stays valid
 * until this trainer submits the bucket again.
 */
const float *gcomp_bucket_result(const gcomp_bucket *b);

/*
 * Submit the bucket's gradients for `step` (steps of one bucket must increase).
 * Asynchronous: returns once the daemon has the request. GCOMP_BUSY if the previous
 * step of this bucket was not waited for.
 */
int gcomp_submit(gcomp_bucket *b, int64_t step);

/*
 * Wait for the submitted step of the bucket to complete, at most timeout_ms
 * milliseconds (< 0: forever). GCOMP_OK: the result region holds the mean.
 * GCOMP_TIMEOUT: not done yet (wait again, the step is still in flight); any other
 * error ends the step (gcomp_last_error() says why) and the bucket may be submitted
 * again.
 */
int gcomp_wait(gcomp_bucket *b, int timeout_ms);

/*
 * Wait for the next completion of any bucket of the client that is in flight, at most
 * timeout_ms (< 0: forever). On GCOMP_OK or a step error, *done is the bucket whose
 * step ended (as gcomp_wait(*done, ...) would have returned it; the step is over either
 * way). GCOMP_TIMEOUT: nothing completed in time (*done untouched); GCOMP_NOT_FOUND:
 * no bucket is in flight. Completions are returned in the order they arrived.
 */
int gcomp_wait_any(gcomp_client *c, int timeout_ms, gcomp_bucket **done);

/* Hints for adaptive policies; each field counts only if its flag is set in `fields`. */
enum {
    GCOMP_HINT_LR = 1u << 0,
    GCOMP_HINT_SAMPLES = 1u << 1,
    GCOMP_HINT_EPOCH_END = 1u << 2,
};
typedef struct gcomp_hints {
    int64_t step;      /* the step these hints belong to */
    unsigned fields;   /* GCOMP_HINT_* */
    double lr;         /* learning rate used at this step */
    int64_t samples;   /* samples this trainer processed at this step */
    int epoch_end;     /* non-zero: this step ends an epoch */
} gcomp_hints;

/* Send hints to the daemon (asynchronous, no reply). */
int gcomp_hint(gcomp_client *c, const gcomp_hints *h);

/* A policy's batch-size advice (Accordion's batch_low/batch_high). */
typedef struct gcomp_advice {
    int64_t batch_size; /* use this batch size from now on */
    double lr_scale;    /* and scale the learning rate by this */
    int64_t step;       /* the step the advice was decided at */
} gcomp_advice;

/*
 * The latest batch-size advice, which arrives with every completed step. Returns
 * GCOMP_NOT_FOUND when the policy in force gives none.
 */
int gcomp_advice_get(const gcomp_client *c, gcomp_advice *out);

#ifdef __cplusplus
}
#endif
#endif /* GCOMP_H */

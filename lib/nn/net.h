/*
 * The network: a fixed DAG of layers over numbered values (activations),
 * run by explicit forward and backward sweeps, in the spirit of llm.c's
 * gpt2_forward / gpt2_backward rather than an autodiff graph.
 *
 *   value 0        the input image batch (n, C, H, W), plain layout
 *   layer i        reads values in[0] (and in[1] for add), writes value out
 *   last value     the logits (n, K), plain
 *
 * Layers are appended in execution order; the backward sweep walks them in
 * reverse. A value read by several layers (a residual input) receives the sum
 * of their gradients: the first contribution is written straight into the
 * value's gradient, later ones go through a scratch buffer and an add (see
 * net.c: grad_target / grad_commit).
 *
 * Memory (llm.c / ggml gallocr): parameters and their gradients live in two
 * arenas of identical layout, allocated when the net is built; activations,
 * activation gradients, per-layer saved statistics and workspaces come from
 * one arena planned by elle__net_reserve(max_batch). No buffer is allocated
 * after that for batches up to max_batch.
 *
 * An activation some backward reads (elle__layer_ops.bwd_reads), the input
 * and the logits have a buffer of their own; the others (in PreActResNet-18
 * the second convs' and shortcuts' outputs, read only by the residual add)
 * are transient: live in the forward from producer to last consumer, they
 * share slots with transients whose intervals are disjoint, and with the
 * backward's scratch gradients (net.c plan_acts). Gradients share slots
 * planned by liveness (net.c plan_grads, docs/layers.md): value v's gradient
 * lives from the backward of its last consumer (the logits': the loss) to
 * the backward of its producer, value 0's to the end of the sweep, and
 * values with disjoint intervals share memory. So after a
 * backward only values[0].grad is meaningful. With tangents (the tangent
 * passes read every activation and gradient after the sweep) or
 * grad_per_value, each value keeps an activation and a gradient buffer of
 * its own.
 */
#ifndef ELLE_NN_NET_H
#define ELLE_NN_NET_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/arena.h"
#include "core/tensor.h"

typedef struct elle__net elle__net;
typedef struct elle__layer elle__layer;

#define ELLE__NAME_MAX 96

/* ---- state entries (PyTorch state_dict) ------------------------------------ */

enum { ELLE__STATE_PARAM = 0, ELLE__STATE_BUFFER = 1, ELLE__STATE_COUNTER = 2 };

/* How a parameter or buffer starts (PyTorch defaults unless a model says otherwise). */
enum {
    ELLE__INIT_ZEROS = 0,
    ELLE__INIT_ONES = 1,
    ELLE__INIT_UNIFORM = 2, /* U(-a, a) with a = init_scale (kaiming_uniform(a=sqrt 5) = 1/sqrt(fan_in)) */
    ELLE__INIT_NORMAL = 3   /* N(0, init_scale^2) */
};

typedef struct elle__state {
    char name[ELLE__NAME_MAX];
    int kind;
    int ndim;
    int64_t dims[4];
    int64_t numel;
    int init;
    float init_scale;
    size_t offset;  /* bytes into the param arena (PARAM) or the buffer arena (BUFFER) */
    float *data;    /* backend memory; NULL for counters */
    float *grad;    /* backend memory, same offset in the grad arena; PARAM only */
    int64_t counter; /* COUNTER value (host) */
} elle__state;

/* ---- values ------------------------------------------------------------------ */

typedef struct elle__value {
    int64_t c, h, w; /* per-sample shape */
    int layout;      /* backend layout tag */
    float *act;      /* arena, sized for max_batch; shared if no backward reads it (plan_acts) */
    float *grad;     /* arena, same size; shared with values whose gradients are never live
                      * at the same time unless the net has tangents or grad_per_value */
    int grad_written; /* backward bookkeeping: 1 once a gradient was written this sweep */
    int needs_grad;   /* 1 when a gradient must flow into this value */
    /* Tangents (DESIGN §4), only when the net is reserved with tangents:
     * d act/dt and d grad/dt along the input tangent; NULL otherwise. */
    float *tact;
    float *tgrad;
    int tgrad_written; /* tangent backward bookkeeping, as grad_written */
} elle__value;

/* ---- layers -------------------------------------------------------------------- */

/* Which activations a layer's backward reads (elle__layer_ops.bwd_reads): an
 * activation no backward reads lives only through the forward (net.c
 * plan_acts). Declared from what the backward and the backend ops it calls
 * read on every backend; when unsure a layer declares the read. */
enum {
    ELLE__READS_IN0 = 1, /* in[0]'s activation */
    ELLE__READS_IN1 = 2, /* in[1]'s */
    ELLE__READS_OUT = 4  /* the output's */
};

typedef struct elle__layer_ops {
    const char *kind;
    int bwd_reads; /* ELLE__READS_* bits */
    /* Shape inference at build time: check the input values, set the output
     * value's (c, h, w) and layout. */
    int (*infer)(elle__net *net, elle__layer *l);
    /* Take this layer's per-batch buffers (saved statistics, workspaces) for
     * batches up to max_n from the arena (measured, then committed). */
    int (*plan)(elle__net *net, elle__layer *l, elle__arena *arena, int64_t max_n);
    /* Compute the output value from the inputs for a batch of n. */
    int (*forward)(elle__net *net, elle__layer *l, int64_t n);
    /* Given the gradient of the output, write the gradients of the inputs into
     * dx[i] (NULL: not needed) and, when param_grads, accumulate parameter
     * gradients. */
    int (*backward)(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dx[2],
                    int param_grads);
    /* DESIGN §4 tangent passes (forward-mode through forward and backward;
     * docs/second-order.md). Both run after forward and backward of the
     * same batch, whose activations, gradients and workspaces they read.
     * tangent_forward: the output's tangent (tact) from the inputs' tangents
     * (JVP of forward; the forward's routing - ReLU masks, max-pool argmax,
     * batch statistics - is kept). tangent_backward: given the output
     * gradient's tangent (tgrad) and the forward tangents, write the
     * tangents of the input gradients into dxt[i] (NULL: not needed) and,
     * when param_grads, ACCUMULATE the tangents of the parameter gradients
     * into the parameter gradients (the second-order term). NULL in a layer
     * makes every tangent request of the net fail with ELLE_EUNSUPPORTED. */
    int (*tangent_forward)(elle__net *net, elle__layer *l, int64_t n);
    int (*tangent_backward)(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dxt[2],
                            int param_grads);
} elle__layer_ops;

struct elle__layer {
    const elle__layer_ops *ops;
    char name[ELLE__NAME_MAX]; /* PyTorch module path, e.g. "layer1.0.conv1" */
    int in[2];                 /* value indices; in[1] = -1 for unary layers */
    int out;                   /* value index */
    int state[4];              /* entries: weight, bias / gamma, beta, running_mean, running_var */
    int counter;               /* num_batches_tracked entry (batch norm), -1 otherwise */
    union {
        elle__conv_desc conv;
        elle__bn_desc bn;
        elle__pool_desc pool;
        struct {
            int64_t out_features;
            int has_bias;
        } linear;
        struct {
            int64_t c;
            float mean[16];
            float std[16];
        } norm;
    } d;
    /* planned per-layer buffers */
    float *save_mean, *save_var; /* batch norm (c floats each) */
    void *ws;                    /* backend workspace (bn fused relu, max pool) */
    float *consts;               /* layer constants in backend memory (normalisation) */
};

/* ---- the net -------------------------------------------------------------------- */

struct elle__net {
    elle__backend *be;
    int training;

    elle__value *values;
    int n_values, cap_values;
    elle__layer *layers;
    int n_layers, cap_layers;
    elle__state *states;
    int64_t n_states, cap_states;

    elle__arena params;  /* parameters (+ constants) */
    elle__arena grads;   /* parameter gradients, same layout as params */
    elle__arena buffers; /* running statistics */
    size_t param_bytes, buffer_bytes;
    int64_t num_params;

    elle__arena acts;    /* activations, gradients, layer buffers, scratch */
    int64_t max_batch;   /* 0 until reserved */
    int64_t last_n;      /* batch of the last forward (0: none since the last reserve) */
    float *scratch_grad[2]; /* for accumulating a second gradient into a value; backward
                             * only (may share transient activations' memory) */
    float *scratch_tgrad[2]; /* the same for gradient tangents (tangents only) */
    int tangents;   /* sticky: elle__net_reserve also plans the tangent buffers */
    int grad_per_value; /* sticky: one activation and gradient buffer per value, no shared
                         * slots (tests compare the planned slots against it); implied by
                         * tangents */
    int fwd_training; /* mode of the last forward */
    int64_t last_bwd_n; /* batch of the last backward since that forward (0: none) */
    int bwd_xent;   /* 1 when that backward started from the cross-entropy */
    float *loss;    /* (max_batch) per-sample losses */
    float *coef;    /* (max_batch) d objective / d loss_i */
    int32_t *labels; /* (max_batch) */
};

/* Build-time API (models/ *.c) ---------------------------------------------------- */

/* Initialise an empty net whose input is (c, h, w); value 0 is the input. */
int elle__net_init(elle__net *net, elle__backend *be, int64_t c, int64_t h, int64_t w);
void elle__net_release(elle__net *net);

/* Register a state entry; returns its index in *out. Dims as in PyTorch. */
int elle__net_add_state(elle__net *net, const char *name, int kind, int ndim,
                        const int64_t *dims, int init, float init_scale, int *out);

/* Layer constructors: each appends a layer reading value `x` and returns the
 * output value index in *out. `name` is the PyTorch module path (state
 * entries are "<name>.weight", ...). */
int elle__net_conv2d(elle__net *net, const char *name, int x, int64_t oc, int64_t k,
                     int64_t stride, int64_t pad, int bias, int *out);
int elle__net_batchnorm(elle__net *net, const char *name, int x, int fuse_relu, float eps,
                        float momentum, int *out);
int elle__net_relu(elle__net *net, int x, int *out);
int elle__net_add(elle__net *net, int a, int b, int *out);
int elle__net_maxpool(elle__net *net, int x, int64_t k, int64_t stride, int64_t pad, int *out);
int elle__net_avgpool(elle__net *net, int x, int64_t k, int64_t stride, int64_t pad, int *out);
int elle__net_global_avgpool(elle__net *net, int x, int *out);
int elle__net_linear(elle__net *net, const char *name, int x, int64_t out_features, int bias,
                     int *out);
int elle__net_normalize(elle__net *net, int x, const float *mean, const float *std, int *out);

/* Append a layer copied from `proto` (ops, name, in[], descriptors, state
 * ids), run its shape inference and create its output value (*out). Used by
 * the layer constructors. */
int elle__net_append(elle__net *net, const elle__layer *proto, int *out);

/* Allocate parameters and buffers and initialise them from `seed` (each entry
 * draws from its own Philox stream, so adding an entry does not shift the
 * others). Call once after the last layer. */
int elle__net_finalize(elle__net *net, uint64_t seed);

/* Run-time API (model.c) -------------------------------------------------------- */

/* Plan and allocate activations for batches up to max_batch. */
int elle__net_reserve(elle__net *net, int64_t max_batch);

/* Input value tensor for a batch of n (plain); fill its data before forward. */
elle__tensor elle__net_input(elle__net *net, int64_t n);
/* Logits tensor (n, K) after forward. */
elle__tensor elle__net_logits(elle__net *net, int64_t n);
int64_t elle__net_num_classes(const elle__net *net);

int elle__net_forward(elle__net *net, int64_t n);
/* Per-sample cross-entropy of the logits against net->labels into net->loss. */
int elle__net_loss(elle__net *net, int64_t n);
/* Backward from d objective / d logits = coef_i * (softmax - onehot): net->coef
 * and net->labels must be set. Accumulates parameter gradients if
 * param_grads; leaves the input gradient in values[0].grad if input_grad. */
int elle__net_backward(elle__net *net, int64_t n, int param_grads, int input_grad);
/* The same sweep from a given d objective / d logits (n, K plain, backend
 * memory) instead of the cross-entropy's: losses other than CE (DLR,
 * margins, logit differences) backpropagate through this. NULL dlogits is
 * elle__net_backward. */
int elle__net_backward_logits(elle__net *net, int64_t n, const float *dlogits, int param_grads,
                              int input_grad);

/* ---- tangent passes (DESIGN §4, docs/second-order.md) -------------------------
 *
 * Forward-mode differentiation through the forward and the backward sweep
 * (Pearlmutter's R-operator). With an input tangent v in values[0].tact:
 * tangent_forward gives every activation's tangent, and tangent_backward,
 * started from the cross-entropy's, every gradient's; the tangents of the
 * parameter gradients accumulate into the parameter gradients. */

/* Ask for (on = 1) or drop tangent buffers (a tact and a tgrad per value,
 * from the activation arena). Sticky: every later elle__net_reserve honours
 * it; if the net is reserved already it is re-reserved at the same batch
 * (activations are then lost). */
int elle__net_set_tangents(elle__net *net, int on);
/* 1 when the tangent buffers are allocated. */
int elle__net_has_tangents(const elle__net *net);

/* Tangent forward of the last forward's batch n (values[0].tact holds the
 * input tangent). ELLE_ESTATE without tangent buffers, when the last
 * forward was not of n samples or the mode changed since; ELLE_EUNSUPPORTED
 * when a layer or the backend lacks a tangent op. */
int elle__net_tangent_forward(elle__net *net, int64_t n);
/* Tangent backward, after elle__net_tangent_forward and an
 * elle__net_backward (from the cross-entropy) of the same batch. The top
 * seed is the tangent of d objective/d logits = coef_i (softmax - onehot)
 * plus, when gcoef != NULL, gcoef_i (softmax - onehot) itself, so the
 * parameter gradients also receive the ordinary gradient of
 * sum_i gcoef_i loss_i (backend xent_tangent). loss_t (n floats, backend
 * memory, may be NULL) receives d loss_i/dt. param_grads: accumulate the
 * parameter-gradient tangents; input_tangent: leave d(input grad)/dt in
 * values[0].tgrad. ELLE_ESTATE when no cross-entropy backward of n followed
 * the last forward (a backward from given dlogits has no known tangent). */
int elle__net_tangent_backward(elle__net *net, int64_t n, const float *gcoef, float *loss_t,
                               int param_grads, int input_tangent);

/* Helpers for layer implementations. */
elle__tensor elle__net_act(elle__net *net, int value, int64_t n);
elle__tensor elle__net_grad(elle__net *net, int value, int64_t n);
/* Tangent of the activation / of the gradient (tangent buffers only). */
elle__tensor elle__net_tact(elle__net *net, int value, int64_t n);
elle__tensor elle__net_tgrad(elle__net *net, int value, int64_t n);

#endif /* ELLE_NN_NET_H */

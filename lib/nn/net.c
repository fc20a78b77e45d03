/* Network graph: build, plan, forward and backward sweeps (see net.h). */
#include "nn/net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"

static size_t align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

static int grow(void **arr, int64_t *cap, int64_t need, size_t elem)
{
    if (need <= *cap)
        return ELLE_OK;
    int64_t ncap = *cap ? *cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    void *p = realloc(*arr, (size_t)ncap * elem);
    if (!p)
        ELLE_FAIL(ELLE_ENOMEM, "net: out of memory growing a table to %lld entries",
                  (long long)ncap);
    memset((char *)p + (size_t)*cap * elem, 0, (size_t)(ncap - *cap) * elem);
    *arr = p;
    *cap = ncap;
    return ELLE_OK;
}

int elle__net_init(elle__net *net, elle__backend *be, int64_t c, int64_t h, int64_t w)
{
    memset(net, 0, sizeof *net);
    net->be = be;
    net->training = 1;
    int64_t cap = 0;
    ELLE_TRY(grow((void **)&net->values, &cap, 64, sizeof(elle__value)));
    net->cap_values = (int)cap;
    net->n_values = 1;
    net->values[0].c = c;
    net->values[0].h = h;
    net->values[0].w = w;
    net->values[0].layout = ELLE__LAYOUT_PLAIN;
    return ELLE_OK;
}

void elle__net_release(elle__net *net)
{
    if (!net->be)
        return;
    elle__arena_release(&net->params);
    elle__arena_release(&net->grads);
    elle__arena_release(&net->buffers);
    elle__arena_release(&net->acts);
    free(net->values);
    free(net->layers);
    free(net->states);
    memset(net, 0, sizeof *net);
}

int elle__net_add_state(elle__net *net, const char *name, int kind, int ndim,
                        const int64_t *dims, int init, float init_scale, int *out)
{
    ELLE_TRY(grow((void **)&net->states, &net->cap_states, net->n_states + 1,
                  sizeof(elle__state)));
    elle__state *s = &net->states[net->n_states];
    memset(s, 0, sizeof *s);
    if (strlen(name) >= sizeof s->name)
        ELLE_FAIL(ELLE_EINVAL, "net: state name '%s' too long", name);
    strcpy(s->name, name);
    s->kind = kind;
    s->ndim = ndim;
    s->numel = 1;
    for (int i = 0; i < 4; i++) {
        s->dims[i] = i < ndim ? dims[i] : 1;
        s->numel *= s->dims[i];
    }
    s->init = init;
    s->init_scale = init_scale;
    size_t bytes = align64((size_t)s->numel * sizeof(float));
    if (kind == ELLE__STATE_PARAM) {
        s->offset = net->param_bytes;
        net->param_bytes += bytes;
        net->num_params += s->numel;
    } else if (kind == ELLE__STATE_BUFFER) {
        s->offset = net->buffer_bytes;
        net->buffer_bytes += bytes;
    }
    *out = (int)net->n_states++;
    return ELLE_OK;
}

/* Append a value with per-sample shape (c, h, w); returns its index. */
static int add_value(elle__net *net, int64_t c, int64_t h, int64_t w, int layout, int *out)
{
    int64_t cap = net->cap_values;
    ELLE_TRY(grow((void **)&net->values, &cap, net->n_values + 1, sizeof(elle__value)));
    net->cap_values = (int)cap;
    elle__value *v = &net->values[net->n_values];
    v->c = c;
    v->h = h;
    v->w = w;
    v->layout = layout;
    *out = net->n_values++;
    return ELLE_OK;
}

/* Append a layer (copied from proto), run its shape inference, create its output value. */
int elle__net_append(elle__net *net, const elle__layer *proto, int *out)
{
    if (net->params.base)
        ELLE_FAIL(ELLE_ESTATE, "net: layer '%s' added after finalize", proto->name);
    for (int i = 0; i < 2; i++)
        if (proto->in[i] >= net->n_values || (i == 0 && proto->in[i] < 0))
            ELLE_FAIL(ELLE_EINVAL, "net: layer '%s' reads value %d of %d", proto->ops->kind,
                      proto->in[i], net->n_values);
    int64_t cap = net->cap_layers;
    ELLE_TRY(grow((void **)&net->layers, &cap, net->n_layers + 1, sizeof(elle__layer)));
    net->cap_layers = (int)cap;
    elle__layer *l = &net->layers[net->n_layers];
    *l = *proto;
    int v;
    ELLE_TRY(add_value(net, 0, 0, 0, ELLE__LAYOUT_PLAIN, &v));
    l->out = v;
    int rc = l->ops->infer(net, l);
    if (rc < 0) {
        net->n_values--;
        elle__error_prefix("layer '%s' (%s)", l->name[0] ? l->name : l->ops->kind, l->ops->kind);
        return rc;
    }
    net->n_layers++;
    *out = v;
    return ELLE_OK;
}

static void init_values(elle__state *s, uint64_t seed, uint64_t stream, float *host)
{
    switch (s->init) {
    case ELLE__INIT_ONES:
        for (int64_t i = 0; i < s->numel; i++)
            host[i] = 1.0f;
        break;
    case ELLE__INIT_UNIFORM:
        elle__rng_uniform_range(seed, stream << 40, 0, s->numel, -s->init_scale, s->init_scale,
                                host);
        break;
    case ELLE__INIT_NORMAL:
        elle__rng_normal(seed, stream << 40, s->numel, 0.0f, s->init_scale, host);
        break;
    default:
        memset(host, 0, (size_t)s->numel * sizeof(float));
    }
}

int elle__net_finalize(elle__net *net, uint64_t seed)
{
    elle__backend *be = net->be;
    int rc = ELLE_OK;
    float *host = NULL;
    size_t const_bytes = 0;

    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].ops->kind[0] == 'n' && strcmp(net->layers[i].ops->kind, "normalize") == 0)
            const_bytes += align64(4 * (size_t)net->layers[i].d.norm.c * sizeof(float));

    elle__arena_measure(&net->params, be);
    elle__arena_measure(&net->grads, be);
    elle__arena_measure(&net->buffers, be);
    net->params.used = net->param_bytes;
    net->grads.used = net->param_bytes;
    net->buffers.used = net->buffer_bytes + const_bytes;
    ELLE_TRY_GOTO(rc, elle__arena_commit(&net->params));
    ELLE_TRY_GOTO(rc, elle__arena_commit(&net->grads));
    ELLE_TRY_GOTO(rc, elle__arena_commit(&net->buffers));

    int64_t max_numel = 1;
    for (int64_t i = 0; i < net->n_states; i++)
        if (net->states[i].numel > max_numel)
            max_numel = net->states[i].numel;
    host = malloc((size_t)max_numel * sizeof(float));
    if (!host) {
        rc = elle__error_set(ELLE_ENOMEM, "net: out of memory initialising parameters");
        goto cleanup;
    }
    for (int64_t i = 0; i < net->n_states; i++) {
        elle__state *s = &net->states[i];
        if (s->kind == ELLE__STATE_COUNTER)
            continue;
        char *base = s->kind == ELLE__STATE_PARAM ? net->params.base : net->buffers.base;
        s->data = (float *)(base + s->offset);
        if (s->kind == ELLE__STATE_PARAM)
            s->grad = (float *)(net->grads.base + s->offset);
        init_values(s, seed, (uint64_t)i + 1, host);
        ELLE_TRY_GOTO(rc, be->ops->copy_to_device(be, s->data, host,
                                                  (size_t)s->numel * sizeof(float)));
    }

    /* constants of normalisation layers: gamma = 1, beta = 0, mean, var = std^2 */
    char *cbase = net->buffers.base + net->buffer_bytes;
    for (int i = 0; i < net->n_layers; i++) {
        elle__layer *l = &net->layers[i];
        if (strcmp(l->ops->kind, "normalize") != 0)
            continue;
        int64_t c = l->d.norm.c;
        float k[64];
        for (int64_t j = 0; j < c; j++) {
            k[j] = 1.0f;
            k[c + j] = 0.0f;
            k[2 * c + j] = l->d.norm.mean[j];
            k[3 * c + j] = l->d.norm.std[j] * l->d.norm.std[j];
        }
        l->consts = (float *)cbase;
        ELLE_TRY_GOTO(rc, be->ops->copy_to_device(be, cbase, k, 4 * (size_t)c * sizeof(float)));
        cbase += align64(4 * (size_t)c * sizeof(float));
    }

cleanup:
    free(host);
    if (rc < 0) {
        elle__arena_release(&net->params);
        elle__arena_release(&net->grads);
        elle__arena_release(&net->buffers);
    }
    return rc;
}

static elle__tensor value_tensor(elle__net *net, int v, float *data, int64_t n)
{
    const elle__value *x = &net->values[v];
    return elle__tensor_make(data, n, x->c, x->h, x->w, x->layout);
}

elle__tensor elle__net_act(elle__net *net, int value, int64_t n)
{
    return value_tensor(net, value, net->values[value].act, n);
}

elle__tensor elle__net_grad(elle__net *net, int value, int64_t n)
{
    return value_tensor(net, value, net->values[value].grad, n);
}

elle__tensor elle__net_tact(elle__net *net, int value, int64_t n)
{
    return value_tensor(net, value, net->values[value].tact, n);
}

elle__tensor elle__net_tgrad(elle__net *net, int value, int64_t n)
{
    return value_tensor(net, value, net->values[value].tgrad, n);
}

elle__tensor elle__net_input(elle__net *net, int64_t n)
{
    return elle__net_act(net, 0, n);
}

elle__tensor elle__net_logits(elle__net *net, int64_t n)
{
    return elle__net_act(net, net->n_values - 1, n);
}

int64_t elle__net_num_classes(const elle__net *net)
{
    return net->values[net->n_values - 1].c;
}

/*
 * Gradient slots (net.h, docs/layers.md). A value's gradient is live in the
 * backward sweep from the backward of its last consumer (the logits': from
 * the loss, index n_layers) down to the backward of its producer, which
 * reads it; the input's stays live to the end of the sweep (index -1), for
 * the caller. Over layer indices that is the inclusive interval [lo, hi];
 * two values whose intervals are disjoint can share memory. Slots are
 * handed out in backward order (descending hi), a slot being free for v
 * once its last occupant's lo is above v's hi; the smallest free slot that
 * holds v is taken, else the largest free one grows, else a new one opens.
 * The result depends only on the graph and max_n, so the measure and the
 * take pass of plan_all agree.
 */
typedef struct grad_item {
    int v, lo, hi;
    size_t bytes;
} grad_item;

static int grad_item_cmp(const void *pa, const void *pb)
{
    const grad_item *a = pa, *b = pb;
    if (a->hi != b->hi)
        return a->hi > b->hi ? -1 : 1;
    return a->v > b->v ? -1 : a->v < b->v; /* a total order: ties broken by value */
}

/* Hand out slots to items[0 .. count) (modified: sorted), as described above:
 * slot_of[item.v], slot_bytes[0 .. *n_slots) and slot_lo (scratch) have room
 * for count entries (slot_of: for every item's v). */
static void assign_slots(grad_item *items, int count, int *slot_of, size_t *slot_bytes,
                         int *slot_lo, int *n_slots)
{
    qsort(items, (size_t)count, sizeof *items, grad_item_cmp);
    int ns = 0;
    for (int j = 0; j < count; j++) {
        const grad_item *it = &items[j];
        int fit = -1, big = -1;
        for (int s = 0; s < ns; s++) {
            if (slot_lo[s] <= it->hi)
                continue; /* its occupant is still live */
            if (slot_bytes[s] >= it->bytes && (fit < 0 || slot_bytes[s] < slot_bytes[fit]))
                fit = s;
            if (big < 0 || slot_bytes[s] > slot_bytes[big])
                big = s;
        }
        int s = fit;
        if (s < 0) { /* nothing free holds it: grow the largest free slot, or open one */
            s = big >= 0 ? big : ns++;
            slot_bytes[s] = it->bytes;
        }
        slot_lo[s] = it->lo;
        slot_of[it->v] = s;
    }
    *n_slots = ns;
}

/* slot_of[v] and slot_bytes[0 .. *n_slots): arrays of n_values entries. */
static void plan_grad_slots(elle__net *net, int64_t max_n, grad_item *items, int *slot_of,
                            size_t *slot_bytes, int *slot_lo, int *n_slots)
{
    elle__backend *be = net->be;
    int nv = net->n_values;
    for (int v = 0; v < nv; v++) {
        elle__tensor t = value_tensor(net, v, NULL, max_n);
        items[v] = (grad_item){.v = v, .lo = -1, .hi = -1, .bytes = be->ops->tensor_bytes(be, &t)};
    }
    for (int i = 0; i < net->n_layers; i++) {
        const elle__layer *l = &net->layers[i];
        items[l->out].lo = i;
        for (int k = 0; k < 2; k++)
            if (l->in[k] >= 0 && i > items[l->in[k]].hi)
                items[l->in[k]].hi = i;
    }
    items[0].lo = -1;
    items[nv - 1].hi = net->n_layers; /* the logits: written from the loss */
    for (int v = 1; v < nv; v++)
        if (items[v].hi < items[v].lo) /* read by nobody: never written; a slot anyway */
            items[v].hi = items[v].lo;
    assign_slots(items, nv, slot_of, slot_bytes, slot_lo, n_slots);
}

/* Gradient buffers: one per value in tangent mode (the tangent backward reads
 * every gradient after the sweep) or when net->grad_per_value asks for it;
 * otherwise the shared slots of plan_grad_slots. */
static int plan_grads(elle__net *net, elle__arena *a, int64_t max_n)
{
    int nv = net->n_values;
    void *p;
    if (net->tangents || net->grad_per_value) {
        for (int v = 0; v < nv; v++) {
            elle__tensor t = value_tensor(net, v, NULL, max_n);
            ELLE_TRY(elle__arena_take(a, net->be->ops->tensor_bytes(net->be, &t), &p));
            net->values[v].grad = p;
        }
        return ELLE_OK;
    }
    int rc = ELLE_OK, ns = 0;
    grad_item *items = malloc((size_t)nv * sizeof *items);
    int *slot_of = malloc((size_t)nv * sizeof *slot_of);
    int *slot_lo = malloc((size_t)nv * sizeof *slot_lo);
    size_t *slot_bytes = calloc((size_t)nv, sizeof *slot_bytes);
    char **slot_base = malloc((size_t)nv * sizeof *slot_base);
    if (!items || !slot_of || !slot_lo || !slot_bytes || !slot_base) {
        rc = elle__error_set(ELLE_ENOMEM, "net reserve: out of memory planning gradients");
        goto cleanup;
    }
    plan_grad_slots(net, max_n, items, slot_of, slot_bytes, slot_lo, &ns);
    for (int s = 0; s < ns; s++) {
        ELLE_TRY_GOTO(rc, elle__arena_take(a, slot_bytes[s], &p));
        slot_base[s] = p;
    }
    for (int v = 0; v < nv; v++)
        net->values[v].grad = (float *)slot_base[slot_of[v]];
cleanup:
    free(slot_base);
    free(items);
    free(slot_of);
    free(slot_lo);
    free(slot_bytes);
    return rc;
}

/*
 * Activation slots (net.h, docs/layers.md). An activation some backward
 * reads (ops->bwd_reads of its producer or of a consumer), the input and
 * the logits (the caller's, and the loss's) keep a buffer of their own. The
 * others are transient: live in the forward from their producer to their
 * last consumer, layer indices [lo, hi] inclusive (a layer's inputs and
 * output are live at once), and share slots with transient values whose
 * intervals are disjoint. assign_slots plans by descending hi, so the
 * forward interval goes in negated: [-hi, -lo] (producer order, a slot free
 * once its occupant's last consumer precedes the producer). The two
 * backward scratch gradients (max_bytes each, used only in the backward
 * sweep, where no transient activation is read) join as two values live
 * together after the last layer, so they reuse transient slots. With
 * tangents (the tangent passes read every activation after the backward) or
 * grad_per_value, every activation and scratch keeps a buffer of its own.
 */
static int plan_acts(elle__net *net, elle__arena *a, int64_t max_n, size_t max_bytes)
{
    elle__backend *be = net->be;
    int nv = net->n_values, rc = ELLE_OK, ns = 0, count = 0;
    void *p;
    int shared = !net->tangents && !net->grad_per_value;
    int *lo = malloc((size_t)nv * sizeof *lo);
    int *hi = malloc((size_t)nv * sizeof *hi);
    unsigned char *keep = calloc((size_t)nv, 1);
    grad_item *items = malloc((size_t)(nv + 2) * sizeof *items);
    int *slot_of = malloc((size_t)(nv + 2) * sizeof *slot_of);
    int *slot_lo = malloc((size_t)(nv + 2) * sizeof *slot_lo);
    size_t *slot_bytes = calloc((size_t)(nv + 2), sizeof *slot_bytes);
    char **slot_base = malloc((size_t)(nv + 2) * sizeof *slot_base);
    if (!lo || !hi || !keep || !items || !slot_of || !slot_lo || !slot_bytes || !slot_base) {
        rc = elle__error_set(ELLE_ENOMEM, "net reserve: out of memory planning activations");
        goto cleanup;
    }
    for (int v = 0; v < nv; v++)
        lo[v] = hi[v] = -1;
    keep[0] = keep[nv - 1] = 1;
    for (int i = 0; i < net->n_layers; i++) {
        const elle__layer *l = &net->layers[i];
        int reads = l->ops->bwd_reads;
        lo[l->out] = hi[l->out] = i; /* read by nobody: live while written */
        for (int k = 0; k < 2; k++)
            if (l->in[k] >= 0) {
                hi[l->in[k]] = i; /* layers in order: the last consumer wins */
                if (reads & (k == 0 ? ELLE__READS_IN0 : ELLE__READS_IN1))
                    keep[l->in[k]] = 1;
            }
        if (reads & ELLE__READS_OUT)
            keep[l->out] = 1;
    }
    for (int v = 0; v < nv; v++) {
        elle__tensor t = value_tensor(net, v, NULL, max_n);
        size_t bytes = be->ops->tensor_bytes(be, &t);
        if (shared && !keep[v]) {
            items[count++] = (grad_item){.v = v, .lo = -hi[v], .hi = -lo[v], .bytes = bytes};
            continue;
        }
        ELLE_TRY_GOTO(rc, elle__arena_take(a, bytes, &p));
        net->values[v].act = p;
    }
    for (int k = 0; k < 2; k++) {
        if (!shared) {
            ELLE_TRY_GOTO(rc, elle__arena_take(a, max_bytes, &p));
            net->scratch_grad[k] = p;
            continue;
        }
        int after = net->n_layers;
        items[count++] = (grad_item){.v = nv + k, .lo = -after, .hi = -after, .bytes = max_bytes};
    }
    assign_slots(items, count, slot_of, slot_bytes, slot_lo, &ns);
    for (int s = 0; s < ns; s++) {
        ELLE_TRY_GOTO(rc, elle__arena_take(a, slot_bytes[s], &p));
        slot_base[s] = p;
    }
    for (int j = 0; j < count; j++) {
        int v = items[j].v;
        float *base = (float *)slot_base[slot_of[v]];
        if (v < nv)
            net->values[v].act = base;
        else
            net->scratch_grad[v - nv] = base;
    }
cleanup:
    free(lo);
    free(hi);
    free(keep);
    free(items);
    free(slot_of);
    free(slot_lo);
    free(slot_bytes);
    free(slot_base);
    return rc;
}

/* One planning sweep over the activation arena (measure or take). */
static int plan_all(elle__net *net, elle__arena *a, int64_t max_n)
{
    elle__backend *be = net->be;
    size_t max_bytes = 0;
    for (int v = 0; v < net->n_values; v++) {
        elle__tensor t = value_tensor(net, v, NULL, max_n);
        size_t bytes = be->ops->tensor_bytes(be, &t);
        if (bytes > max_bytes)
            max_bytes = bytes;
        void *p;
        net->values[v].tact = net->values[v].tgrad = NULL;
        if (net->tangents) { /* only then: plain training memory is unchanged */
            ELLE_TRY(elle__arena_take(a, bytes, &p));
            net->values[v].tact = p;
            ELLE_TRY(elle__arena_take(a, bytes, &p));
            net->values[v].tgrad = p;
        }
    }
    ELLE_TRY(plan_acts(net, a, max_n, max_bytes));
    ELLE_TRY(plan_grads(net, a, max_n));
    for (int i = 0; i < 2; i++) {
        void *p;
        net->scratch_tgrad[i] = NULL;
        if (net->tangents) {
            ELLE_TRY(elle__arena_take(a, max_bytes, &p));
            net->scratch_tgrad[i] = p;
        }
    }
    void *p;
    ELLE_TRY(elle__arena_take(a, (size_t)max_n * sizeof(float), &p));
    net->loss = p;
    ELLE_TRY(elle__arena_take(a, (size_t)max_n * sizeof(float), &p));
    net->coef = p;
    ELLE_TRY(elle__arena_take(a, (size_t)max_n * sizeof(int32_t), &p));
    net->labels = p;
    for (int i = 0; i < net->n_layers; i++) {
        elle__layer *l = &net->layers[i];
        if (l->ops->plan)
            ELLE_TRY(l->ops->plan(net, l, a, max_n));
    }
    return ELLE_OK;
}

int elle__net_reserve(elle__net *net, int64_t max_batch)
{
    if (max_batch < 1)
        ELLE_FAIL(ELLE_EINVAL, "net reserve: max_batch must be >= 1, got %lld",
                  (long long)max_batch);
    elle__arena_release(&net->acts);
    net->max_batch = 0;
    net->last_n = 0;
    net->last_bwd_n = 0;
    elle__arena_measure(&net->acts, net->be);
    ELLE_TRY(plan_all(net, &net->acts, max_batch));
    ELLE_TRY(elle__arena_commit(&net->acts));
    int rc = plan_all(net, &net->acts, max_batch);
    if (rc < 0) {
        elle__arena_release(&net->acts);
        return rc;
    }
    net->max_batch = max_batch;
    return ELLE_OK;
}

int elle__net_set_tangents(elle__net *net, int on)
{
    on = on != 0;
    if (net->tangents == on)
        return ELLE_OK;
    net->tangents = on;
    if (net->max_batch == 0)
        return ELLE_OK;
    int rc = elle__net_reserve(net, net->max_batch);
    if (rc < 0) /* the arena is gone either way; ask again for the old plan */
        net->tangents = !on;
    return rc;
}

int elle__net_has_tangents(const elle__net *net)
{
    return net->max_batch > 0 && net->values[0].tact != NULL;
}

int elle__net_forward(elle__net *net, int64_t n)
{
    net->last_n = 0; /* until the forward completes */
    net->last_bwd_n = 0;
    net->fwd_training = net->training;
    for (int i = 0; i < net->n_layers; i++) {
        elle__layer *l = &net->layers[i];
        int rc = l->ops->forward(net, l, n);
        if (rc < 0) {
            elle__error_prefix("forward of layer '%s' (%s)", l->name[0] ? l->name : l->ops->kind,
                               l->ops->kind);
            return rc;
        }
    }
    net->last_n = n;
    return ELLE_OK;
}

int elle__net_loss(elle__net *net, int64_t n)
{
    elle__tensor z = elle__net_logits(net, n);
    return net->be->ops->xent_fwd(net->be, &z, net->labels, net->loss);
}

int elle__net_backward(elle__net *net, int64_t n, int param_grads, int input_grad)
{
    return elle__net_backward_logits(net, n, NULL, param_grads, input_grad);
}

int elle__net_backward_logits(elle__net *net, int64_t n, const float *dlogits, int param_grads,
                              int input_grad)
{
    elle__backend *be = net->be;
    for (int v = 0; v < net->n_values; v++)
        net->values[v].grad_written = 0;
    net->last_bwd_n = 0; /* until this backward completes */

    int last = net->n_values - 1;
    elle__tensor z = elle__net_logits(net, n);
    elle__tensor dz = elle__net_grad(net, last, n);
    if (dlogits)
        ELLE_TRY(be->ops->copy(be, dz.data, dlogits,
                               (size_t)elle__tensor_numel(&dz) * sizeof(float)));
    else
        ELLE_TRY(be->ops->xent_bwd(be, &z, net->labels, net->coef, &dz));
    net->values[last].grad_written = 1;

    for (int i = net->n_layers - 1; i >= 0; i--) {
        elle__layer *l = &net->layers[i];
        if (!net->values[l->out].grad_written)
            continue; /* output feeds nothing that reaches the loss */
        elle__tensor targets[2];
        elle__tensor *dx[2] = {NULL, NULL};
        int via_scratch[2] = {0, 0};
        for (int k = 0; k < 2; k++) {
            int v = l->in[k];
            if (v < 0 || (v == 0 && !input_grad))
                continue;
            if (net->values[v].grad_written) {
                targets[k] = value_tensor(net, v, net->scratch_grad[k], n);
                via_scratch[k] = 1;
            } else {
                targets[k] = elle__net_grad(net, v, n);
            }
            dx[k] = &targets[k];
        }
        int rc = l->ops->backward(net, l, n, dx, param_grads);
        if (rc < 0) {
            elle__error_prefix("backward of layer '%s' (%s)", l->name[0] ? l->name : l->ops->kind,
                               l->ops->kind);
            return rc;
        }
        for (int k = 0; k < 2; k++) {
            if (!dx[k])
                continue;
            int v = l->in[k];
            if (via_scratch[k]) {
                elle__tensor g = elle__net_grad(net, v, n);
                ELLE_TRY(be->ops->add(be, &g, dx[k], &g));
            }
            net->values[v].grad_written = 1;
        }
    }
    if (net->last_n == n) { /* what the tangent backward relies on */
        net->last_bwd_n = n;
        net->bwd_xent = dlogits == NULL;
    }
    return ELLE_OK;
}

/* ---- tangent passes ----------------------------------------------------------- */

static const char *layer_label(const elle__layer *l)
{
    return l->name[0] ? l->name : l->ops->kind;
}

/* Tangent buffers present, every layer with both tangent slots, the backend
 * with its cross-entropy tangent. */
static int tangent_check(elle__net *net, const char *fn)
{
    if (!elle__net_has_tangents(net))
        ELLE_FAIL(ELLE_ESTATE, "%s: the net has no tangent buffers (reserve it for second-order "
                               "use first)", fn);
    for (int i = 0; i < net->n_layers; i++) {
        const elle__layer *l = &net->layers[i];
        if (!l->ops->tangent_forward || !l->ops->tangent_backward)
            ELLE_FAIL(ELLE_EUNSUPPORTED, "%s: layer '%s' (%s) has no tangent passes", fn,
                      layer_label(l), l->ops->kind);
    }
    if (!net->be->ops->xent_tangent)
        ELLE_FAIL(ELLE_EUNSUPPORTED, "%s: the %s backend has no xent_tangent op", fn,
                  net->be->ops->name);
    return ELLE_OK;
}

int elle__net_tangent_forward(elle__net *net, int64_t n)
{
    ELLE_TRY(tangent_check(net, "tangent forward"));
    if (net->last_n != n)
        ELLE_FAIL(ELLE_ESTATE, "tangent forward: the last forward was of %lld samples, not %lld",
                  (long long)net->last_n, (long long)n);
    if (net->fwd_training != net->training)
        ELLE_FAIL(ELLE_ESTATE, "tangent forward: the mode changed since the forward (training "
                               "%d then, %d now)", net->fwd_training, net->training);
    for (int i = 0; i < net->n_layers; i++) {
        elle__layer *l = &net->layers[i];
        int rc = l->ops->tangent_forward(net, l, n);
        if (rc < 0) {
            elle__error_prefix("tangent forward of layer '%s' (%s)", layer_label(l),
                               l->ops->kind);
            return rc;
        }
    }
    return ELLE_OK;
}

int elle__net_tangent_backward(elle__net *net, int64_t n, const float *gcoef, float *loss_t,
                               int param_grads, int input_tangent)
{
    elle__backend *be = net->be;
    ELLE_TRY(tangent_check(net, "tangent backward"));
    if (net->last_n != n || net->last_bwd_n != n)
        ELLE_FAIL(ELLE_ESTATE, "tangent backward: needs a forward and a backward of %lld samples "
                               "(last forward: %lld, backward since: %lld)",
                  (long long)n, (long long)net->last_n, (long long)net->last_bwd_n);
    if (!net->bwd_xent)
        ELLE_FAIL(ELLE_ESTATE, "tangent backward: the last backward started from given logit "
                               "gradients, whose tangent is unknown; run it from the "
                               "cross-entropy");
    if (net->fwd_training != net->training)
        ELLE_FAIL(ELLE_ESTATE, "tangent backward: the mode changed since the forward");
    for (int v = 0; v < net->n_values; v++)
        net->values[v].tgrad_written = 0;

    int last = net->n_values - 1;
    elle__tensor z = elle__net_logits(net, n);
    elle__tensor zt = elle__net_tact(net, last, n);
    elle__tensor dzt = elle__net_tgrad(net, last, n);
    ELLE_TRY(be->ops->xent_tangent(be, &z, net->labels, net->coef, gcoef, &zt, &dzt, loss_t));
    net->values[last].tgrad_written = 1;

    for (int i = net->n_layers - 1; i >= 0; i--) {
        elle__layer *l = &net->layers[i];
        if (!net->values[l->out].tgrad_written)
            continue; /* output feeds nothing that reaches the loss */
        elle__tensor targets[2];
        elle__tensor *dxt[2] = {NULL, NULL};
        int via_scratch[2] = {0, 0};
        for (int k = 0; k < 2; k++) {
            int v = l->in[k];
            if (v < 0 || (v == 0 && !input_tangent))
                continue;
            if (net->values[v].tgrad_written) {
                targets[k] = value_tensor(net, v, net->scratch_tgrad[k], n);
                via_scratch[k] = 1;
            } else {
                targets[k] = elle__net_tgrad(net, v, n);
            }
            dxt[k] = &targets[k];
        }
        int rc = l->ops->tangent_backward(net, l, n, dxt, param_grads);
        if (rc < 0) {
            elle__error_prefix("tangent backward of layer '%s' (%s)", layer_label(l),
                               l->ops->kind);
            return rc;
        }
        for (int k = 0; k < 2; k++) {
            if (!dxt[k])
                continue;
            int v = l->in[k];
            if (via_scratch[k]) {
                elle__tensor g = elle__net_tgrad(net, v, n);
                ELLE_TRY(be->ops->add(be, &g, dxt[k], &g));
            }
            net->values[v].tgrad_written = 1;
        }
    }
    return ELLE_OK;
}

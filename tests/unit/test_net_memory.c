/*
 * Liveness-planned gradient buffers (lib/nn/net.c plan_grads, docs/layers.md):
 * activation gradients share arena slots when their live intervals in the
 * backward sweep are disjoint. A wrong plan (two gradients live at once in
 * one slot) corrupts a gradient, so the losses, input gradients and
 * parameter gradients of the planned net must be BIT-identical to those of
 * the same net with one buffer per value (net->grad_per_value), on both
 * backends, in both modes, for every architecture; and the plan must save
 * memory. The same for activations (net.c plan_acts): an activation no
 * backward reads shares a slot with others whose forward intervals are
 * disjoint; grad_per_value and tangents switch that off too.
 */
#include <stdint.h>
#include <string.h>

#include "elle_test.h"
#include "nn/model_internal.h"

#define TEST_RAND_SEED 0x9E3779B97F4A7C15ull
#include "test_rand.h"

typedef struct spec {
    const char *arch;
    int width, depth, classes, c, h, w;
} spec;

static const spec specs[] = {
    {"small_cnn", 4, 2, 5, 1, 12, 12},
    {"preact_resnet18", 4, 0, 4, 3, 16, 16},
    {"wide_resnet", 1, 10, 4, 3, 8, 8},
};

static elle_model *make_model(elle_context *ctx, const spec *s, int64_t max_batch)
{
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    assert_elle_ok(elle_model_config_create(&cfg, s->arch));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, s->width));
    if (s->depth)
        assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_DEPTH, s->depth));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_NUM_CLASSES, s->classes));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_CHANNELS, s->c));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, s->h));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, s->w));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, 7));
    assert_elle_ok(elle_model_create(&m, ctx, cfg));
    elle_model_config_free(cfg);
    assert_elle_ok(elle_model_reserve(m, max_batch));
    return m;
}

/* Distinct gradient pointers among the values. */
static int distinct_grads(const elle__net *net)
{
    int count = 0;
    for (int v = 0; v < net->n_values; v++) {
        int seen = 0;
        for (int u = 0; u < v && !seen; u++)
            seen = net->values[u].grad == net->values[v].grad;
        count += !seen;
    }
    return count;
}

/* Distinct activation pointers among the values. */
static int distinct_acts(const elle__net *net)
{
    int count = 0;
    for (int v = 0; v < net->n_values; v++) {
        int seen = 0;
        for (int u = 0; u < v && !seen; u++)
            seen = net->values[u].act == net->values[v].act;
        count += !seen;
    }
    return count;
}

/* Bytes of activation memory: every value's own, and the union of their
 * ranges (shared slots counted once). */
static void act_bytes(elle__net *net, int64_t n, size_t *each, size_t *unioned)
{
    int nv = net->n_values;
    size_t *bytes = malloc((size_t)nv * sizeof *bytes);
    *each = *unioned = 0;
    for (int v = 0; v < nv; v++) {
        elle__tensor t = elle__net_act(net, v, n);
        bytes[v] = net->be->ops->tensor_bytes(net->be, &t);
        *each += bytes[v];
    }
    for (int v = 0; v < nv; v++) { /* a slot starts where its values do: count the largest */
        int first = 1;
        size_t most = bytes[v];
        for (int u = 0; u < nv; u++)
            if (net->values[u].act == net->values[v].act) {
                first = first && u >= v;
                most = bytes[u] > most ? bytes[u] : most;
            }
        if (first)
            *unioned += most;
    }
    free(bytes);
}

/* Everything a backward produces, flattened: losses, input gradient, then
 * every parameter gradient and every buffer (running statistics). */
static float *outputs(elle_model *m, const float *x, const int32_t *y, int64_t n, size_t *len)
{
    int64_t c, h, w;
    assert_elle_ok(elle_model_input_shape(m, &c, &h, &w));
    size_t total = (size_t)n + (size_t)(n * c * h * w);
    int64_t ns = elle_model_state_count(m);
    for (int64_t i = 0; i < ns; i++) {
        elle_state_kind kind;
        int64_t d[4];
        assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, d));
        if (kind != ELLE_STATE_COUNTER)
            total += (size_t)(d[0] * d[1] * d[2] * d[3]);
    }
    float *out = malloc(total * sizeof *out);
    assert_non_null(out);
    /* two backwards: the second accumulates into the first's parameter gradients */
    assert_elle_ok(elle_model_zero_grad(m));
    assert_elle_ok(elle_model_backward(m, x, y, n, out, out + n));
    assert_elle_ok(elle_model_backward(m, x + 1, y, n, out, out + n));
    size_t at = (size_t)n + (size_t)(n * c * h * w);
    for (int64_t i = 0; i < ns; i++) {
        elle_state_kind kind;
        int64_t d[4];
        assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, d));
        if (kind == ELLE_STATE_PARAMETER)
            assert_elle_ok(elle_model_grad_get(m, i, out + at));
        else if (kind == ELLE_STATE_BUFFER)
            assert_elle_ok(elle_model_state_get(m, i, out + at));
        else
            continue;
        at += (size_t)(d[0] * d[1] * d[2] * d[3]);
    }
    assert_true(at == total);
    *len = total;
    return out;
}

static void check_identical(elle_backend backend, const spec *s)
{
    const int64_t max_n = 4, n = 3; /* a batch below the reserved one, too */
    elle_context *ctx = NULL;
    assert_elle_ok(elle_context_create(&ctx, backend, 0));
    elle_model *planned = make_model(ctx, s, max_n);
    elle_model *plain = make_model(ctx, s, max_n);
    elle_model *second = make_model(ctx, s, max_n);
    elle__model_net(plain)->grad_per_value = 1;
    assert_elle_ok(elle_model_reserve(plain, max_n));
    assert_elle_ok(elle__model_set_second_order(second, 1)); /* tangent buffers: no sharing */

    /* the plan really shares, and the references really do not */
    const elle__net *pn = elle__model_net(planned);
    assert_true(distinct_grads(pn) < pn->n_values);
    assert_int_equal(distinct_grads(elle__model_net(plain)), elle__model_net(plain)->n_values);
    assert_int_equal(distinct_grads(elle__model_net(second)), elle__model_net(second)->n_values);
    assert_true(elle_model_memory_size(planned) < elle_model_memory_size(plain));
    assert_int_equal(distinct_acts(elle__model_net(plain)), elle__model_net(plain)->n_values);
    assert_int_equal(distinct_acts(elle__model_net(second)), elle__model_net(second)->n_values);
    if (strcmp(s->arch, "small_cnn") != 0) /* its one transient activation has no partner */
        assert_true(distinct_acts(pn) < pn->n_values);

    int64_t c, h, w;
    assert_elle_ok(elle_model_input_shape(planned, &c, &h, &w));
    int64_t count = n * c * h * w + 1;
    float *x = malloc((size_t)count * sizeof *x);
    int32_t y[4];
    for (int64_t i = 0; i < count; i++)
        x[i] = (float)frand();
    for (int64_t i = 0; i < n; i++)
        y[i] = (int32_t)((i * 3 + 1) % s->classes);

    for (int training = 1; training >= 0; training--) {
        size_t la, lb, lc;
        assert_elle_ok(elle_model_set_training(planned, training));
        assert_elle_ok(elle_model_set_training(plain, training));
        assert_elle_ok(elle_model_set_training(second, training));
        float *a = outputs(planned, x, y, n, &la);
        float *b = outputs(plain, x, y, n, &lb);
        float *d = outputs(second, x, y, n, &lc);
        assert_true(la == lb && la == lc);
        for (size_t i = 0; i < la; i++) /* a NaN in both would pass memcmp; not here */
            assert_true(a[i] == a[i]);
        if (memcmp(a, b, la * sizeof *a) != 0 || memcmp(a, d, la * sizeof *a) != 0)
            fail_msg("%s (backend %d, training=%d): planned gradients differ from one buffer "
                     "per value", s->arch, (int)backend, training);
        free(a);
        free(b);
        free(d);
    }

    /* dropping the tangent buffers brings the shared slots back */
    assert_elle_ok(elle__model_set_second_order(second, 0));
    assert_int_equal(distinct_grads(elle__model_net(second)), distinct_grads(pn));
    assert_int_equal(distinct_acts(elle__model_net(second)), distinct_acts(pn));
    assert_true(elle_model_memory_size(second) == elle_model_memory_size(planned));

    free(x);
    elle_model_free(planned);
    elle_model_free(plain);
    elle_model_free(second);
    elle_context_free(ctx);
}

static void test_identical_ref(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        check_identical(ELLE_BACKEND_REFERENCE, &specs[i]);
}

static void test_identical_cpu(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        check_identical(ELLE_BACKEND_CPU, &specs[i]);
}

/*
 * The plan against the liveness rule, recomputed here from the graph: two
 * values whose gradient byte ranges overlap must not be live at the same
 * backward step. Live: from the backward of the highest-index layer reading
 * the value (the logits: from the loss) down to the backward of the layer
 * writing it (the input: to the end of the sweep).
 */
static void test_overlaps_are_disjoint_in_time(void **state)
{
    (void)state;
    elle_context *ctx = NULL;
    assert_elle_ok(elle_context_create(&ctx, ELLE_BACKEND_CPU, 0));
    for (size_t si = 0; si < sizeof specs / sizeof specs[0]; si++) {
        elle_model *m = make_model(ctx, &specs[si], 5);
        elle__net *net = elle__model_net(m);
        int nv = net->n_values;
        int *lo = malloc((size_t)nv * sizeof *lo), *hi = malloc((size_t)nv * sizeof *hi);
        for (int v = 0; v < nv; v++)
            lo[v] = hi[v] = -1;
        for (int i = 0; i < net->n_layers; i++) {
            const elle__layer *l = &net->layers[i];
            lo[l->out] = i;
            for (int k = 0; k < 2; k++)
                if (l->in[k] >= 0)
                    hi[l->in[k]] = i; /* layers in order: the last one wins */
        }
        hi[nv - 1] = net->n_layers;
        for (int u = 0; u < nv; u++)
            for (int v = u + 1; v < nv; v++) {
                elle__tensor tu = elle__net_grad(net, u, 5), tv = elle__net_grad(net, v, 5);
                const char *bu = (const char *)tu.data, *bv = (const char *)tv.data;
                size_t su = net->be->ops->tensor_bytes(net->be, &tu);
                size_t sv = net->be->ops->tensor_bytes(net->be, &tv);
                if (bu + su <= bv || bv + sv <= bu)
                    continue; /* disjoint memory */
                if (hi[u] < 0 || hi[v] < 0)
                    continue; /* a value nobody reads never receives a gradient */
                int disjoint = hi[u] < lo[v] || hi[v] < lo[u];
                if (!disjoint)
                    fail_msg("%s: values %d [%d,%d] and %d [%d,%d] share gradient memory",
                             specs[si].arch, u, lo[u], hi[u], v, lo[v], hi[v]);
            }
        free(lo);
        free(hi);
        elle_model_free(m);
    }
    elle_context_free(ctx);
}

/*
 * The activation plan against the rule, recomputed here: which activations
 * a backward reads comes from this table (what each layer's backward hands
 * the backend), not from the layers' declarations. Two values whose
 * activation bytes overlap must both be transient (neither the input nor
 * the logits, neither read by any backward) and never live at the same
 * time in the forward: live from the producing layer to the last reading
 * layer, inclusive.
 */
static int test_bwd_reads(const elle__layer *l, int which) /* which: 0, 1 inputs, 2 output */
{
    const char *k = l->ops->kind;
    if (strcmp(k, "conv2d") == 0 || strcmp(k, "linear") == 0)
        return which == 0; /* x, for the weight gradient */
    if (strcmp(k, "batchnorm") == 0 || strcmp(k, "normalize") == 0)
        return which != 1; /* x and y go to bn_bwd */
    if (strcmp(k, "relu") == 0)
        return which == 2; /* the mask y > 0 */
    if (strcmp(k, "add") == 0 || strcmp(k, "pool") == 0)
        return 0; /* dy passed through, or routed by the pool workspace */
    fail_msg("unknown layer kind %s: add it to the table", k);
    return 1;
}

static void test_act_overlaps_are_disjoint_in_time(void **state)
{
    (void)state;
    for (int backend = 0; backend < 2; backend++) {
        elle_context *ctx = NULL;
        assert_elle_ok(elle_context_create(&ctx, backend ? ELLE_BACKEND_CPU
                                                         : ELLE_BACKEND_REFERENCE, 0));
        for (size_t si = 0; si < sizeof specs / sizeof specs[0]; si++) {
            elle_model *m = make_model(ctx, &specs[si], 5);
            elle__net *net = elle__model_net(m);
            int nv = net->n_values, shared = 0;
            int *lo = malloc((size_t)nv * sizeof *lo), *hi = malloc((size_t)nv * sizeof *hi);
            int *read = calloc((size_t)nv, sizeof *read);
            for (int v = 0; v < nv; v++)
                lo[v] = hi[v] = -1;
            read[0] = read[nv - 1] = 1; /* the caller's input, the loss's logits */
            for (int i = 0; i < net->n_layers; i++) {
                const elle__layer *l = &net->layers[i];
                lo[l->out] = hi[l->out] = i;
                read[l->out] |= test_bwd_reads(l, 2);
                for (int k = 0; k < 2; k++)
                    if (l->in[k] >= 0) {
                        hi[l->in[k]] = i;
                        read[l->in[k]] |= test_bwd_reads(l, k);
                    }
            }
            for (int u = 0; u < nv; u++)
                for (int v = u + 1; v < nv; v++) {
                    elle__tensor tu = elle__net_act(net, u, 5), tv = elle__net_act(net, v, 5);
                    const char *bu = (const char *)tu.data, *bv = (const char *)tv.data;
                    size_t su = net->be->ops->tensor_bytes(net->be, &tu);
                    size_t sv = net->be->ops->tensor_bytes(net->be, &tv);
                    if (bu + su <= bv || bv + sv <= bu)
                        continue; /* disjoint memory */
                    shared++;
                    if (read[u] || read[v])
                        fail_msg("%s: value %d or %d shares activation memory but a backward "
                                 "reads it", specs[si].arch, u, v);
                    if (!(hi[u] < lo[v] || hi[v] < lo[u]))
                        fail_msg("%s: values %d [%d,%d] and %d [%d,%d] share activation memory",
                                 specs[si].arch, u, lo[u], hi[u], v, lo[v], hi[v]);
                }
            /* the backward's scratch gradients may lie only on transient activations
             * (dead in the backward), never on each other or on a gradient */
            size_t ss = 0; /* each is as large as the largest value */
            for (int v = 0; v < nv; v++) {
                elle__tensor t = elle__net_act(net, v, 5);
                size_t b = net->be->ops->tensor_bytes(net->be, &t);
                ss = b > ss ? b : ss;
            }
            const char *sc[2] = {(const char *)net->scratch_grad[0],
                                 (const char *)net->scratch_grad[1]};
            assert_true(sc[0] + ss <= sc[1] || sc[1] + ss <= sc[0]);
            for (int k = 0; k < 2; k++) {
                const char *sb = sc[k];
                for (int v = 0; v < nv; v++) {
                    elle__tensor ta = elle__net_act(net, v, 5), tg = elle__net_grad(net, v, 5);
                    size_t sv = net->be->ops->tensor_bytes(net->be, &ta);
                    const char *ba = (const char *)ta.data, *bg = (const char *)tg.data;
                    assert_true(sb + ss <= bg || bg + sv <= sb);
                    if (!(sb + ss <= ba || ba + sv <= sb) && read[v])
                        fail_msg("%s: a scratch gradient overlaps value %d's activation, which "
                                 "a backward reads", specs[si].arch, v);
                }
            }
            if (strcmp(specs[si].arch, "small_cnn") != 0)
                assert_true(shared > 0); /* the check above was not vacuous */
            free(lo);
            free(hi);
            free(read);
            elle_model_free(m);
        }
        elle_context_free(ctx);
    }
}

/* PreActResNet-18 as trained (width 64, CIFAR shape): the plan saves memory. */
static void test_prn18_memory_drops(void **state)
{
    (void)state;
    elle_context *ctx = NULL;
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    assert_elle_ok(elle_context_create(&ctx, ELLE_BACKEND_CPU, 0));
    assert_elle_ok(elle_model_config_create(&cfg, "preact_resnet18"));
    assert_elle_ok(elle_model_create(&m, ctx, cfg));
    elle_model_config_free(cfg);
    const int64_t batches[] = {1, 8};
    for (int i = 0; i < 2; i++) {
        /* the planned size first, then the unplanned, without allocating both at once */
        elle__model_net(m)->grad_per_value = 0;
        assert_elle_ok(elle_model_reserve(m, batches[i]));
        size_t planned = elle_model_memory_size(m);
        size_t each, unioned;
        act_bytes(elle__model_net(m), batches[i], &each, &unioned);
        print_message("preact_resnet18 reserved for %lld: activations %.1f MiB in slots, "
                      "%.1f MiB one buffer each\n", (long long)batches[i],
                      (double)unioned / 1048576.0, (double)each / 1048576.0);
        /* the second convs and the shortcuts feed only the residual adds: 11 of
         * the 40-odd activations, their memory mostly shared */
        assert_true(each - unioned > each / 10);
        elle__model_net(m)->grad_per_value = 1;
        assert_elle_ok(elle_model_reserve(m, batches[i]));
        size_t plain = elle_model_memory_size(m);
        print_message("preact_resnet18 reserved for %lld: %.1f MiB planned, %.1f MiB with one "
                      "gradient buffer per value\n",
                      (long long)batches[i], (double)planned / 1048576.0,
                      (double)plain / 1048576.0);
        /* activations stay; of the gradients only a few slots remain */
        assert_true(planned < plain);
        assert_true(plain - planned > (plain - elle__model_net(m)->param_bytes * 2) / 4);
        assert_true(plain - planned > each - unioned); /* gradients and activations both */
    }
    elle_model_free(m);
    elle_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overlaps_are_disjoint_in_time),
        cmocka_unit_test(test_act_overlaps_are_disjoint_in_time),
        cmocka_unit_test(test_identical_ref),
        cmocka_unit_test(test_identical_cpu),
        cmocka_unit_test(test_prn18_memory_drops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

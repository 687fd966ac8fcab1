/* The backend contract seen from outside, for whichever backend $NAC_TEST_BACKEND names:
 * an op slot a backend leaves NULL answers "op X is not supported by backend Y" through its
 * wrapper (never a crash), and unknown backends are refused by name. */
#include "tests/testutil.h"

/* A partial backend: a copy of the backend's table, renamed, in which the test empties some
 * op slots, swapped in for a few calls. It is what a new backend that lacks those ops looks
 * like to its callers; the real table is put back afterwards. */
typedef struct partial_backend {
    nac_backend_i iface;
    const nac_backend_i *saved;
} partial_backend;

static void partial_install(partial_backend *s, nac_backend_t *be, const char *name) {
    s->saved = be->iface;
    s->iface = *be->iface;
    s->iface.name = name;
    be->iface = &s->iface;
}

static void partial_remove(partial_backend *s, nac_backend_t *be) { be->iface = s->saved; }

#define EXPECT_UNSUPPORTED(expr, msg)                                                       \
    do {                                                                                    \
        nac_status s_ = (expr);                                                             \
        assert_int_equal(s_, NAC_ERR_BACKEND);                                              \
        if (!strstr(nac_last_error(), msg))                                                 \
            fail_msg("%s: message \"%s\" lacks \"%s\"", #expr, nac_last_error(), msg);      \
    } while (0)

static void test_null_slot_is_not_supported(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    nac_tensor_t *x = nac_tensor_new4(be, 2, 3, 6, 6), *w = nac_tensor_new4(be, 4, 3, 3, 3);
    nac_tensor_t *y = nac_tensor_new4(be, 2, 4, 6, 6);
    nac_tensor_t *a = nac_tensor_new2(be, 3, 5), *b = nac_tensor_new2(be, 3, 5);
    nac_tensor_t *r = nac_tensor_new1(be, 3);
    TU_OK(nac_tensor_fill(x, 1.0f));
    TU_OK(nac_tensor_fill(w, 0.5f));
    TU_OK(nac_tensor_fill(a, 2.0f));
    TU_OK(nac_tensor_fill(b, 3.0f));

    partial_backend s;
    partial_install(&s, be, "dummy");
    s.iface.conv_fwd = NULL;
    s.iface.row_logsumexp = NULL;
    s.iface.binary = NULL;
    s.iface.ema = NULL;
    s.iface.tensor_relayout = NULL;
    nac_conv_params cp = {1, 1};
    EXPECT_UNSUPPORTED(nac_conv2d_forward(x, w, NULL, y, cp),
                       "op conv_fwd is not supported by backend dummy");
    EXPECT_UNSUPPORTED(nac_row_logsumexp(a, r), "op row_logsumexp is not supported by backend dummy");
    EXPECT_UNSUPPORTED(nac_binary(NAC_BIN_ADD, a, b, b), "op binary is not supported by backend dummy");
    EXPECT_UNSUPPORTED(nac_ema_update(a, b, 0.9f), "op ema is not supported by backend dummy");
    EXPECT_UNSUPPORTED(nac_tensor_relayout(x, NAC_LAYOUT_CHANNEL_BLOCKED),
                       "op tensor_relayout is not supported by backend dummy");
    /* validation still comes first: a bad shape is named as such, not as unsupported */
    nac_tensor_t *bad = nac_tensor_new2(be, 2, 5);
    assert_int_equal(nac_binary(NAC_BIN_ADD, a, bad, b), NAC_ERR_INVALID);
    /* the slots left in place keep working */
    nac_tensor_t *c = nac_tensor_new2(be, 3, 3);
    TU_OK(nac_gemm(false, true, 1.0f, a, b, 0.0f, c));
    partial_remove(&s, be);
    nac_tensor_free(c);

    /* the real table answers again */
    TU_OK(nac_conv2d_forward(x, w, NULL, y, cp));
    TU_OK(nac_row_logsumexp(a, r));
    nac_tensor_free(bad);
    nac_tensor_free(x);
    nac_tensor_free(w);
    nac_tensor_free(y);
    nac_tensor_free(a);
    nac_tensor_free(b);
    nac_tensor_free(r);
    nac_backend_free(be);
}

static void test_unknown_backend(void **state) {
    (void)state;
    nac_backend_t *be = (nac_backend_t *)1;
    assert_int_not_equal(nac_backend_create("no-such-backend", NULL, &be), NAC_OK);
    assert_null(be);
    assert_non_null(strstr(nac_last_error(), "no-such-backend"));
    be = tu_backend();
    assert_string_equal(nac_backend_name(be), tu_backend_name());
    nac_backend_free(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_slot_is_not_supported),
        cmocka_unit_test(test_unknown_backend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
